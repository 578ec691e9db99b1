//! Push: upload an image's missing blobs and its manifests to a registry.
//!
//! Every blob is asked about first (HEAD); one the registry lacks is mounted
//! from the repository it was pulled from when that repository is on the same
//! registry (cross-repository mount), and uploaded otherwise. Manifests go last,
//! children before the index that names them.

use std::sync::Arc;

use bytes::Bytes;
use molde_api::containerd::types::Descriptor as ApiDescriptor;
use molde_api::molde::services::transfer::v1 as api;
use molde_common::Digest;
use oci_client::Reference;

use crate::error::{ContentError, Result};
use crate::records::{self, ContentRecord, ImageRecord};

use super::media::{self, Index, Manifest};
use super::pull::{ProgressTx, Puller};
use super::registry::{SOURCE_LABEL, remote};

async fn send(tx: &ProgressTx, ev: api::progress::Event) {
    let _ = tx.send(Ok(api::Progress { event: Some(ev) })).await;
}

impl Puller {
    fn read_local(&self, ns: &str, digest: &str) -> Result<(Vec<u8>, ContentRecord)> {
        let (rec, _): (ContentRecord, u64) =
            records::load(&*self.shared.store, &records::content_key(ns, digest))?
                .ok_or_else(|| ContentError::NotFound(format!("content {digest}")))?;
        let d: Digest = Digest::parse_field(digest, "digest")?;
        let data = std::fs::read(self.shared.blobs.blob_path(&d))
            .map_err(ContentError::io(format!("reading {digest}")))?;
        Ok((data, rec))
    }

    pub async fn push(&self, ns: &str, req: api::PushRequest, tx: &ProgressTx) -> Result<()> {
        let (img, _): (ImageRecord, u64) =
            records::load(&*self.shared.store, &records::image_key(ns, &req.reference))?
                .ok_or_else(|| ContentError::NotFound(format!("image {:?}", req.reference)))?;
        let dest_name = if req.destination.is_empty() {
            req.reference.clone()
        } else {
            req.destination.clone()
        };
        let dest: Reference = dest_name
            .parse()
            .map_err(|e| ContentError::InvalidArgument(format!("reference {dest_name:?}: {e}")))?;
        let reg = self.registry(&dest, req.auth.as_ref())?;
        let platform = molde_common::image::parse_platform(&req.platform)?;

        // What to push: (manifest digest, media type) in order, then the tag's target.
        let target = img.target.clone();
        let mut manifests: Vec<(String, String)> = Vec::new();
        let mut tag_target = (target.digest.clone(), target.media_type.clone());
        if media::is_index(&target.media_type) {
            let (body, _) = self.read_local(ns, &target.digest)?;
            let idx: Index = serde_json::from_slice(&body)
                .map_err(|e| ContentError::InvalidArgument(format!("index of {}: {e}", req.reference)))?;
            let present: Vec<_> = idx
                .manifests
                .iter()
                .filter(|m| {
                    self.shared
                        .store
                        .get(&records::content_key(ns, &m.digest))
                        .ok()
                        .flatten()
                        .is_some()
                })
                .cloned()
                .collect();
            if present.len() == idx.manifests.len() {
                manifests.extend(present.iter().map(|m| (m.digest.clone(), m.media_type.clone())));
            } else {
                // Only some platforms were pulled: push this platform's manifest under the tag.
                let m = present
                    .iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_some_and(|p| molde_common::image::platform_matches(&platform, p))
                    })
                    .ok_or_else(|| {
                        ContentError::NotFound(format!(
                            "{} has no manifest for {} here",
                            req.reference,
                            molde_common::image::platform_string(&platform)
                        ))
                    })?;
                tag_target = (m.digest.clone(), m.media_type.clone());
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
            if media::is_index(mt) {
                continue;
            }
            let (body, _) = self.read_local(ns, digest)?;
            let m: Manifest = serde_json::from_slice(&body)
                .map_err(|e| ContentError::InvalidArgument(format!("manifest {digest}: {e}")))?;
            for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
                if let Some(n) = self
                    .push_blob(ns, &reg, &dest, &blob.digest, blob.size, tx)
                    .await?
                {
                    pushed_bytes += n;
                    pushed += 1;
                }
            }
        }
        let client = reg.client(&dest).await;
        for (digest, mt) in &manifests {
            let (body, _) = self.read_local(ns, digest)?;
            let at = if (digest, mt) == (&tag_target.0, &tag_target.1) && dest.digest().is_none() {
                dest.clone()
            } else {
                Reference::with_digest(
                    dest.registry().to_string(),
                    dest.repository().to_string(),
                    digest.clone(),
                )
            };
            let ct = mt
                .parse()
                .map_err(|_| ContentError::InvalidArgument(format!("media type {mt:?}")))?;
            client
                .push_manifest_raw(&at, body, ct)
                .await
                .map_err(|e| remote(&format!("pushing manifest {digest} to {dest}"), e))?;
        }
        tracing::info!(namespace = ns, image = %req.reference, destination = %dest, bytes = pushed_bytes, blobs = pushed, "image pushed");
        send(
            tx,
            api::progress::Event::Done(api::Done {
                name: dest.whole(),
                target: Some(ApiDescriptor {
                    media_type: tag_target.1.clone(),
                    digest: tag_target.0.clone(),
                    size: self.read_local(ns, &tag_target.0)?.0.len() as i64,
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
        reg: &Arc<super::registry::Registry>,
        dest: &Reference,
        digest: &str,
        size: i64,
        tx: &ProgressTx,
    ) -> Result<Option<u64>> {
        let client = reg.client(dest).await;
        let progress = |status: &str| {
            api::progress::Event::Blob(api::BlobProgress {
                digest: digest.to_string(),
                offset: size,
                total: size,
                status: status.into(),
            })
        };
        if client
            .blob_exists(dest, digest)
            .await
            .map_err(|e| remote(&format!("checking {digest} at {dest}"), e))?
        {
            send(tx, progress("exists")).await;
            return Ok(None);
        }
        let (rec, _): (ContentRecord, u64) =
            records::load(&*self.shared.store, &records::content_key(ns, digest))?
                .ok_or_else(|| ContentError::NotFound(format!("content {digest} of the image")))?;
        if let Some(source) = rec.labels.get(&format!("{SOURCE_LABEL}{}", dest.registry()))
            && source != dest.repository()
        {
            let from =
                Reference::with_digest(dest.registry().to_string(), source.clone(), digest.to_string());
            if client.mount_blob(dest, &from, digest).await.is_ok() {
                send(tx, progress("mounted")).await;
                return Ok(None);
            }
        }
        let d = Digest::parse_field(digest, "digest")?;
        let path = self.shared.blobs.blob_path(&d);
        let file = std::fs::File::open(&path).map_err(ContentError::io(format!("reading {digest}")))?;
        let stream = futures::stream::unfold(file, |mut f| async move {
            let mut buf = vec![0u8; 4 << 20];
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        });
        client
            .push_blob_stream(dest, stream, digest, Some(size as u64))
            .await
            .map_err(|e| remote(&format!("pushing {digest} to {dest}"), e))?;
        send(tx, progress("pushed")).await;
        Ok(Some(size as u64))
    }
}
