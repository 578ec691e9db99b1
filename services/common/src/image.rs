//! The image model every service shares: oci-spec's types, one rule for the
//! platform this host runs (with its CPU variant), and one walk from an image
//! record to its manifest, config and layers (`resolve`), used by the
//! runtime, the builder and the CLI alike.

use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
pub use oci_spec::image::{
    Descriptor, Digest as OciDigest, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Platform,
};
use tonic::Status;
use tonic::transport::Channel;

use crate::InvalidArgument;
use crate::context::namespaced;

/// Media types: oci-spec's `MediaType` names the OCI ones; Docker's schema 2
/// types are `MediaType::Other` and named here.
pub mod media {
    use super::MediaType;

    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// An index (OCI) or a manifest list (Docker).
    pub fn is_index(mt: &MediaType) -> bool {
        matches!(mt, MediaType::ImageIndex) || matches!(mt, MediaType::Other(s) if s == DOCKER_LIST)
    }

    /// An image manifest (OCI or Docker schema 2).
    pub fn is_manifest(mt: &MediaType) -> bool {
        matches!(mt, MediaType::ImageManifest) || matches!(mt, MediaType::Other(s) if s == DOCKER_MANIFEST)
    }

    /// An image config (OCI or Docker).
    pub fn is_config(mt: &MediaType) -> bool {
        matches!(mt, MediaType::ImageConfig) || matches!(mt, MediaType::Other(s) if s == DOCKER_CONFIG)
    }

    /// A layer: a tar, plain or compressed.
    pub fn is_layer(mt: &MediaType) -> bool {
        match mt {
            MediaType::ImageLayer
            | MediaType::ImageLayerGzip
            | MediaType::ImageLayerZstd
            | MediaType::ImageLayerNonDistributable
            | MediaType::ImageLayerNonDistributableGzip
            | MediaType::ImageLayerNonDistributableZstd => true,
            MediaType::Other(s) => {
                s == DOCKER_LAYER
                    || s == DOCKER_FOREIGN_LAYER
                    || s.starts_with("application/vnd.oci.image.layer.v1.tar+")
            }
            _ => false,
        }
    }
}

/// The most bytes a manifest, index or config may have.
pub const MAX_METADATA: usize = 4 << 20;

/// The platform this host runs containers for: `linux/amd64`,
/// `linux/arm64/v8`, `linux/arm/v7`.
pub fn host_platform() -> Platform {
    let (arch, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        other => (other, None),
    };
    let mut p = Platform::default();
    p.set_os("linux".into());
    p.set_architecture(arch.into());
    p.set_variant(variant.map(str::to_string));
    p
}

/// Parses `os/arch[/variant]`; empty means the host's.
pub fn parse_platform(s: &str) -> Result<Platform, InvalidArgument> {
    if s.is_empty() {
        return Ok(host_platform());
    }
    let parts: Vec<&str> = s.split('/').collect();
    let (os, arch, variant) = match parts.as_slice() {
        [os, arch] => (*os, *arch, None),
        [os, arch, v] => (*os, *arch, Some(v.to_string())),
        _ => {
            return Err(InvalidArgument(format!(
                "platform {s:?}: expected os/arch[/variant]"
            )));
        }
    };
    if os.is_empty() || arch.is_empty() {
        return Err(InvalidArgument(format!(
            "platform {s:?}: expected os/arch[/variant]"
        )));
    }
    let mut p = Platform::default();
    p.set_os(os.into());
    p.set_architecture(arch.into());
    p.set_variant(variant);
    Ok(p)
}

/// `os/arch[/variant]`.
pub fn platform_string(p: &Platform) -> String {
    match p.variant() {
        Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os(), p.architecture()),
        _ => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// Whether an index entry for `have` runs where `want` is asked for. A
/// variant is compared when both name one: `linux/arm/v7` never takes a v6
/// entry, and `linux/arm64` takes `linux/arm64/v8`.
pub fn platform_matches(want: &Platform, have: &Platform) -> bool {
    let variant = |p: &Platform| p.variant().clone().filter(|v| !v.is_empty());
    want.os() == have.os()
        && want.architecture() == have.architecture()
        && match (variant(want), variant(have)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
}

/// The manifest of an index for `want`, the one rule pull, load, save and
/// resolve follow: the first entry whose platform matches; else, as
/// containerd does, the first entry that names no platform (an index made
/// by hand, or a single-platform archive); else an error listing what the
/// index has.
pub fn select_manifest<'a>(
    index: &'a ImageIndex,
    want: &Platform,
    what: &str,
) -> Result<&'a Descriptor, crate::errdefs::Error> {
    let entries = index.manifests();
    entries
        .iter()
        .find(|m| m.platform().as_ref().is_some_and(|p| platform_matches(want, p)))
        .or_else(|| entries.iter().find(|m| m.platform().is_none()))
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|m| m.platform().as_ref().map(platform_string))
                .collect();
            crate::errdefs::Error::NotFound(format!(
                "{what}: a manifest for {} (its index has {})",
                platform_string(want),
                have.join(", ")
            ))
        })
}

/// A layer of an image, with what names it once unpacked.
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: String,
    /// The snapshot it unpacks to.
    pub chain_id: String,
}

/// An image record followed down to the manifest for a platform.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the image record points at (a manifest or an index).
    pub target_digest: String,
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config_digest: String,
    pub config: ImageConfiguration,
    /// The config's bytes, for fields oci-spec's type leaves out (Healthcheck, OnBuild, Shell).
    pub config_raw: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl Resolved {
    /// The chain ID of the top layer: the snapshot a container starts on.
    pub fn top_chain_id(&self) -> Option<&str> {
        self.layers.last().map(|l| l.chain_id.as_str())
    }
}

