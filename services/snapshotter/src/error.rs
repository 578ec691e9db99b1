//! The snapshotter's errors, each of a `molde_common::errdefs` kind, which maps
//! them to gRPC codes at the service edge.

use molde_common::errdefs::{self, Classify, Kind};
use tonic::Status;

use crate::apply::ApplyError;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("applying layer {digest}: {source}")]
    Apply {
        digest: String,
        #[source]
        source: ApplyError,
    },
    #[error("{0}")]
    Upstream(Status),
    #[error(transparent)]
    Meta(#[from] molde_meta::MetaError),
    #[error(transparent)]
    Filter(#[from] molde_meta::filter::FilterError),
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

impl SnapshotError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotError {
        let context = context.into();
        move |source| SnapshotError::Io { context, source }
    }
}

impl From<molde_common::InvalidArgument> for SnapshotError {
    fn from(e: molde_common::InvalidArgument) -> Self {
        SnapshotError::InvalidArgument(e.0)
    }
}

impl Classify for SnapshotError {
    fn kind(&self) -> Kind {
        match self {
            SnapshotError::NotFound(_) => Kind::NotFound,
            SnapshotError::AlreadyExists(_) => Kind::AlreadyExists,
            SnapshotError::InvalidArgument(_) | SnapshotError::Filter(_) => Kind::InvalidArgument,
            SnapshotError::FailedPrecondition(_) => Kind::FailedPrecondition,
            SnapshotError::Unimplemented(_) => Kind::Unimplemented,
            SnapshotError::Apply { source, .. } => match source {
                ApplyError::Corrupt(_) | ApplyError::LinkTarget { .. } => Kind::DataLoss,
                _ => Kind::Internal,
            },
            SnapshotError::Upstream(s) => Kind::of(s.code()),
            SnapshotError::Io { .. } | SnapshotError::Meta(_) | SnapshotError::Corrupt { .. } => {
                Kind::Internal
            }
        }
    }
}

impl From<SnapshotError> for Status {
    fn from(e: SnapshotError) -> Status {
        errdefs::status(&e)
    }
}
