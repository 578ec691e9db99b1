//! The runtime service's state: where bundles live, the shim it starts, and
//! the services it calls. Its operations are in `run` (runtime.v1),
//! `lifecycle` (list, kill, stop, wait, remove), `tasks` (containerd's
//! tasks.v1) and `containers` (containers.v1), each on this one type.

use std::path::PathBuf;
use std::sync::Arc;

use molde_meta::Store;
use tonic::transport::Channel;

/// The runtime name container records carry.
pub const RUNTIME_NAME: &str = "io.molde.shim.v1";

#[derive(Clone)]
pub struct RuntimeService {
    pub(crate) store: Arc<dyn Store>,
    /// Reaches images.v1 and content.v1.
    pub(crate) content: Channel,
    pub(crate) snapshotter: Channel,
    /// `<state>/runtime`
    pub(crate) state: PathBuf,
    pub(crate) shim: PathBuf,
    pub(crate) volumes: PathBuf,
    pub(crate) cni: Arc<crate::network::Cni>,
    /// Host ports published containers hold.
    pub(crate) ports: Arc<crate::ports::HostPorts>,
    pub(crate) events: crate::events::Publisher,
}

impl RuntimeService {
    /// A container's bundle directory, `<state>/runtime/<ns>/<id>`.
    pub(crate) fn bundle_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(ns).join(id)
    }
}
