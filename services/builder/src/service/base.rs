//! FROM images: found in images.v1 or pulled through transfer.v1; blobs read from and written to content.v1.

use super::*;

impl Job {
    /// The image a FROM names, with its config, layers and top chain ID;
    /// with `pull`, fetched from its registry first.
    pub(super) async fn base(&self, name: &str, pull: bool) -> Result<Built, Error> {
        let full = molde_common::reference::normalize(name);
        if pull {
            self.pull(name, &full).await?;
        }
        let img = match self.find_image(name, &full).await? {
            Some(img) => img,
            // As docker does: an image that is not here is pulled.
            None if !pull => {
                self.pull(name, &full).await?;
                self.find_image(name, &full).await?.ok_or_else(|| {
                    Error::NotFound(format!("FROM {name}: no image {full} here after pulling it"))
                })?
            }
            None => return Err(Error::NotFound(format!("FROM {name}: no image {full} here"))),
        };
        let target = img.target.unwrap_or_default();
        let r = molde_common::image::resolve_digest(
            &self.svc.content,
            &self.ns,
            &format!("FROM {name}"),
            &target.digest,
            &molde_common::image::host_platform(),
        )
        .await?;
        let config: Value = serde_json::from_slice(&r.config_raw)
            .map_err(|e| Error::FailedPrecondition(format!("FROM {name}: its config: {e}")))?;
        let top = r.top_chain_id().unwrap_or_default().to_string();
        Ok(Built {
            config,
            layers: r.layers,
            top,
        })
    }

    pub(super) async fn find_image(&self, name: &str, full: &str) -> Result<Option<Image>, Error> {
        for candidate in [name.to_string(), full.to_string()] {
            match ImagesClient::new(self.svc.content.clone())
                .get(self.plain(GetImageRequest { name: candidate }))
                .await
            {
                Ok(r) => return Ok(r.into_inner().image),
                Err(s) if s.code() == tonic::Code::NotFound => continue,
                Err(s) => return Err(s.into()),
            }
        }
        Ok(None)
    }

    /// Pulls a FROM image through transfer.v1, with the credentials the
    /// client sent for its registry.
    pub(super) async fn pull(&self, name: &str, full: &str) -> Result<(), Error> {
        let failed = |e: Status| {
            Error::FailedPrecondition(format!(
                "FROM {name}: {full} is not here and pulling it failed: {}",
                e.message()
            ))
        };
        let mut s = TransferClient::new(self.svc.transfer.clone())
            .pull(
                self.plain(PullRequest {
                    reference: full.to_string(),
                    auth: full
                        .split('/')
                        .next()
                        .and_then(|registry| self.req.registry_auth.get(registry))
                        .cloned(),
                    ..Default::default()
                }),
            )
            .await
            .map_err(failed)?
            .into_inner();
        while s.message().await.map_err(failed)?.is_some() {}
        Ok(())
    }

    pub(super) async fn write_blob(
        &self,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(String, i64), Error> {
        let digest = Digest::of(Algorithm::Sha256, &bytes).to_string();
        let size = bytes.len() as i64;
        molde_api::client::write_blob(
            &self.svc.content,
            &self.ns,
            Some(&self.lease),
            &digest,
            bytes.into(),
            labels,
        )
        .await?;
        Ok((digest, size))
    }
}
