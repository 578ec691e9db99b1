//! Pull: resolve a reference to its manifest, config and layers, then fetch
//! every blob in parallel straight into the content store, apply each layer as
//! soon as its blob is complete (`layers`), and record the image, all under a
//! lease (`lease`).
//!
//! A re-pull of an image that is complete here costs one manifest request.

mod layers;
mod lease;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use molde_api::containerd::services::diff::v1::{ApplyRequest, diff_client::DiffClient};
use molde_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    snapshots_client::SnapshotsClient,
};
use molde_api::molde::services::transfer::v1 as api;
use molde_common::Digest;
use molde_common::context::namespaced;
use molde_common::errdefs::{Error, Result};
use molde_common::image::{parse_platform, select_manifest};
use molde_common::store::{ContentStore, ImageTarget};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::fetch::{self, Inflight};
use crate::media::{
    self, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Platform, api_desc,
    chain_ids, digest_of, parse,
};
use crate::registry::{Hosts, Registry, SOURCE_LABEL};
pub(crate) use layers::ImageJob;
use layers::snapshot_exists;
pub(crate) use lease::PullLease;

pub type ProgressTx = mpsc::Sender<std::result::Result<api::Progress, tonic::Status>>;

pub struct Puller {
    pub store: Arc<dyn ContentStore>,
    pub snapshotter: Channel,
    pub hosts: Hosts,
    pub inflight: Arc<Inflight>,
    /// Blobs fetched at once per pull.
    pub parallel: usize,
    /// Other nodes of the cluster, asked for a layer before the registry.
    pub peers: Option<Arc<dyn molde_common::store::PeerBlobs>>,
    /// Every pull resolves a tag in the cluster when the registry cannot be
    /// reached (`[cluster] resolve`).
    pub cluster_resolve: bool,
    /// Registry clients by (registry, user, password): kept so tokens and
    /// connections are reused and a re-pull is a single request.
    pub clients: std::sync::Mutex<HashMap<(String, String, String), Arc<Registry>>>,
}

/// Whether a registry error says it could not be reached (as opposed to
/// an answer: not found, denied, …).
fn unreachable(e: &Error) -> bool {
    matches!(e, Error::Remote { code, .. } if *code == tonic::Code::Unavailable)
        || matches!(e, Error::Unavailable(_))
}

fn upstream(what: impl std::fmt::Display) -> impl FnOnce(tonic::Status) -> Error {
    Error::upstream(what)
}

