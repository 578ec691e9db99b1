//! `molde inspect`: an image's record with its manifest and config for this
//! host's platform, through the shared image model
//! (`molde_common::image::resolve_digest`).

use anyhow::{Result, anyhow};
use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
use molde_common::image::{host_platform, resolve_digest};
use serde_json::{Value, json};

use crate::daemon::{Daemon, status};
use crate::images::normalize;

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
    let r = resolve_digest(&d.channel, &d.namespace, &full, &target.digest, &host_platform())
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    let config: Value = serde_json::from_slice(&r.config_raw)
        .map_err(|e| anyhow!("{full}: config {} is not JSON: {e}", r.config_digest))?;
    let size: i64 = r.layers.iter().map(|l| l.descriptor.size() as i64).sum();
    let out = json!({
        "Name": full,
        "Id": r.config_digest,
        "Target": {"mediaType": target.media_type, "digest": target.digest, "size": target.size},
        "ManifestDigest": r.manifest_digest,
        "Labels": img.labels,
        "Size": size,
        "Architecture": config["architecture"],
        "Os": config["os"],
        "Variant": config["variant"],
        "Config": config["config"],
        "RootFS": config["rootfs"],
        "History": config["history"],
        "Manifest": r.manifest,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
