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
    /// The shim started ahead of the next container.
    pub(crate) spares: Arc<crate::spare::Spares>,
    pub(crate) volumes: PathBuf,
    pub(crate) cni: Arc<crate::network::Cni>,
    /// Host ports published containers hold.
    pub(crate) ports: Arc<crate::ports::HostPorts>,
    pub(crate) events: molde_common::events::Publisher,
    /// Containers a start is under way for.
    pub(crate) starting: Arc<Starting>,
    /// The user networks' DNS servers.
    pub(crate) dns: Arc<crate::dns::Dns>,
    /// Containers whose health checks run.
    pub(crate) health: Arc<crate::run::Watching>,
    /// Containers waiting out their restart policy's back-off (`ns/id`):
    /// `ps` shows them Restarting, as docker does.
    pub(crate) restarting: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// The containers being started: one start at a time per container.
#[derive(Default)]
pub(crate) struct Starting(std::sync::Mutex<std::collections::HashSet<String>>);

/// Held while a container starts; lets the next start in when dropped.
pub(crate) struct StartClaim<'a>(&'a Starting, String);

impl Starting {
    pub(crate) fn claim(&self, ns: &str, id: &str) -> Result<StartClaim<'_>, molde_common::errdefs::Error> {
        let key = format!("{ns}/{id}");
        if !self.0.lock().expect("starting set").insert(key.clone()) {
            return Err(molde_common::errdefs::Error::FailedPrecondition(format!(
                "container {id:?} is being started"
            )));
        }
        Ok(StartClaim(self, key))
    }
}

impl Drop for StartClaim<'_> {
    fn drop(&mut self) {
        self.0.0.lock().expect("starting set").remove(&self.1);
    }
}

impl RuntimeService {
    /// A container's bundle directory, `<state>/runtime/<ns>/<id>`.
    pub(crate) fn bundle_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(ns).join(id)
    }
}
