//! The snapshotter's errors are molde's one error type (`molde_common::errdefs`),
//! which maps them to gRPC codes at the service edge.

pub use molde_common::errdefs::{Error as SnapshotError, Result};
