//! The services molded can host, each registered once: its name (as
//! `--service` and `--remote` spell it), the directories it owns under the
//! root and the state directory, whether it needs the metadata store, how
//! it is hosted (its routes, its plugin entries for introspection) and how
//! it is forwarded in split mode. `run` in main.rs iterates [`SERVICES`];
//! adding a service is its module here and one line in that list.

mod builder;
mod content;
mod cri;
mod runtime;
mod snapshotter;
mod transfer;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use molde_api::client::Address;
use molde_content::Shared;
use molde_meta::Store;
use tonic::service::RoutesBuilder;

use crate::config::Config;
use crate::info::PluginInfo;

/// One service molded can host or forward.
pub trait Service: Sync {
    fn name(&self) -> &'static str;
    /// Directories under the root it fills (sealed owner-only before it starts).
    fn root_dirs(&self) -> &'static [&'static str];
    /// Directories under the state directory it fills.
    fn state_dirs(&self) -> &'static [&'static str];
    /// Whether it keeps records in the metadata store.
    fn needs_store(&self) -> bool;
    /// Hosts it in this process.
    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> BoxFuture<'a, anyhow::Result<()>>;
    /// Forwards its requests to the molded at `remote` (split mode).
    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()>;
}

/// Every service, in the order they are wired: content first (the transfer
/// service and the builder use its store in-process), the CRI last (it
/// calls all the others).
pub static SERVICES: &[&dyn Service] = &[
    &content::Content,
    &transfer::Transfer,
    &snapshotter::Snapshotter,
    &runtime::Runtime,
    &builder::Builder,
    &cri::Cri,
];

/// The CRI's own server, socket and state, served once the others are.
pub struct CriServing {
    pub server: tonic::transport::server::Router<crate::rpclog::Layers>,
    pub listener: tokio::net::UnixListener,
    pub socket: crate::listener::SocketGuard,
    pub cri: Arc<molde_cri::Cri>,
}

/// What the services are wired into, and what they leave for each other.
pub struct Wiring<'c> {
    pub cfg: &'c Config,
    /// This molded's own socket.
    pub own: Address,
    pub store: Option<Arc<dyn Store>>,
    pub routes: RoutesBuilder,
    pub plugins: Vec<PluginInfo>,
    /// What the start-up line reports.
    pub hosted: Vec<String>,
    /// The content service's state, when this process hosts it.
    pub local_content: Option<Arc<Shared>>,
    /// The other nodes of this node's cluster, if it is in one.
    pub peers: Option<Arc<molde_cluster::peers::Peers>>,
    /// The builder, and the lock it holds until it has cleaned up.
    pub recover: Option<(
        molde_builder::service::BuilderService,
        tokio::sync::OwnedRwLockWriteGuard<()>,
    )>,
    pub cri: Option<CriServing>,
}

impl Wiring<'_> {
    /// How this process reaches `service`: itself, or a remote molded.
    pub fn reach(&self, service: &str) -> anyhow::Result<Address> {
        match self.cfg.remote.get(service) {
            Some(r) => Address::parse(r).map_err(|e| anyhow::anyhow!("remote {service}: {e}")),
            None => Ok(self.own.clone()),
        }
    }

    /// The metadata store (opened when a hosted service needs it).
    pub fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        self.store
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the metadata store is not open"))
    }
}

pub fn plugin(kind: &'static str, id: &'static str, exports: &[(&str, &str)]) -> PluginInfo {
    PluginInfo {
        kind,
        id,
        exports: exports
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

/// The content store as this process reaches it: its own, or the content
/// service's through its gRPC APIs.
pub fn content_store(
    local: &Option<Arc<Shared>>,
    remote: &Address,
) -> Arc<dyn molde_common::store::ContentStore> {
    match local {
        Some(shared) => Arc::new(molde_content::LocalStore::new(shared.clone())),
        None => Arc::new(molde_transfer::remote::RemoteStore::new(
            molde_api::client::channel(remote),
        )),
    }
}
