//! Pull: resolve a reference, fetch every blob in parallel straight into the
//! content store, apply each layer as soon as its blob is complete, and record
//! the image.
//!
//! Layers unpack in parallel: layer i is prepared as an active snapshot whose
//! parent is *deferred* (the `molde.io/snapshot.parent` label), so the diff
//! service extracts it into its own upper directory while the layers below are
//! still downloading or extracting. Commits then happen strictly in order, each
//! naming its chain ID, once the one below is committed. A layer with a
//! hardlink to a file from a lower layer is re-applied on its real parent.
//!
//! A re-pull of an image that is complete here costs one manifest request.

use molde_common::context::namespaced;
use std::collections::HashMap;
use std::sync::Arc;

use molde_api::containerd::services::diff::v1::{ApplyRequest, diff_client::DiffClient};
use molde_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    snapshots_client::SnapshotsClient,
};
use molde_api::containerd::types::Descriptor as ApiDescriptor;
use molde_api::molde::services::transfer::v1 as api;
use molde_common::Digest;
use molde_meta::Txn;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::error::{ContentError, Result};
use crate::records::{self, DescriptorRecord, GC_EXPIRE, ImageRecord, LeaseRecord};
use crate::state::Shared;

use super::fetch::{self, Fetched, Inflight};
use super::media::{self, Descriptor, ImageConfig, Index, Manifest, Platform, chain_ids};
use super::registry::{Hosts, Registry};

pub type ProgressTx = mpsc::Sender<std::result::Result<api::Progress, tonic::Status>>;

/// Label on an active snapshot naming its parent-to-be (see the snapshotter).
const DEFERRED_PARENT: &str = "molde.io/snapshot.parent";

pub struct Puller {
    pub shared: Arc<Shared>,
    pub snapshotter: Channel,
    pub hosts: Hosts,
    pub inflight: Arc<Inflight>,
    /// Blobs fetched at once per pull.
    pub parallel: usize,
    /// Registry clients by (registry, user, password): kept so tokens and
    /// connections are reused and a re-pull is a single request.
    pub clients: std::sync::Mutex<HashMap<(String, String, String), Arc<Registry>>>,
}

fn upstream(what: impl std::fmt::Display) -> impl FnOnce(tonic::Status) -> ContentError {
    move |s| ContentError::Remote {
        code: s.code(),
        message: format!("{what}: {}", s.message()),
    }
}

fn api_desc(d: &Descriptor) -> ApiDescriptor {
    ApiDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: Default::default(),
    }
}

async fn send(tx: &ProgressTx, ev: api::progress::Event) {
    // The pull goes on if the client went away.
    let _ = tx.send(Ok(api::Progress { event: Some(ev) })).await;
}

/// Whether the snapshot `key` exists.
async fn snapshot_exists(ch: &Channel, ns: &str, snapshotter: &str, key: &str) -> Result<bool> {
    match SnapshotsClient::new(ch.clone())
        .stat(namespaced(
            ns,
            StatSnapshotRequest {
                snapshotter: snapshotter.into(),
                key: key.into(),
            },
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(upstream(format!("snapshot {key}"))(s)),
    }
}

/// A lease that holds what a pull stores until the image record holds it.
pub(crate) struct PullLease<'a> {
    shared: &'a Shared,
    ns: String,
    pub id: String,
}

impl<'a> PullLease<'a> {
    pub(crate) fn new(shared: &'a Shared, ns: &str) -> Result<Self> {
        let id = format!("pull-{}", uuid::Uuid::new_v4().simple());
        let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rec = LeaseRecord {
            created_at: molde_common::now_nanos(),
            labels: [(GC_EXPIRE.to_string(), expire)].into(),
            resources: Default::default(),
        };
        shared.ensure_namespace(ns)?;
        shared
            .store
            .txn(Txn::new().put(records::lease_key(ns, &id), records::encode(&rec)))?;
        Ok(PullLease {
            shared,
            ns: ns.to_string(),
            id,
        })
    }
}

