//! What the runtime needs of an image, read through images.v1 and content.v1:
//! its config (process defaults) and its top chain ID (the rootfs parent).

use futures::StreamExt;
use molde_api::containerd::services::content::v1::{ReadContentRequest, content_client::ContentClient};
use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
use molde_common::context::namespaced;
use serde::Deserialize;
use tonic::Status;
use tonic::transport::Channel;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcessConfig {
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Config {
    #[serde(default)]
    config: ProcessConfig,
    rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

pub struct Image {
    pub process: ProcessConfig,
    /// Chain ID of the top layer: the parent of the container's rootfs.
    pub top: String,
}

async fn read(ch: &Channel, ns: &str, digest: &str) -> Result<Vec<u8>, Status> {
    let mut s = ContentClient::new(ch.clone())
        .read(namespaced(
            ns,
            ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            },
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend_from_slice(&m?.data);
    }
    Ok(out)
}

fn json<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::failed_precondition(format!("{what}: {e}")))
}

/// Resolves `name` to its config and top chain ID.
pub async fn resolve(ch: &Channel, ns: &str, name: &str) -> Result<Image, Status> {
    let img = ImagesClient::new(ch.clone())
        .get(namespaced(ns, GetImageRequest { name: name.into() }))
        .await
        .map_err(|s| Status::new(s.code(), format!("image {name}: {}", s.message())))?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = img.target.unwrap_or_default();
    let mut manifest: serde_json::Value = json(&read(ch, ns, &target.digest).await?, "manifest")?;
    if let Some(ms) = manifest.get("manifests").and_then(|m| m.as_array()) {
        let m = ms
            .iter()
            .find(|m| {
                m["platform"]["os"] == "linux" && m["platform"]["architecture"] == molde_common::host_arch()
            })
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "image {name} has no manifest for linux/{}",
                    molde_common::host_arch()
                ))
            })?;
        let d = m["digest"].as_str().unwrap_or_default().to_string();
        manifest = json(&read(ch, ns, &d).await?, "manifest")?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config: Config = json(&read(ch, ns, &config_digest).await?, "image config")?;
    let top = molde_common::chain_ids(&config.rootfs.diff_ids)
        .pop()
        .unwrap_or_default();
    Ok(Image {
        process: config.config,
        top,
    })
}