/// Reads a whole blob of at most `MAX_METADATA` bytes from content.v1.
pub async fn read_small_blob(ch: &Channel, ns: &str, digest: &str) -> Result<Vec<u8>, Status> {
    molde_api::client::read_blob(ch, ns, digest, MAX_METADATA).await
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::failed_precondition(format!("{what}: {e}")))
}

/// Follows the image record `name` in namespace `ns` to the manifest for
/// `want` (through its index, if it has one), its config and its layers.
pub async fn resolve(ch: &Channel, ns: &str, name: &str, want: &Platform) -> Result<Resolved, Status> {
    let img = ImagesClient::new(ch.clone())
        .get(namespaced(ns, GetImageRequest { name: name.into() }))
        .await
        .map_err(|s| Status::new(s.code(), format!("image {name}: {}", s.message())))?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = img.target.unwrap_or_default();
    resolve_digest(ch, ns, name, &target.digest, want).await
}

/// As `resolve`, from the digest of a manifest or an index.
pub async fn resolve_digest(
    ch: &Channel,
    ns: &str,
    name: &str,
    digest: &str,
    want: &Platform,
) -> Result<Resolved, Status> {
    let body = read_small_blob(ch, ns, digest).await?;
    let probe: serde_json::Value = parse(&body, &format!("{name}: {digest}"))?;
    let (manifest_digest, body) = if probe.get("manifests").is_some() {
        let index: ImageIndex = parse(&body, &format!("{name}: index {digest}"))?;
        let m = select_manifest(&index, want, &format!("image {name}"))
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let d = m.digest().to_string();
        let b = read_small_blob(ch, ns, &d).await?;
        (d, b)
    } else {
        (digest.to_string(), body)
    };
    let manifest: ImageManifest = parse(&body, &format!("{name}: manifest {manifest_digest}"))?;
    let config_digest = manifest.config().digest().to_string();
    let config_raw = read_small_blob(ch, ns, &config_digest).await?;
    let config: ImageConfiguration = parse(&config_raw, &format!("{name}: config {config_digest}"))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Status::failed_precondition(format!(
            "{name}: the config lists {} diff IDs for {} layers",
            diff_ids.len(),
            manifest.layers().len()
        )));
    }
    let chain = crate::chain_ids(&diff_ids);
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .zip(chain)
        .map(|((d, diff_id), chain_id)| Layer {
            descriptor: d.clone(),
            diff_id,
            chain_id,
        })
        .collect();
    Ok(Resolved {
        target_digest: digest.to_string(),
        manifest_digest,
        manifest,
        config_digest,
        config,
        config_raw,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        parse_platform(s).unwrap()
    }

    fn index(entries: &[(&str, Option<&str>)]) -> ImageIndex {
        let manifests = entries
            .iter()
            .map(|(hex, platform)| {
                let mut d = serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": format!("sha256:{}", hex.repeat(64)),
                    "size": 1,
                });
                if let Some(pl) = platform {
                    let (os, arch) = pl.split_once('/').unwrap();
                    d["platform"] = serde_json::json!({"os": os, "architecture": arch});
                }
                d
            })
            .collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests})).unwrap()
    }

    #[test]
    fn a_manifest_is_chosen_by_platform_then_by_naming_none() {
        let want = p("linux/amd64");
        let i = index(&[
            ("a", Some("linux/arm64")),
            ("b", None),
            ("c", Some("linux/amd64")),
        ]);
        assert!(
            select_manifest(&i, &want, "x")
                .unwrap()
                .digest()
                .to_string()
                .ends_with("ccc")
        );
        let i = index(&[("a", Some("linux/arm64")), ("b", None)]);
        assert!(
            select_manifest(&i, &want, "x")
                .unwrap()
                .digest()
                .to_string()
                .ends_with("bbb")
        );
        let e = select_manifest(&index(&[("a", Some("linux/arm64"))]), &want, "img").unwrap_err();
        assert!(e.to_string().contains("linux/arm64"), "{e}");
    }

    #[test]
    fn platforms_match_with_their_variants() {
        assert!(platform_matches(&p("linux/arm64"), &p("linux/arm64/v8")));
        assert!(platform_matches(&p("linux/arm64/v8"), &p("linux/arm64")));
        assert!(!platform_matches(&p("linux/arm/v7"), &p("linux/arm/v6")));
        assert!(platform_matches(&p("linux/arm/v7"), &p("linux/arm/v7")));
        assert!(!platform_matches(&p("linux/amd64"), &p("linux/arm64")));
        assert!(parse_platform("linux").is_err());
        assert_eq!(platform_string(&p("linux/arm/v7")), "linux/arm/v7");
        assert_eq!(platform_string(&p("")), platform_string(&host_platform()));
    }

    #[test]
    fn an_index_gives_the_first_entry_for_the_platform() {
        let index: ImageIndex = serde_json::from_value(serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "6".repeat(64)),
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                 "digest": format!("sha256:{}", "7".repeat(64)),
                 "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            ]
        }))
        .unwrap();
        let m = select_manifest(&index, &p("linux/arm/v7"), "x").unwrap();
        assert!(m.digest().to_string().contains(&"7".repeat(64)));
        let err = select_manifest(&index, &p("linux/s390x"), "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm/v6, linux/arm/v7"), "{err}");
    }
}
