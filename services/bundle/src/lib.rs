//! What a container's bundle holds, written by molded's runtime (and builder)
//! and read by the shim, and back: each file, record and frame defined once
//! for both sides, with no tokio.
//!
//! - `dir`: the bundle directory and its files (`Bundle`, `Exit`, `Stdio`,
//!   `LogRecord`);
//! - `state`: a container's state read from those files (`State`);
//! - `attach`: the frames attach clients send the shim;
//! - `mount`: mounting a snapshot's mounts (`mounts.json`);
//! - `sock`: binding and connecting a bundle's sockets, however long their path.

pub mod attach;
mod dir;
pub mod mount;
pub mod sock;
mod state;

pub use dir::{
    Bundle, ExecProcess, Exit, HOLD_ABANDON, HOLD_START, LogRecord, STDIN_ATTACH, STDIN_ATTACH_ONCE, Stdio,
    TaskExec, WORKDIR_OWNER,
};
pub use state::State;
