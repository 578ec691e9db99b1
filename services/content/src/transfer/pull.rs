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

use molde_api::containerd::services::diff::v1::{ApplyRequest, diff_client::DiffClient};
use molde_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    snapshots_client::SnapshotsClient,
};
use molde_api::containerd::types::Descriptor as ApiDescriptor;
use molde_api::molde::services::transfer::v1 as api;
use molde_common::Digest;
use molde_common::context::namespaced;
use molde_common::image::{parse_platform, platform_matches, platform_string};
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
use super::registry::{Hosts, Registry, SOURCE_LABEL};
pub(crate) use layers::ImageJob;
use layers::snapshot_exists;
pub(crate) use lease::PullLease;

pub type ProgressTx = mpsc::Sender<std::result::Result<api::Progress, tonic::Status>>;

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
                .find(|m| m.platform.as_ref().is_some_and(|p| platform_matches(platform, p)))
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

    pub async fn pull(&self, ns: &str, req: api::PullRequest, tx: &ProgressTx) -> Result<()> {
        let reference: Reference = req
            .reference
            .parse()
            .map_err(|e| ContentError::InvalidArgument(format!("reference {:?}: {e}", req.reference)))?;
        let name = reference.whole();
        let platform = parse_platform(&req.platform)?;
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
                        && m.platform
                            .as_ref()
                            .is_some_and(|p| platform_matches(&platform, p))
                })
                .cloned()
                .ok_or_else(|| {
                    let have: Vec<String> = idx
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(platform_string))
                        .collect();
                    ContentError::NotFound(format!(
                        "{name} for platform {} (the index has {})",
                        platform_string(&platform),
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
