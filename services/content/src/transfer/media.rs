//! Manifests, indexes and configs as a pull reads them, and platform choice.

use serde::{Deserialize, Serialize};

use crate::error::{ContentError, Result};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a pull asks a registry for when it resolves a reference.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Manifests, indexes and configs larger than this are refused.
pub const MAX_METADATA: usize = 4 << 20;

pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

pub fn is_layer(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.v1.tar")
        || mt.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
        || mt == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

/// Platforms are oci-spec's, matched by the one rule in `molde_common::image`.
pub use molde_common::image::Platform;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: i64,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config a pull needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The media type of a manifest or index body: its `mediaType` field, or what
/// its shape says when the field is absent (allowed for OCI documents).
pub fn sniff(body: &[u8], what: &str) -> Result<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(body)
        .map_err(|e| ContentError::InvalidArgument(format!("{what}: not a JSON manifest: {e}")))?;
    let mt = match (p.media_type, p.manifests, p.config) {
        (Some(mt), _, _) => mt,
        (None, Some(_), _) => OCI_INDEX.into(),
        (None, None, Some(_)) => OCI_MANIFEST.into(),
        _ => {
            return Err(ContentError::InvalidArgument(format!(
                "{what}: neither a manifest nor an index"
            )));
        }
    };
    if !is_index(&mt) && !is_manifest(&mt) {
        return Err(ContentError::InvalidArgument(format!(
            "{what}: media type {mt:?} is not an image manifest or index"
        )));
    }
    Ok(mt)
}

pub use molde_common::chain_ids;

#[cfg(test)]
mod tests {
    use super::*;
    use molde_common::image::{parse_platform, platform_matches};

    #[test]
    fn sniffs_media_types_and_refuses_others() {
        assert_eq!(sniff(br#"{"manifests":[]}"#, "m").unwrap(), OCI_INDEX);
        assert_eq!(sniff(br#"{"config":{}}"#, "m").unwrap(), OCI_MANIFEST);
        assert_eq!(
            sniff(
                format!(r#"{{"mediaType":"{DOCKER_MANIFEST}","config":{{}}}}"#).as_bytes(),
                "m"
            )
            .unwrap(),
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