impl Drop for PullLease<'_> {
    fn drop(&mut self) {
        let _ = self
            .shared
            .store
            .txn(Txn::new().delete(records::lease_key(&self.ns, &self.id)));
        self.shared.schedule_gc();
    }
}

impl Puller {
    pub(crate) fn registry(
        &self,
        reference: &Reference,
        auth: Option<&api::RegistryAuth>,
    ) -> Result<Arc<Registry>> {
        let (user, pass) = auth
            .map(|a| (a.username.clone(), a.password.clone()))
            .unwrap_or_default();
        let key = (reference.registry().to_string(), user.clone(), pass.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = clients.get(&key) {
            return Ok(r.clone());
        }
        let auth = if user.is_empty() {
            RegistryAuth::Anonymous
        } else {
            RegistryAuth::Basic(user, pass)
        };
        let r = Arc::new(Registry::new(reference.registry(), auth, &self.hosts)?);
        clients.insert(key, r.clone());
        Ok(r)
    }

    /// Bytes of a blob the namespace holds, if it holds it.
    fn local(&self, ns: &str, digest: &str) -> Option<Vec<u8>> {
        let d: Digest = digest.parse().ok()?;
        self.shared.store.get(&records::content_key(ns, digest)).ok()??;
        std::fs::read(self.shared.blobs.blob_path(&d)).ok()
    }

    /// A manifest, index or config: from the store if present, else the registry.
    async fn small_blob(
        &self,
        ns: &str,
        lease: &str,
        reg: &Registry,
        reference: &Reference,
        d: &Descriptor,
    ) -> Result<Vec<u8>> {
        if d.size as usize > media::MAX_METADATA || d.size < 0 {
            return Err(ContentError::InvalidArgument(format!(
                "{} {} of {reference} is {} bytes, over the {}-byte limit",
                d.media_type,
                d.digest,
                d.size,
                media::MAX_METADATA
            )));
        }
        let digest = Digest::parse_field(&d.digest, "descriptor digest")?;
        if let Some(b) = self.local(ns, &d.digest) {
            fetch::adopt_existing(&self.shared, ns, lease, &digest, b.len() as i64)?;
            return Ok(b);
        }
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            d.digest.clone(),
        );
        let body = if media::is_manifest(&d.media_type) || media::is_index(&d.media_type) {
            reg.manifest(&by_digest).await?.0.to_vec()
        } else {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch_small(reg, reference, &d.digest).await {
                    Ok(b) => break b,
                    Err(ContentError::Remote {
                        code: tonic::Code::Unavailable,
                        message,
                    }) if attempt < super::registry::ATTEMPTS => {
                        tracing::warn!(digest = %d.digest, attempt, error = %message, "blob request failed; retrying");
                        tokio::time::sleep(super::registry::backoff(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let got = Digest::of(digest.algorithm(), &body);
        if got != digest || body.len() as i64 != d.size {
            return Err(ContentError::Remote {
                code: tonic::Code::DataLoss,
                message: format!(
                    "{} of {reference}: registry sent {} bytes with digest {got}",
                    d.digest,
                    body.len()
                ),
            });
        }
        fetch::put_bytes(&self.shared, ns, lease, &digest, &body)?;
        Ok(body)
    }

    /// One attempt at a small blob, refused past the metadata size limit.
    async fn fetch_small(&self, reg: &Registry, reference: &Reference, digest: &str) -> Result<Vec<u8>> {
        use futures::StreamExt;
        let (mut s, _) = reg.blob(reference, digest, 0).await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| ContentError::Remote {
                code: tonic::Code::Unavailable,
                message: format!("fetching {digest} of {reference}: {e}"),
            })?;
            if out.len() + c.len() > media::MAX_METADATA {
                return Err(ContentError::InvalidArgument(format!(
                    "{digest} of {reference} is over the size limit"
                )));
            }
            out.extend_from_slice(&c);
        }
        Ok(out)
    }

    async fn snapshot_exists(&self, ns: &str, snapshotter: &str, key: &str) -> Result<bool> {
        snapshot_exists(&self.snapshotter, ns, snapshotter, key).await
    }

    /// Whether `name` already points at `target` with every blob here and its
    /// layers unpacked: then a re-pull is done after resolving.
    async fn complete(
        &self,
        ns: &str,
        name: &str,
        target: &str,
        platform: &Platform,
        snapshotter: &str,
        unpack: bool,
    ) -> Result<bool> {
        let Some((img, _)) =
            records::load::<ImageRecord>(&*self.shared.store, &records::image_key(ns, name))?
        else {
            return Ok(false);
        };
        if img.target.digest != target {
            return Ok(false);
        }
        let Some(top) = self.local(ns, target) else {
            return Ok(false);
        };
        let manifest_body = if media::is_index(&img.target.media_type) {
            let idx: Index =
                serde_json::from_slice(&top).map_err(|e| ContentError::InvalidArgument(e.to_string()))?;
            let Some(m) = idx
                .manifests
                .iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
            else {
                return Ok(false);
            };
            let Some(b) = self.local(ns, &m.digest) else {
                return Ok(false);
            };
            b
        } else {
            top
        };
        let Ok(m) = serde_json::from_slice::<Manifest>(&manifest_body) else {
            return Ok(false);
        };
        let Some(cfg) = self.local(ns, &m.config.digest) else {
            return Ok(false);
        };
        for l in &m.layers {
            if self
                .shared
                .store
                .get(&records::content_key(ns, &l.digest))?
                .is_none()
            {
                return Ok(false);
            }
        }
        if !unpack {
            return Ok(true);
        }
        let Ok(c) = serde_json::from_slice::<ImageConfig>(&cfg) else {
            return Ok(false);
        };
        match chain_ids(&c.rootfs.diff_ids).last() {
            Some(top) => self.snapshot_exists(ns, snapshotter, top).await,
            None => Ok(true),
        }
    }

    /// Unpacks an image whose manifest and config are stored (fetching layers
    /// the store lacks when it came from a registry), labels its graph for GC,
    /// and records it under its name. Returns (bytes fetched, blobs fetched,
    /// layers applied).
    pub(crate) async fn complete_image(&self, job: ImageJob<'_>) -> Result<(u64, u32, u32)> {
        let ns = job.ns;
        let snapshotter = job.snapshotter;
        let unpack = job.unpack;
        let manifest = job.manifest;
        let manifest_desc = job.manifest_desc;
        let index = job.index;
        let digest = job.target.digest.clone();
        let chain = chain_ids(job.diff_ids);
        // Layers already unpacked: the highest chain ID present means all below are too.
        let mut present = 0;
        if unpack {
            for (i, c) in chain.iter().enumerate().rev() {
                if self.snapshot_exists(ns, snapshotter, c).await? {
                    present = i + 1;
                    break;
                }
            }
        }
        let (committed_tx, committed_rx) = watch::channel(present);
        let committed_tx = Arc::new(committed_tx);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.parallel.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let stats = Arc::new(std::sync::Mutex::new((0u64, 0u32, 0u32)));
        // Largest first: the layers that take longest to unpack start earliest.
        let mut order: Vec<usize> = (0..manifest.layers.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(manifest.layers[i].size));
        for i in order {
            let layer = manifest.layers[i].clone();
            let ctx = LayerTask {
                shared: self.shared.clone(),
                snapshotter_ch: self.snapshotter.clone(),
                inflight: self.inflight.clone(),
                reg: job.source.as_ref().map(|(_, r)| r.clone()),
                remote: job.source.as_ref().map(|(r, _)| (*r).clone()),
                reference: job.name.to_string(),
                ns: job.ns.to_string(),
                lease: job.lease.to_string(),
                snapshotter: job.snapshotter.to_string(),
                layer,
                index: i,
                diff_id: job.diff_ids[i].clone(),
                chain: chain[..=i].to_vec(),
                unpack: unpack && i >= present,
                committed_tx: committed_tx.clone(),
                committed_rx: committed_rx.clone(),
                tx: job.tx.clone(),
                sem: sem.clone(),
                stats: stats.clone(),
            };
            tasks.spawn(ctx.run());
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    tasks.abort_all();
                    return Err(ContentError::Io {
                        context: format!("unpacking {}", job.name),
                        source: std::io::Error::other(e.to_string()),
                    });
                }
            }
        }

        // Labels that make the image's graph visible to GC and to containerd clients.
        let mut m_labels = HashMap::new();
        m_labels.insert(
            format!("{}.config", records::GC_REF_CONTENT),
            manifest.config.digest.clone(),
        );
        for (i, l) in manifest.layers.iter().enumerate() {
            m_labels.insert(format!("{}.l.{i}", records::GC_REF_CONTENT), l.digest.clone());
            self.shared.set_labels(
                ns,
                &l.digest,
                [("containerd.io/uncompressed".to_string(), job.diff_ids[i].clone())].into(),
            )?;
        }
        if let Some((reference, _)) = &job.source {
            let source = (
                format!("{}{}", super::push::SOURCE_LABEL, reference.registry()),
                reference.repository().to_string(),
            );
            for d in manifest
                .layers
                .iter()
                .map(|l| &l.digest)
                .chain([&manifest.config.digest, &digest])
            {
                self.shared.set_labels(ns, d, [source.clone()].into())?;
            }
            m_labels.insert(source.0.clone(), source.1.clone());
        }
        self.shared.set_labels(ns, &manifest_desc.digest, m_labels)?;
        if let Some(idx) = index {
            let pos = idx
                .manifests
                .iter()
                .position(|m| m.digest == manifest_desc.digest)
                .unwrap_or(0);
            self.shared.set_labels(
                ns,
                &digest,
                [(
                    format!("{}.m.{pos}", records::GC_REF_CONTENT),
                    manifest_desc.digest.clone(),
                )]
                .into(),
            )?;
        }
        if unpack && let Some(top) = chain.last() {
            self.shared.set_labels(
                ns,
                &manifest.config.digest,
                [(
                    format!("containerd.io/gc.ref.snapshot.{snapshotter}"),
                    top.clone(),
                )]
                .into(),
            )?;
        }
        self.shared.put_image(
            ns,
            job.name,
            DescriptorRecord {
                media_type: job.target.media_type.clone(),
                digest: digest.clone(),
                size: job.target.size,
                annotations: Default::default(),
            },
        )?;
        let stats = *stats.lock().unwrap_or_else(|p| p.into_inner());
        Ok(stats)
    }

    pub async fn pull(&self, ns: &str, req: api::PullRequest, tx: &ProgressTx) -> Result<()> {
        let reference: Reference = req
            .reference
            .parse()
            .map_err(|e| ContentError::InvalidArgument(format!("reference {:?}: {e}", req.reference)))?;
        let name = reference.whole();
        let platform = Platform::parse(&req.platform)?;
        let snapshotter = if req.snapshotter.is_empty() {
            "overlayfs".to_string()
        } else {
            req.snapshotter.clone()
        };
        let unpack = !req.skip_unpack;
        let reg = self.registry(&reference, req.auth.as_ref())?;

        let (body, digest) = reg.manifest(&reference).await?;
        let top_type = media::sniff(&body, &format!("manifest of {name}"))?;
        let target = Descriptor {
            media_type: top_type.clone(),
            digest: digest.clone(),
            size: body.len() as i64,
            platform: None,
            annotations: None,
        };
        if self
            .complete(ns, &name, &digest, &platform, &snapshotter, unpack)
            .await?
        {
            send(
                tx,
                api::progress::Event::Done(api::Done {
                    name: name.clone(),
                    target: Some(api_desc(&target)),
                    ..Default::default()
                }),
            )
            .await;
            tracing::info!(namespace = ns, image = %name, "image is up to date");
            return Ok(());
        }

        let lease = PullLease::new(&self.shared, ns)?;
        let target_digest = Digest::parse_field(&digest, "manifest digest")?;
        fetch::put_bytes(&self.shared, ns, &lease.id, &target_digest, &body)?;
        let (manifest_desc, manifest_body, index) = if media::is_index(&top_type) {
            let idx: Index = serde_json::from_slice(&body)
                .map_err(|e| ContentError::InvalidArgument(format!("index of {name}: {e}")))?;
            let chosen = idx
                .manifests
                .iter()
                .find(|m| {
                    media::is_manifest(&m.media_type)
                        && m.platform.as_ref().is_some_and(|p| platform.matches(p))
                })
                .cloned()
                .ok_or_else(|| {
                    let have: Vec<String> = idx
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                        .collect();
                    ContentError::NotFound(format!(
                        "{name} for platform {platform} (the index has {})",
                        have.join(", ")
                    ))
                })?;
            let b = self.small_blob(ns, &lease.id, &reg, &reference, &chosen).await?;
            media::sniff(&b, &format!("manifest {} of {name}", chosen.digest))?;
            (chosen, b, Some(idx))
        } else {
            (target.clone(), body.to_vec(), None)
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_body)
            .map_err(|e| ContentError::InvalidArgument(format!("manifest of {name}: {e}")))?;
        if manifest.config.media_type != media::OCI_CONFIG
            && manifest.config.media_type != media::DOCKER_CONFIG
        {
            return Err(ContentError::InvalidArgument(format!(
                "manifest of {name}: config media type {:?} is not an image config",
                manifest.config.media_type
            )));
        }
        for l in &manifest.layers {
            if !media::is_layer(&l.media_type) {
                return Err(ContentError::InvalidArgument(format!(
                    "manifest of {name}: layer {} has media type {:?}, not a layer",
                    l.digest, l.media_type
                )));
            }
            Digest::parse_field(&l.digest, "layer digest")?;
        }
        let config_body = self
            .small_blob(ns, &lease.id, &reg, &reference, &manifest.config)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config_body)
            .map_err(|e| ContentError::InvalidArgument(format!("config of {name}: {e}")))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ContentError::InvalidArgument(format!(
                "{name}: the config lists {} diff IDs for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        send(
            tx,
            api::progress::Event::Resolved(api::Resolved {
                name: name.clone(),
                target: Some(api_desc(&target)),
                manifest: Some(api_desc(&manifest_desc)),
                config: Some(api_desc(&manifest.config)),
                layers: manifest.layers.iter().map(api_desc).collect(),
            }),
        )
        .await;

        let (bytes, blobs, layers) = self
            .complete_image(ImageJob {
                ns,
                lease: &lease.id,
                name: &name,
                target: &target,
                index: index.as_ref(),
                manifest_desc: &manifest_desc,
                manifest: &manifest,
                diff_ids: &config.rootfs.diff_ids,
                snapshotter: &snapshotter,
                unpack,
                source: Some((&reference, reg.clone())),
                tx,
            })
            .await?;
        drop(lease);
        tracing::info!(namespace = ns, image = %name, %digest, bytes, blobs, layers, "image pulled");
        send(
            tx,
            api::progress::Event::Done(api::Done {
                name,
                target: Some(api_desc(&target)),
                bytes_fetched: bytes,
                blobs_fetched: blobs,
                layers_applied: layers,
            }),
        )
        .await;
        Ok(())
    }
}

/// An image to unpack and record (see `Puller::complete_image`).
pub(crate) struct ImageJob<'a> {
    pub ns: &'a str,
    pub lease: &'a str,
    pub name: &'a str,
    pub target: &'a Descriptor,
    pub index: Option<&'a Index>,
    pub manifest_desc: &'a Descriptor,
    pub manifest: &'a Manifest,
    pub diff_ids: &'a [String],
    pub snapshotter: &'a str,
    pub unpack: bool,
    /// The registry reference it came from, and the client to fetch missing blobs with.
    pub source: Option<(&'a Reference, Arc<Registry>)>,
    pub tx: &'a ProgressTx,
}

/// Fetching and unpacking one layer.
struct LayerTask {
    shared: Arc<Shared>,
    snapshotter_ch: Channel,
    inflight: Arc<Inflight>,
    reg: Option<Arc<Registry>>,
    remote: Option<Reference>,
    /// The image, for messages.
    reference: String,
    ns: String,
    lease: String,
    snapshotter: String,
    layer: Descriptor,
    index: usize,
    diff_id: String,
    /// Chain IDs of this layer and every one below it.
    chain: Vec<String>,
    unpack: bool,
    committed_tx: Arc<watch::Sender<usize>>,
    committed_rx: watch::Receiver<usize>,
    tx: ProgressTx,
    sem: Arc<tokio::sync::Semaphore>,
    stats: Arc<std::sync::Mutex<(u64, u32, u32)>>,
}

impl LayerTask {
    async fn run(self) -> Result<()> {
        let digest = Digest::parse_field(&self.layer.digest, "layer digest")?;
        {
            let _permit = self
                .sem
                .acquire()
                .await
                .map_err(|_| ContentError::FailedPrecondition("pull cancelled".into()))?;
            let _one = self.inflight.hold(&self.layer.digest).await;
            let status =
                match fetch::adopt_existing(&self.shared, &self.ns, &self.lease, &digest, self.layer.size)? {
                    Some(Fetched::Present) | Some(Fetched::Shared) => "exists",
                    _ => {
                        let (Some(reg), Some(remote)) = (&self.reg, &self.remote) else {
                            return Err(ContentError::NotFound(format!(
                                "layer {} of {}",
                                self.layer.digest, self.reference
                            )));
                        };
                        let tx = self.tx.clone();
                        let d = self.layer.digest.clone();
                        let total = self.layer.size;
                        let last = std::sync::atomic::AtomicU64::new(0);
                        let n = fetch::download(
                            &fetch::Dest {
                                shared: &self.shared,
                                ns: &self.ns,
                                lease: &self.lease,
                            },
                            reg,
                            remote,
                            &digest,
                            self.layer.size,
                            |n| {
                                // At most a report per 4 MiB, dropped when the client is slow.
                                if n - last.load(std::sync::atomic::Ordering::Relaxed) >= 4 << 20
                                    || n as i64 == total
                                {
                                    last.store(n, std::sync::atomic::Ordering::Relaxed);
                                    let _ = tx.try_send(Ok(api::Progress {
                                        event: Some(api::progress::Event::Blob(api::BlobProgress {
                                            digest: d.clone(),
                                            offset: n as i64,
                                            total,
                                            status: "downloading".into(),
                                        })),
                                    }));
                                }
                            },
                        )
                        .await?;
                        let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                        s.0 += n;
                        s.1 += 1;
                        "done"
                    }
                };
            send(
                &self.tx,
                api::progress::Event::Blob(api::BlobProgress {
                    digest: self.layer.digest.clone(),
                    offset: self.layer.size,
                    total: self.layer.size,
                    status: status.into(),
                }),
            )
            .await;
        }
        if !self.unpack {
            return Ok(());
        }
        self.unpack().await
    }

