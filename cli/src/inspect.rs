//! `molde inspect`: containers, images, networks and volumes as docker
//! shows them, a JSON array or `-f TEMPLATE` per object. An image is its
//! record with its manifest and config for this host's platform, through
//! the shared image model (`molde_common::image::resolve_digest`).

use anyhow::{Result, anyhow};
use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
use molde_common::image::{host_platform, resolve_digest};
use serde_json::{Value, json};

use crate::daemon::{Daemon, status};
use crate::images::normalize;
use crate::template::Template;

/// What `--type` narrows `inspect` to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Container,
    Image,
    Network,
    Volume,
}

/// `molde inspect [-f TEMPLATE] [--type KIND] NAME…`: each name is looked up
/// as a container, an image, a network, then a volume (docker's order).
pub async fn run(d: &Daemon, names: &[String], format: Option<&Template>, kind: Option<Kind>) -> Result<()> {
    let mut out = Vec::new();
    for name in names {
        out.push(one(d, name, kind).await?);
    }
    crate::output::print_inspect(format, &out)
}

async fn one(d: &Daemon, name: &str, kind: Option<Kind>) -> Result<Value> {
    let wants = |k: Kind| kind.is_none_or(|w| w == k);
    if wants(Kind::Container)
        && let Some(json) = crate::containers::inspect(d, name).await?
    {
        return serde_json::from_str(&json).map_err(|e| anyhow!("container {name}: {e}"));
    }
    if wants(Kind::Image) {
        let names = crate::images::resolve_names(d, name).await?;
        let full = names.first().cloned().unwrap_or_else(|| normalize(name));
        if let Some(v) = image(d, &full).await? {
            return Ok(v);
        }
    }
    if wants(Kind::Network) {
        match crate::network::inspect_one(d, name).await {
            Ok(v) => return Ok(v),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(status(format!("network {name}"))(s)),
        }
    }
    if wants(Kind::Volume) {
        match crate::volume::inspect_one(d, name).await {
            Ok(v) => return Ok(v),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(status(format!("volume {name}"))(s)),
        }
    }
    let what = match kind {
        Some(Kind::Container) => "container",
        Some(Kind::Image) => "image",
        Some(Kind::Network) => "network",
        Some(Kind::Volume) => "volume",
        None => "object",
    };
    anyhow::bail!("no such {what}: {name}")
}

/// The image's inspect object; None when no image has that name.
async fn image(d: &Daemon, full: &str) -> Result<Option<Value>> {
    let img = match ImagesClient::new(d.channel.clone())
        .get(d.request(GetImageRequest {
            name: full.to_string(),
        }))
        .await
    {
        Ok(r) => r.into_inner().image.unwrap_or_default(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(status(format!("image {full}"))(s)),
    };
    let target = img.target.clone().unwrap_or_default();
    let r = resolve_digest(&d.channel, &d.namespace, full, &target.digest, &host_platform())
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    let config: Value = serde_json::from_slice(&r.config_raw)
        .map_err(|e| anyhow!("{full}: config {} is not JSON: {e}", r.config_digest))?;
    let size: i64 = r.layers.iter().map(|l| l.descriptor.size() as i64).sum();
    let out = json!({
        "Name": full,
        "Id": r.config_digest,
        "RepoTags": [full],
        "RepoDigests": [format!("{}@{}", full.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map_or(full, |(r, _)| r), target.digest)],
        "Created": config["created"],
        "Author": config["author"],
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
    Ok(Some(out))
}
