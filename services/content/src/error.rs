//! The content crate's errors, each of a `molde_common::errdefs` kind, which
//! maps them to gRPC codes at the service edge the way containerd's errdefs
//! does, so clients can branch on the code.

use molde_common::errdefs::{self, Classify, Kind};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Another writer holds the ingest; containerd clients retry on this code.
    #[error("ref {0} is locked: another writer holds it")]
    Locked(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] molde_meta::MetaError),
    #[error(transparent)]
    Filter(#[from] molde_meta::filter::FilterError),
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    /// An error from another service or a registry, with the code to report.
    #[error("{message}")]
    Remote { code: Code, message: String },
}

pub type Result<T> = std::result::Result<T, ContentError>;

impl ContentError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContentError {
        let context = context.into();
        move |source| ContentError::Io { context, source }
    }

    pub fn code(&self) -> Code {
        self.kind().code()
    }
}

impl Classify for ContentError {
    fn kind(&self) -> Kind {
        match self {
            ContentError::NotFound(_) => Kind::NotFound,
            ContentError::AlreadyExists(_) => Kind::AlreadyExists,
            ContentError::InvalidArgument(_) | ContentError::Filter(_) => Kind::InvalidArgument,
            ContentError::FailedPrecondition(_) => Kind::FailedPrecondition,
            ContentError::Locked(_) => Kind::Unavailable,
            ContentError::OutOfRange(_) => Kind::OutOfRange,
            ContentError::Io { .. } | ContentError::Meta(_) | ContentError::Corrupt { .. } => Kind::Internal,
            ContentError::Remote { code, .. } => Kind::of(*code),
        }
    }
}

impl From<molde_common::InvalidArgument> for ContentError {
    fn from(e: molde_common::InvalidArgument) -> Self {
        ContentError::InvalidArgument(e.0)
    }
}

impl From<ContentError> for Status {
    fn from(e: ContentError) -> Status {
        errdefs::status(&e)
    }
}
