//! The image: config and manifest written to content.v1, names to images.v1.

use oci_spec::image::{ImageManifestBuilder, MediaType};

use super::*;

impl Job {
    /// Writes the config and manifest and names the image.
    pub(super) async fn image(&self, built: Built) -> Result<(), Error> {
        let mut config = built.config;
        let diff_ids: Vec<&str> = built.layers.iter().map(|l| l.diff_id.as_str()).collect();
        config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
        config["created"] = json!(rfc3339(now_secs()));
        config["architecture"] = json!(
            config["architecture"]
                .as_str()
                .unwrap_or(molde_common::host_arch())
        );
        config["os"] = json!("linux");
        if !self.req.labels.is_empty() {
            let mut labels = config["config"]["Labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (k, v) in &self.req.labels {
                labels.insert(k.clone(), json!(v));
            }
            config["config"]["Labels"] = Value::Object(labels);
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let mut labels = HashMap::new();
        if !built.top.is_empty() {
            labels.insert(
                format!("{}{SNAPSHOTTER}", molde_common::labels::GC_REF_SNAPSHOT),
                built.top.clone(),
            );
        }
        let (config_digest, config_size) = self.write_blob(config_bytes, labels).await?;
        let config_desc = oci_spec::image::Descriptor::new(
            MediaType::ImageConfig,
            config_size as u64,
            oci_spec::image::Digest::try_from(config_digest.as_str())
                .map_err(|e| Error::Internal(format!("config digest: {e}")))?,
        );
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_desc)
            .layers(
                built
                    .layers
                    .iter()
                    .map(|l| l.descriptor.clone())
                    .collect::<Vec<_>>(),
            )
            .build()
            .map_err(|e| Error::Internal(format!("the image manifest: {e}")))?;
        let mut labels = HashMap::new();
        labels.insert(
            format!("{}.config", molde_common::labels::GC_REF_CONTENT),
            config_digest.clone(),
        );
        for (i, l) in built.layers.iter().enumerate() {
            labels.insert(
                format!("{}.l.{i}", molde_common::labels::GC_REF_CONTENT),
                l.descriptor.digest().to_string(),
            );
        }
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
        let (digest, size) = self.write_blob(bytes, labels).await?;
        let mut tags = Vec::new();
        for t in &self.req.tags {
            let image = Image {
                name: t.clone(),
                labels: Default::default(),
                target: Some(Descriptor {
                    media_type: MediaType::ImageManifest.to_string(),
                    digest: digest.clone(),
                    size,
                    annotations: Default::default(),
                }),
                created_at: None,
                updated_at: None,
            };
            let mut images = ImagesClient::new(self.svc.content.clone());
            match images
                .create(self.plain(CreateImageRequest {
                    image: Some(image.clone()),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    images
                        .update(self.plain(UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                        }))
                        .await?;
                }
                Err(s) => return Err(s.into()),
            }
            tags.push(t.clone());
        }
        self.send(Event::Image(api::ImageDone {
            digest,
            config_digest,
            tags,
        }))
        .await;
        Ok(())
    }
}
