//! Push: upload an image's missing blobs and its manifests to a registry.
//!
//! Every blob is asked about first (HEAD); one the registry lacks is mounted
//! from the repository it was pulled from when that repository is on the same
//! registry (cross-repository mount), and uploaded otherwise. Manifests go last,
//! children before the index that names them.

use std::sync::Arc;

use futures::StreamExt;
use molde_api::containerd::types::Descriptor as ApiDescriptor;
use molde_api::molde::services::transfer::v1 as api;
use molde_common::errdefs::{Error, Result};
use molde_common::image::{platform_matches, platform_string};
use oci_client::Reference;

use crate::media::{self, ImageIndex, ImageManifest, MediaType, parse};
use crate::pull::{ProgressTx, Puller};
use crate::registry::{SOURCE_LABEL, remote};

async fn send(tx: &ProgressTx, ev: api::progress::Event) {
    let _ = tx.send(Ok(api::Progress { event: Some(ev) })).await;
}

impl Puller {
    /// A manifest or index of the image being pushed.
    async fn read_local(&self, ns: &str, digest: &str) -> Result<Vec<u8>> {
        self.store.read(ns, digest, media::MAX_METADATA).await
    }

    pub async fn push(&self, ns: &str, req: api::PushRequest, tx: &ProgressTx) -> Result<()> {
        let started = std::time::Instant::now();
        let img = self
            .store
            .image(ns, &req.reference)
            .await?
            .ok_or_else(|| Error::NotFound(format!("image {:?}", req.reference)))?;
        let dest_name = if req.destination.is_empty() {
            req.reference.clone()
        } else {
            req.destination.clone()
        };
        let dest: Reference = dest_name
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("reference {dest_name:?}: {e}")))?;
        let reg = self.registry(&dest, req.auth.as_ref())?;
        let platform = molde_common::image::parse_platform(&req.platform)?;

        // What to push: (manifest digest, media type) in order, then the tag's target.
        let mut manifests: Vec<(String, String)> = Vec::new();
        let mut tag_target = (img.digest.clone(), img.media_type.clone());
        if media::is_index(&MediaType::from(img.media_type.as_str())) {
            let body = self.read_local(ns, &img.digest).await?;
            let idx: ImageIndex = parse(&body, &format!("index of {}", req.reference))?;
            let mut present = Vec::new();
            for m in idx.manifests() {
                if self.store.info(ns, m.digest().as_ref()).await?.is_some() {
                    present.push(m.clone());
                }
            }
            if present.len() == idx.manifests().len() {
                manifests.extend(
                    present
                        .iter()
                        .map(|m| (m.digest().to_string(), m.media_type().to_string())),
                );
            } else {
                // Only some platforms were pulled: push this platform's manifest under the tag.
                let m = present
                    .iter()
                    .find(|m| {
                        m.platform()
                            .as_ref()
                            .is_some_and(|p| platform_matches(&platform, p))
                    })
                    .ok_or_else(|| {
                        Error::NotFound(format!(
                            "{} has no manifest for {} here",
                            req.reference,
                            platform_string(&platform)
                        ))
                    })?;
                tag_target = (m.digest().to_string(), m.media_type().to_string());
                manifests.push(tag_target.clone());
            }
        } else {
            manifests.push(tag_target.clone());
        }
        if !manifests.contains(&tag_target) {
            manifests.push(tag_target.clone());
        }

        let mut pushed_bytes = 0u64;
        let mut pushed = 0u32;
        for (digest, mt) in &manifests {
            if media::is_index(&MediaType::from(mt.as_str())) {
                continue;
            }
            let body = self.read_local(ns, digest).await?;
            let m: ImageManifest = parse(&body, &format!("manifest {digest}"))?;
            for blob in std::iter::once(m.config()).chain(m.layers().iter()) {
                if let Some(n) = self
                    .push_blob(ns, &reg, &dest, blob.digest().as_ref(), blob.size() as i64, tx)
                    .await?
                {
                    pushed_bytes += n;
                    pushed += 1;
                }
            }
        }
        let (client, to) = reg.client(&dest).await?;
        for (digest, mt) in &manifests {
            let body = self.read_local(ns, digest).await?;
            let at = if (digest, mt) == (&tag_target.0, &tag_target.1) && dest.digest().is_none() {
                to.clone()
            } else {
                Reference::with_digest(
                    to.registry().to_string(),
                    to.repository().to_string(),
                    digest.clone(),
                )
            };
            let ct = mt
                .parse()
                .map_err(|_| Error::InvalidArgument(format!("media type {mt:?}")))?;
            client
                .push_manifest_raw(&at, body, ct)
                .await
                .map_err(|e| remote(&format!("pushing manifest {digest} to {dest}"), e))?;
        }
        tracing::info!(namespace = ns, image = %req.reference, destination = %dest, bytes = pushed_bytes, blobs = pushed, "image pushed");
        molde_common::metrics::PUSHES.add(1);
        molde_common::metrics::PUSH_MICROS.add(started.elapsed().as_micros() as u64);
        send(
            tx,
            api::progress::Event::Done(api::Done {
                name: dest.whole(),
                target: Some(ApiDescriptor {
                    media_type: tag_target.1.clone(),
                    digest: tag_target.0.clone(),
                    size: self.read_local(ns, &tag_target.0).await?.len() as i64,
                    annotations: Default::default(),
                }),
                bytes_fetched: pushed_bytes,
                blobs_fetched: pushed,
                layers_applied: 0,
            }),
        )
        .await;
        Ok(())
    }

    /// Makes sure the registry has one blob; returns the bytes uploaded, if any.
    async fn push_blob(
        &self,
        ns: &str,
        reg: &Arc<crate::registry::Registry>,
        dest: &Reference,
        digest: &str,
        size: i64,
        tx: &ProgressTx,
    ) -> Result<Option<u64>> {
        let (client, to) = reg.client(dest).await?;
        let progress = |status: &str| {
            api::progress::Event::Blob(api::BlobProgress {
                digest: digest.to_string(),
                offset: size,
                total: size,
                status: status.into(),
            })
        };
        if client
            .blob_exists(&to, digest)
            .await
            .map_err(|e| remote(&format!("checking {digest} at {dest}"), e))?
        {
            send(tx, progress("exists")).await;
            molde_common::metrics::PUSH_BLOBS_PRESENT.add(1);
            return Ok(None);
        }
        let info = self
            .store
            .info(ns, digest)
            .await?
            .ok_or_else(|| Error::NotFound(format!("content {digest} of the image")))?;
        if let Some(source) = info.labels.get(&format!("{SOURCE_LABEL}{}", dest.registry()))
            && source != dest.repository()
        {
            let from = Reference::with_digest(to.registry().to_string(), source.clone(), digest.to_string());
            if client.mount_blob(&to, &from, digest).await.is_ok() {
                send(tx, progress("mounted")).await;
                molde_common::metrics::PUSH_BLOBS_MOUNTED.add(1);
                return Ok(None);
            }
        }
        let stream = self.store.read_stream(ns, digest).await?.map(|r| {
            r.map_err(|e| {
                oci_client::errors::OciDistributionError::IoError(std::io::Error::other(e.to_string()))
            })
        });
        client
            .push_blob_stream(&to, stream, digest, Some(size as u64))
            .await
            .map_err(|e| remote(&format!("pushing {digest} to {dest}"), e))?;
        send(tx, progress("pushed")).await;
        molde_common::metrics::PUSH_BLOBS_UPLOADED.add(1);
        molde_common::metrics::PUSH_BYTES.add(size.max(0) as u64);
        Ok(Some(size as u64))
    }
}
