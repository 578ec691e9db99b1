//! What a pull reads from registries: oci-spec's image types (through
//! `molde_common::image`), the media types a resolve accepts, and the sniffing
//! of a manifest whose type the registry left out.

use molde_common::errdefs::{Error, Result};
use serde::Deserialize;

pub use molde_common::chain_ids;
pub use molde_common::image::media::{
    DOCKER_LIST, DOCKER_MANIFEST, is_config, is_index, is_layer, is_manifest,
};
pub use molde_common::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MAX_METADATA, MediaType, OciDigest, Platform,
};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What a pull asks a registry for when it resolves a reference.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The media type of a manifest or index body: its `mediaType` field, or what
/// its shape says when the field is absent (allowed for OCI documents).
pub fn sniff(body: &[u8], what: &str) -> Result<MediaType> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    let p: Probe = serde_json::from_slice(body)
        .map_err(|e| Error::InvalidArgument(format!("{what}: not a JSON manifest: {e}")))?;
    let mt = match (p.media_type, p.manifests, p.config) {
        (Some(mt), _, _) => MediaType::from(mt.as_str()),
        (None, Some(_), _) => MediaType::ImageIndex,
        (None, None, Some(_)) => MediaType::ImageManifest,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{what}: neither a manifest nor an index"
            )));
        }
    };
    if !is_index(&mt) && !is_manifest(&mt) {
        return Err(Error::InvalidArgument(format!(
            "{what}: media type \"{mt}\" is not an image manifest or index"
        )));
    }
    Ok(mt)
}

/// Parses a JSON document, naming what it was on failure.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))
}

/// Refuses a config whose diff IDs do not pair with the manifest's layers.
pub fn check_diff_ids(name: &str, config: &ImageConfiguration, manifest: &ImageManifest) -> Result<()> {
    let (ids, layers) = (config.rootfs().diff_ids().len(), manifest.layers().len());
    if ids != layers {
        return Err(Error::InvalidArgument(format!(
            "{name}: the config lists {ids} diff IDs for {layers} layers"
        )));
    }
    Ok(())
}

/// A descriptor's digest as molde's `Digest`.
pub fn digest_of(d: &Descriptor) -> Result<molde_common::Digest> {
    Ok(molde_common::Digest::parse_field(
        d.digest().as_ref(),
        "descriptor digest",
    )?)
}

/// A descriptor as the gRPC APIs carry it.
pub fn api_desc(d: &Descriptor) -> molde_api::containerd::types::Descriptor {
    molde_api::containerd::types::Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: Default::default(),
    }
}

/// A descriptor from its parts; the digest is checked.
pub fn descriptor(media_type: &MediaType, digest: &str, size: u64) -> Result<Descriptor> {
    let d: OciDigest = digest
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("digest {digest:?}: {e}")))?;
    Ok(Descriptor::new(media_type.clone(), size, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use molde_common::image::{parse_platform, platform_matches};

    #[test]
    fn sniffs_media_types_and_refuses_others() {
        assert_eq!(sniff(br#"{"manifests":[]}"#, "m").unwrap(), MediaType::ImageIndex);
        assert_eq!(sniff(br#"{"config":{}}"#, "m").unwrap(), MediaType::ImageManifest);
        assert_eq!(
            sniff(
                format!(r#"{{"mediaType":"{DOCKER_MANIFEST}","config":{{}}}}"#).as_bytes(),
                "m"
            )
            .unwrap()
            .to_string(),
            DOCKER_MANIFEST
        );
        assert!(sniff(br#"{"mediaType":"text/html"}"#, "m").is_err());
        assert!(sniff(b"<html>", "m").is_err());
    }

    #[test]
    fn platforms_match_with_optional_variant() {
        let host = parse_platform("linux/arm64").unwrap();
        assert!(platform_matches(
            &host,
            &parse_platform("linux/arm64/v8").unwrap()
        ));
        assert!(!platform_matches(&host, &parse_platform("linux/amd64").unwrap()));
        assert!(parse_platform("linux").is_err());
    }

    #[test]
    fn docker_and_oci_types_are_told_apart() {
        assert!(is_index(&MediaType::from(DOCKER_LIST)));
        assert!(is_manifest(&MediaType::from(DOCKER_MANIFEST)));
        assert!(is_layer(&MediaType::from(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        )));
        assert!(is_layer(&MediaType::ImageLayerGzip));
        assert!(!is_layer(&MediaType::ImageConfig));
        assert!(is_config(&MediaType::from(
            "application/vnd.docker.container.image.v1+json"
        )));
    }

    #[test]
    fn chain_ids_follow_containerd() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(
            c[1],
            molde_common::Digest::of(molde_common::Algorithm::Sha256, b"sha256:aaaa sha256:bbbb").to_string()
        );
    }
}
