//! What every molde service parses at its edge: digests (`digest`), the
//! namespace and lease of a request (`context`), labels and timestamps.

pub mod accept;
pub mod chunks;
pub mod cni;
pub mod context;
pub mod digest;
pub mod env;
pub mod errdefs;
pub mod events;
pub mod image;
pub mod labels;
pub mod man;
pub mod metrics;
pub mod reference;
pub mod spec;
pub mod store;
pub mod user;

pub use context::RequestContext;
pub use errdefs::Error;

/// A snapshotter's mounts (containerd's `Mount`) as molde-bundle mounts them.
pub fn bundle_mounts(mounts: &[molde_api::containerd::types::Mount]) -> Vec<molde_bundle::mount::Mount> {
    mounts
        .iter()
        .map(|m| molde_bundle::mount::Mount {
            kind: m.r#type.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}
pub use digest::{Algorithm, Digest, Hasher, chain_id, chain_ids};

/// This host's architecture as OCI platforms name it (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `10GB`, `512MiB`, `64m`, `1.5g`, `4096`: bytes (units are powers of
/// 1024, as docker reads them). None for anything else.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some((n * mult as f64) as u64)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_parse_as_docker_reads_them() {
        assert_eq!(super::parse_size("4096"), Some(4096));
        assert_eq!(super::parse_size("64m"), Some(64 << 20));
        assert_eq!(super::parse_size("2GB"), Some(2 << 30));
        assert_eq!(super::parse_size("1.5k"), Some(1536));
        assert_eq!(super::parse_size("9z"), None);
        assert_eq!(super::parse_size("m"), None);
    }
}

/// A request field that failed validation; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgument(pub String);

impl From<InvalidArgument> for tonic::Status {
    fn from(e: InvalidArgument) -> tonic::Status {
        tonic::Status::invalid_argument(e.0)
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A protobuf timestamp from nanoseconds since the Unix epoch.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}