async fn send(tx: &ProgressTx, ev: api::progress::Event) {
    // The pull goes on if the client went away.
    let _ = tx.send(Ok(api::Progress { event: Some(ev) })).await;
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

    /// Checks credentials for `registry` (`host[:port]`) against it.
    pub async fn login(&self, registry: &str, auth: Option<&api::RegistryAuth>) -> Result<()> {
        let probe: Reference = format!("{registry}/login:probe")
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("registry {registry:?}: {e}")))?;
        // A fresh client: a cached one would hold what earlier logins settled.
        let (user, pass) = auth
            .map(|a| (a.username.clone(), a.password.clone()))
            .unwrap_or_default();
        let auth = if user.is_empty() {
            RegistryAuth::Anonymous
        } else {
            RegistryAuth::Basic(user, pass)
        };
        Registry::new(probe.registry(), auth, &self.hosts)?.login().await
    }

    /// A manifest, index or config the namespace holds, if it holds it.
    async fn local(&self, ns: &str, digest: &str) -> Option<Vec<u8>> {
        self.store.read(ns, digest, media::MAX_METADATA).await.ok()
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
        if d.size() as usize > media::MAX_METADATA {
            return Err(Error::InvalidArgument(format!(
                "{} {} of {reference} is {} bytes, over the {}-byte limit",
                d.media_type(),
                d.digest(),
                d.size(),
                media::MAX_METADATA
            )));
        }
        let digest = digest_of(d)?;
        let name = d.digest().to_string();
        if let Some(b) = self.local(ns, &name).await {
            self.store.hold(ns, lease, &digest, b.len() as i64).await?;
            return Ok(b);
        }
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            name.clone(),
        );
        let from_registry = async {
            if media::is_manifest(d.media_type()) || media::is_index(d.media_type()) {
                return Ok(reg.manifest(&by_digest).await?.0.to_vec());
            }
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch_small(reg, reference, &name).await {
                    Ok(b) => break Ok(b),
                    Err(Error::Remote {
                        code: tonic::Code::Unavailable,
                        message,
                    }) if attempt < crate::registry::ATTEMPTS => {
                        tracing::warn!(digest = %name, attempt, error = %message, "blob request failed; retrying");
                        tokio::time::sleep(crate::registry::backoff(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let body = match from_registry.await {
            Ok(b) => b,
            // The registry away: a node of the cluster may hold it (taken
            // under this lease, its digest checked at commit).
            Err(e) if unreachable(&e) => {
                return self
                    .small_from_cluster(ns, lease, &digest, d.size() as i64)
                    .await
                    .ok_or(e);
            }
            Err(e) => return Err(e),
        };
        let got = Digest::of(digest.algorithm(), &body);
        if got != digest || body.len() as u64 != d.size() {
            return Err(Error::Remote {
                code: tonic::Code::DataLoss,
                message: format!(
                    "{name} of {reference}: registry sent {} bytes with digest {got}",
                    body.len()
                ),
            });
        }
        self.store
            .put(ns, lease, &digest, Bytes::from(body.clone()))
            .await?;
        Ok(body)
    }

    /// A manifest, index or config from a node of the cluster, when the
    /// registry cannot be reached.
    async fn small_from_cluster(&self, ns: &str, lease: &str, digest: &Digest, size: i64) -> Option<Vec<u8>> {
        let peers = self.peers.as_ref()?;
        let dest = fetch::Dest {
            store: self.store.as_ref(),
            ns,
            lease,
        };
        match fetch::from_peers(&dest, peers.as_ref(), digest, size, &|_| {}).await {
            Ok(Some(_)) => self.local(ns, &digest.to_string()).await,
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%digest, error = %e, "taking a blob from the cluster");
                None
            }
        }
    }

    /// `name` as the cluster's nodes hold it (the registry could not be
    /// reached: `why`), its target brought from the node that has it.
    async fn resolve_in_cluster(
        &self,
        ns: &str,
        lease: &str,
        name: &str,
        why: Error,
    ) -> Result<(Bytes, String)> {
        let Some(peers) = self.peers.as_ref() else {
            return Err(Error::Unavailable(format!(
                "{why} (--cluster-resolve: this node is in no cluster)"
            )));
        };
        let Some((target, node)) = peers.image(ns, name).await else {
            return Err(Error::Unavailable(format!(
                "{why}; and no node of the cluster holds {name} (--cluster-resolve)"
            )));
        };
        let digest: Digest = target.digest.parse().map_err(|e| Error::Remote {
            code: tonic::Code::DataLoss,
            message: format!("node {node} says {name} is {:?}: {e}", target.digest),
        })?;
        let body = match self.local(ns, &target.digest).await {
            Some(b) => b,
            None => self
                .small_from_cluster(ns, lease, &digest, target.size)
                .await
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "{why}; node {node} holds {name} as {digest} but no node gave that manifest"
                    ))
                })?,
        };
        tracing::info!(namespace = ns, image = name, %digest, %node, "registry unreachable: tag resolved in the cluster");
        Ok((Bytes::from(body), target.digest))
    }

    /// One attempt at a small blob, refused past the metadata size limit.
    async fn fetch_small(&self, reg: &Registry, reference: &Reference, digest: &str) -> Result<Vec<u8>> {
        use futures::StreamExt;
        let (mut s, _) = reg.blob(reference, digest, 0).await?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| Error::Remote {
                code: tonic::Code::Unavailable,
                message: format!("fetching {digest} of {reference}: {e}"),
            })?;
            if out.len() + c.len() > media::MAX_METADATA {
                return Err(Error::InvalidArgument(format!(
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
        let Some(img) = self.store.image(ns, name).await? else {
            return Ok(false);
        };
        if img.digest != target {
            return Ok(false);
        }
        let Some(top) = self.local(ns, target).await else {
            return Ok(false);
        };
        let manifest_body = if media::is_index(&MediaType::from(img.media_type.as_str())) {
            let idx: ImageIndex = parse(&top, &format!("index of {name}"))?;
            let Ok(m) = select_manifest(&idx, platform, name) else {
                return Ok(false);
            };
            let Some(b) = self.local(ns, m.digest().as_ref()).await else {
                return Ok(false);
            };
            b
        } else {
            top
        };
        let Ok(m) = serde_json::from_slice::<ImageManifest>(&manifest_body) else {
            return Ok(false);
        };
        let Some(cfg) = self.local(ns, m.config().digest().as_ref()).await else {
            return Ok(false);
        };
        for l in m.layers() {
            if self.store.info(ns, l.digest().as_ref()).await?.is_none() {
                return Ok(false);
            }
        }
        if !unpack {
            return Ok(true);
        }
        let Ok(c) = serde_json::from_slice::<ImageConfiguration>(&cfg) else {
            return Ok(false);
        };
        match chain_ids(c.rootfs().diff_ids()).last() {
            Some(top) => self.snapshot_exists(ns, snapshotter, top).await,
            None => Ok(true),
        }
    }

    pub async fn pull(&self, ns: &str, req: api::PullRequest, tx: &ProgressTx) -> Result<()> {
        let started = std::time::Instant::now();
        let reference: Reference = req
            .reference
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("reference {:?}: {e}", req.reference)))?;
        let name = reference.whole();
        let platform = parse_platform(&req.platform)?;
        let snapshotter = if req.snapshotter.is_empty() {
            "overlayfs".to_string()
        } else {
            req.snapshotter.clone()
        };
        let unpack = !req.skip_unpack;
        let reg = self.registry(&reference, req.auth.as_ref())?;

        // A pull lease made early: a tag resolved in the cluster brings its
        // target from a node at once.
        let mut early_lease = None;
        let (body, digest) = match reg.manifest(&reference).await {
            Ok(found) => found,
            Err(e) if (req.cluster_resolve || self.cluster_resolve) && unreachable(&e) => {
                let lease = PullLease::new(&self.store, ns).await?;
                let found = self.resolve_in_cluster(ns, &lease.id, &name, e).await?;
                early_lease = Some(lease);
                found
            }
            Err(e) => return Err(e),
        };
        let top_type = media::sniff(&body, &format!("manifest of {name}"))?;
        let target = media::descriptor(&top_type, &digest, body.len() as u64)?;
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

        let lease = match early_lease {
            Some(l) => l,
            None => PullLease::new(&self.store, ns).await?,
        };
        self.store
            .put(ns, &lease.id, &digest_of(&target)?, body.clone())
            .await?;
        let (manifest_desc, manifest_body, index) = if media::is_index(&top_type) {
            let idx: ImageIndex = parse(&body, &format!("index of {name}"))?;
            let chosen = select_manifest(&idx, &platform, &name)?.clone();
            if !media::is_manifest(chosen.media_type()) {
                return Err(Error::InvalidArgument(format!(
                    "index of {name}: the entry for {} is a \"{}\", not an image manifest",
                    molde_common::image::platform_string(&platform),
                    chosen.media_type()
                )));
            }
            let b = self.small_blob(ns, &lease.id, &reg, &reference, &chosen).await?;
            media::sniff(&b, &format!("manifest {} of {name}", chosen.digest()))?;
            (chosen, b, Some(idx))
        } else {
            (target.clone(), body.to_vec(), None)
        };
        let manifest: ImageManifest = parse(&manifest_body, &format!("manifest of {name}"))?;
        if !media::is_config(manifest.config().media_type()) {
            return Err(Error::InvalidArgument(format!(
                "manifest of {name}: config media type \"{}\" is not an image config",
                manifest.config().media_type()
            )));
        }
        for l in manifest.layers() {
            if !media::is_layer(l.media_type()) {
                return Err(Error::InvalidArgument(format!(
                    "manifest of {name}: layer {} has media type \"{}\", not a layer",
                    l.digest(),
                    l.media_type()
                )));
            }
            digest_of(l)?;
        }
        let config_body = self
            .small_blob(ns, &lease.id, &reg, &reference, manifest.config())
            .await?;
        let config: ImageConfiguration = parse(&config_body, &format!("config of {name}"))?;
        let diff_ids = config.rootfs().diff_ids();
        media::check_diff_ids(&name, &config, &manifest)?;
        send(
            tx,
            api::progress::Event::Resolved(api::Resolved {
                name: name.clone(),
                target: Some(api_desc(&target)),
                manifest: Some(api_desc(&manifest_desc)),
                config: Some(api_desc(manifest.config())),
                layers: manifest.layers().iter().map(api_desc).collect(),
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
                diff_ids,
                snapshotter: &snapshotter,
                unpack,
                source: Some((&reference, reg.clone())),
                tx,
            })
            .await?;
        lease.release().await;
        tracing::info!(namespace = ns, image = %name, %digest, bytes, blobs, layers, "image pulled");
        molde_common::metrics::PULLS.add(1);
        molde_common::metrics::PULL_MICROS.add(started.elapsed().as_micros() as u64);
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