    async fn wait_below(&self) -> Result<()> {
        let mut rx = self.committed_rx.clone();
        let i = self.index;
        rx.wait_for(|c| *c >= i)
            .await
            .map_err(|_| ContentError::FailedPrecondition("pull cancelled".into()))?;
        Ok(())
    }

    /// Unpacks the layer, unless another pull did while this one waited:
    /// one unpack per chain ID at a time (as containerd serialises unpacks of
    /// one layer), so N pulls of one image cost about one.
    async fn unpack(&self) -> Result<()> {
        let chain_id = self.chain.last().expect("non-empty").clone();
        let _unpacking = self
            .inflight
            .hold(&format!("unpack {} {} {chain_id}", self.ns, self.snapshotter))
            .await;
        if snapshot_exists(&self.snapshotter_ch, &self.ns, &self.snapshotter, &chain_id).await? {
            // Committed, so every layer below it is too.
            self.committed_tx.send_modify(|c| *c = (*c).max(self.index + 1));
            self.applied(chain_id, true).await;
            return Ok(());
        }
        let parent = if self.index > 0 {
            self.chain[self.index - 1].clone()
        } else {
            String::new()
        };
        let mut sn = SnapshotsClient::new(self.snapshotter_ch.clone());
        let key = format!("extract-{} {chain_id}", uuid::Uuid::new_v4().simple());
        let mut labels = HashMap::new();
        if !parent.is_empty() {
            labels.insert(DEFERRED_PARENT.to_string(), parent.clone());
        }
        let applied = self.prepare_apply(&mut sn, &key, "", labels).await;
        let applied = match applied {
            // A hardlink to a file below this layer: apply again on the real parent.
            Err(ContentError::Remote {
                code: tonic::Code::DataLoss,
                message,
            }) if message.contains("hardlink target") && !parent.is_empty() => {
                let _ = sn
                    .remove(namespaced(
                        &self.ns,
                        RemoveSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key: key.clone(),
                        },
                    ))
                    .await;
                self.wait_below().await?;
                tracing::info!(layer = %self.layer.digest, "layer links into its parent; applying on the parent");
                self.prepare_apply(&mut sn, &key, &parent, HashMap::new()).await?
            }
            other => other?,
        };
        if applied != self.diff_id {
            let _ = sn
                .remove(namespaced(
                    &self.ns,
                    RemoveSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: key.clone(),
                    },
                ))
                .await;
            return Err(ContentError::Remote {
                code: tonic::Code::DataLoss,
                message: format!(
                    "layer {} of {}: unpacked to diff ID {applied}, but the image config says {}",
                    self.layer.digest, self.reference, self.diff_id
                ),
            });
        }
        self.wait_below().await?;
        let commit = sn
            .commit(namespaced(
                &self.ns,
                CommitSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    name: chain_id.clone(),
                    key: key.clone(),
                    labels: Default::default(),
                },
            ))
            .await;
        match commit {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                let _ = sn
                    .remove(namespaced(
                        &self.ns,
                        RemoveSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key,
                        },
                    ))
                    .await;
            }
            Err(s) => return Err(upstream(format!("committing snapshot {chain_id}"))(s)),
        }
        self.committed_tx.send_modify(|c| *c = (*c).max(self.index + 1));
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).2 += 1;
        self.applied(chain_id, false).await;
        Ok(())
    }

    async fn applied(&self, chain_id: String, shared: bool) {
        send(
            &self.tx,
            api::progress::Event::Applied(api::LayerApplied {
                digest: self.layer.digest.clone(),
                chain_id,
                diff_id: self.diff_id.clone(),
                shared,
            }),
        )
        .await;
    }

    /// Prepares `key` and applies the layer onto it; returns the diff ID.
    async fn prepare_apply(
        &self,
        sn: &mut SnapshotsClient<Channel>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<String> {
        let mounts = sn
            .prepare(namespaced(
                &self.ns,
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels,
                },
            ))
            .await
            .map_err(upstream(format!(
                "preparing snapshot for layer {}",
                self.layer.digest
            )))?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.snapshotter_ch.clone())
            .apply(namespaced(
                &self.ns,
                ApplyRequest {
                    diff: Some(api_desc(&self.layer)),
                    mounts,
                    ..Default::default()
                },
            ))
            .await;
        match applied {
            Ok(r) => Ok(r.into_inner().applied.map(|d| d.digest).unwrap_or_default()),
            Err(s) => {
                let _ = sn
                    .remove(namespaced(
                        &self.ns,
                        RemoveSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            key: key.to_string(),
                        },
                    ))
                    .await;
                Err(upstream(format!(
                    "layer {} of {}",
                    self.layer.digest, self.reference
                ))(s))
            }
        }
    }
}
