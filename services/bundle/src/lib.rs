//! What a container's bundle holds, written by molded's runtime (and builder)
//! and read by the shim, and back: each file, record and frame defined once
//! for both sides, with no tokio.
//!
//! - `dir`: the bundle directory and its files (`Bundle`, `Exit`, `Stdio`,
//!   `LogRecord`);
//! - `state`: a container's state read from those files (`State`);
//! - `attach`: the frames attach clients send the shim;
//! - `cgroup`: a container's cgroup as both read it (processes, OOM kills,
//!   typed `Stats`), v1 or v2;
//! - `mount`: mounting a snapshot's mounts (`mounts.json`);
//! - `network`: a container's CNI attachment (`network.json`: `NetworkRecord`,
//!   `CniResult`, `PortMapping`);
//! - `sock`: binding and connecting a bundle's sockets, however long their path.

pub mod attach;
pub mod cgroup;
mod dir;
pub mod mount;
mod network;
pub mod sock;
mod state;

pub use dir::{
    Bundle, ExecFiles, ExecProcess, Exit, HOLD_ABANDON, HOLD_START, Health, HealthCheck, LogOptions,
    LogRecord, STDIN_ATTACH, STDIN_ATTACH_ONCE, Stdio, TaskExec, WORKDIR_OWNER,
};
pub use network::{CniIp, CniResult, Connected, NetworkRecord, PortMapping};
pub use state::State;
