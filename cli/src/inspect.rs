//! `molde inspect`: an image's record with its manifest and config, read from
//! the content store.

use anyhow::{Result, anyhow};
use futures::StreamExt;
use molde_api::containerd::services::content::v1::{ReadContentRequest, content_client::ContentClient};
use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
use serde_json::{Value, json};

use crate::daemon::{Daemon, status};
use crate::images::normalize;

async fn read_json(d: &Daemon, digest: &str) -> Result<Value> {
    let mut s = ContentClient::new(d.channel.clone())
        .read(d.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0,
        }))
        .await
        .map_err(status(format!("reading {digest}")))?
        .into_inner();
    let mut buf = Vec::new();
    while let Some(m) = s.next().await {
        buf.extend_from_slice(&m.map_err(status(format!("reading {digest}")))?.data);
    }
    serde_json::from_slice(&buf).map_err(|e| anyhow!("{digest} is not JSON: {e}"))
}

fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

pub async fn image(d: &Daemon, name: &str) -> Result<()> {
    let full = normalize(name);
    let img = ImagesClient::new(d.channel.clone())
        .get(d.request(GetImageRequest { name: full.clone() }))
        .await
        .map_err(status(format!("image {name}")))?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = img.target.clone().unwrap_or_default();
    let mut manifest = read_json(d, &target.digest).await?;
    let mut manifest_digest = target.digest.clone();
    if manifest.get("manifests").is_some() {
        let (os, arch) = host_platform();
        let chosen = manifest["manifests"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["platform"]["os"] == os && m["platform"]["architecture"] == arch)
            })
            .ok_or_else(|| anyhow!("{full}: no manifest for {os}/{arch} in its index"))?;
        manifest_digest = chosen["digest"].as_str().unwrap_or_default().to_string();
        manifest = read_json(d, &manifest_digest).await?;
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = read_json(d, &config_digest).await?;
    let size: i64 = manifest["layers"]
        .as_array()
        .map(|ls| ls.iter().filter_map(|l| l["size"].as_i64()).sum())
        .unwrap_or(0);
    let out = json!({
        "Name": full,
        "Id": config_digest,
        "Target": {"mediaType": target.media_type, "digest": target.digest, "size": target.size},
        "ManifestDigest": manifest_digest,
        "Labels": img.labels,
        "Size": size,
        "Architecture": config["architecture"],
        "Os": config["os"],
        "Config": config["config"],
        "RootFS": config["rootfs"],
        "History": config["history"],
        "Manifest": manifest,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
