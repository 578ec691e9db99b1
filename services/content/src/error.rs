//! The content crate's errors, mapped to gRPC codes at the service edge the way
//! containerd's errdefs does, so clients can branch on the code.

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
        match self {
            ContentError::NotFound(_) => Code::NotFound,
            ContentError::AlreadyExists(_) => Code::AlreadyExists,
            ContentError::InvalidArgument(_) | ContentError::Filter(_) => Code::InvalidArgument,
            ContentError::FailedPrecondition(_) => Code::FailedPrecondition,
            ContentError::Locked(_) => Code::Unavailable,
            ContentError::OutOfRange(_) => Code::OutOfRange,
            ContentError::Io { .. } | ContentError::Meta(_) | ContentError::Corrupt { .. } => Code::Internal,
            ContentError::Remote { code, .. } => *code,
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
        Status::new(e.code(), e.to_string())
    }
}
