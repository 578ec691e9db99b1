//! The kinds of failure molde's services report, and their one mapping to
//! gRPC codes, as containerd's errdefs: a client branches on the code
//! (NotFound, AlreadyExists, ...), whichever service answered. Each service's
//! error type says which kind each of its errors is (`Kind::of`), and turns
//! into a `Status` here (`status`).

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
