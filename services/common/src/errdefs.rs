//! molde's one error type and its one mapping to gRPC codes, as containerd's
//! errdefs: a client branches on the code (NotFound, AlreadyExists, ...),
//! whichever service answered. Every service returns `Error`; each variant is
//! of a `Kind`, and `Kind::code` is the only place a kind becomes a code.

use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    /// Busy or unreachable: the client may retry.
    Unavailable,
    OutOfRange,
    /// Bytes that do not match their digest, or a corrupt layer.
    DataLoss,
    Unimplemented,
    PermissionDenied,
    Unauthenticated,
    Cancelled,
    DeadlineExceeded,
    Internal,
}

impl Kind {
    /// The gRPC code a kind is reported with.
    pub fn code(self) -> Code {
        match self {
            Kind::NotFound => Code::NotFound,
            Kind::AlreadyExists => Code::AlreadyExists,
            Kind::InvalidArgument => Code::InvalidArgument,
            Kind::FailedPrecondition => Code::FailedPrecondition,
            Kind::Unavailable => Code::Unavailable,
            Kind::OutOfRange => Code::OutOfRange,
            Kind::DataLoss => Code::DataLoss,
            Kind::Unimplemented => Code::Unimplemented,
            Kind::PermissionDenied => Code::PermissionDenied,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::Cancelled => Code::Cancelled,
            Kind::DeadlineExceeded => Code::DeadlineExceeded,
            Kind::Internal => Code::Internal,
        }
    }

    /// The kind of a code another service (or a registry, through it) answered with.
    pub fn of(code: Code) -> Kind {
        match code {
            Code::NotFound => Kind::NotFound,
            Code::AlreadyExists => Kind::AlreadyExists,
            Code::InvalidArgument => Kind::InvalidArgument,
            Code::FailedPrecondition => Kind::FailedPrecondition,
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted => Kind::Unavailable,
            Code::OutOfRange => Kind::OutOfRange,
            Code::DataLoss => Kind::DataLoss,
            Code::Unimplemented => Kind::Unimplemented,
            Code::PermissionDenied => Kind::PermissionDenied,
            Code::Unauthenticated => Kind::Unauthenticated,
            Code::Cancelled => Kind::Cancelled,
            Code::DeadlineExceeded => Kind::DeadlineExceeded,
            Code::Ok | Code::Unknown | Code::Internal => Kind::Internal,
        }
    }
}

/// What went wrong, in any molde service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another writer holds the ingest; containerd clients retry on this code.
    #[error("ref {0} is locked: another writer holds it")]
    Locked(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    OutOfRange(String),
    /// Bytes that do not match their digest, or a corrupt layer.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The caller went away or cancelled the call.
    #[error("{0}")]
    Cancelled(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Meta(#[from] molde_meta::MetaError),
    #[error("corrupt record {key}: {message}")]
    Corrupt { key: String, message: String },
    #[error("{0}")]
    Internal(String),
    /// An error from another service or a registry, with the code it came with.
    #[error("{message}")]
    Remote { code: Code, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error with what was being done: `.map_err(Error::io("reading x"))`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// A status from another service, its message prefixed with what was asked.
    pub fn upstream(what: impl std::fmt::Display) -> impl FnOnce(Status) -> Error {
        move |s| Error::Remote {
            code: s.code(),
            message: format!("{what}: {}", s.message()),
        }
    }

    /// What a client reads: the same text as `to_string`.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The same kind of error, its message prefixed with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        Error::Remote {
            code: self.code(),
            message: format!("{what}: {self}"),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::AlreadyExists(_) => Kind::AlreadyExists,
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Locked(_) | Error::Unavailable(_) => Kind::Unavailable,
            Error::OutOfRange(_) => Kind::OutOfRange,
            Error::DataLoss(_) => Kind::DataLoss,
            Error::Unimplemented(_) => Kind::Unimplemented,
            Error::PermissionDenied(_) => Kind::PermissionDenied,
            Error::DeadlineExceeded(_) => Kind::DeadlineExceeded,
            Error::Cancelled(_) => Kind::Cancelled,
            Error::Io { .. } | Error::Meta(_) | Error::Corrupt { .. } | Error::Internal(_) => Kind::Internal,
            Error::Remote { code, .. } => Kind::of(*code),
        }
    }

    pub fn code(&self) -> Code {
        self.kind().code()
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == Kind::NotFound
    }

    pub fn is_already_exists(&self) -> bool {
        self.kind() == Kind::AlreadyExists
    }
}

impl Classify for Error {
    fn kind(&self) -> Kind {
        Error::kind(self)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(&e)
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Error {
        Error::Remote {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

impl From<crate::InvalidArgument> for Error {
    fn from(e: crate::InvalidArgument) -> Self {
        Error::InvalidArgument(e.0)
    }
}

impl From<molde_meta::filter::FilterError> for Error {
    fn from(e: molde_meta::filter::FilterError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// Best-effort work (cleanup after a failure, a release nobody waits for)
/// whose failure does not fail the caller, but is never silent.
pub trait OrLog {
    /// Logs the error, if any, as a warning saying what failed.
    fn or_log(self, what: &str);
}

impl<T, E: std::fmt::Display> OrLog for std::result::Result<T, E> {
    fn or_log(self, what: &str) {
        if let Err(e) = self {
            tracing::warn!(error = %e, "{what} failed");
        }
    }
}

/// A service error that knows its kind.
pub trait Classify: std::fmt::Display {
    fn kind(&self) -> Kind;
}

/// A service error as the status a client receives.
pub fn status(e: &impl Classify) -> Status {
    Status::new(e.kind().code(), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_codes_round_trip() {
        for k in [
            Kind::NotFound,
            Kind::AlreadyExists,
            Kind::InvalidArgument,
            Kind::FailedPrecondition,
            Kind::Unavailable,
            Kind::OutOfRange,
            Kind::DataLoss,
            Kind::Unimplemented,
            Kind::PermissionDenied,
            Kind::Unauthenticated,
            Kind::Cancelled,
            Kind::DeadlineExceeded,
            Kind::Internal,
        ] {
            assert_eq!(Kind::of(k.code()), k);
        }
    }
}
