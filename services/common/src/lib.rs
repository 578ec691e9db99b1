//! What every molde service parses at its edge: digests (`digest`), the
//! namespace and lease of a request (`context`), labels and timestamps.

pub mod context;
pub mod digest;
pub mod labels;
pub mod reference;

pub use context::RequestContext;
pub use digest::{Algorithm, Digest, Hasher, chain_id, chain_ids};

/// This host's architecture as OCI platforms name it (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
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
