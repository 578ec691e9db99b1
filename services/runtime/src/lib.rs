//! molde's runtime service.
//!
//! `containers.rs` serves containerd's containers.v1: container records (spec,
//! image, runtime, rootfs snapshot, labels, extensions) kept in the metadata
//! store. Tasks and the per-container shims come next.

mod bridge;
mod bundle_wait;
pub mod containers;
mod dns;
mod image;
mod lifecycle;
pub mod network;
pub mod networks;
mod ports;
mod restart;
pub mod run;
mod service;
mod spare;
mod spec;
pub mod systemd;
mod task_metrics;
mod tasks;
mod user;
pub mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

use molde_api::containerd::services::containers::v1::containers_server::ContainersServer;
use molde_api::molde::services::runtime::v1::runtime_server::RuntimeServer;
use molde_meta::Store;
use tonic::transport::Channel;

/// The runtime service's gRPC servers.
pub struct Servers {
    pub containers: ContainersServer<containers::ContainersService>,
    pub runtime: RuntimeServer<service::RuntimeService>,
    pub tasks: molde_api::containerd::services::tasks::v1::tasks_server::TasksServer<service::RuntimeService>,
}

/// Where the runtime keeps bundles, and how it reaches what it needs.
pub struct RuntimeConfig {
    /// `<state>/runtime`: one bundle directory per container.
    pub state: PathBuf,
    /// The `molde-shim` binary.
    pub shim: PathBuf,
    /// Named volumes live in `<volumes>/<name>/_data`.
    pub volumes: PathBuf,
    /// CNI plugin binaries (containernetworking-plugins).
    pub cni_bin_dir: PathBuf,
    /// Where network namespaces are pinned.
    pub netns_dir: PathBuf,
    /// Where user networks' records and conflists are kept.
    pub networks: PathBuf,
    /// Reaches events.v1, where container and task events go.
    pub events: Channel,
    /// Reaches images.v1 and content.v1.
    pub content: Channel,
    pub snapshotter: Channel,
}

pub fn servers(store: Arc<dyn Store>, cfg: RuntimeConfig) -> Servers {
    let events = molde_common::events::Publisher::new(cfg.events);
    let rt = service::RuntimeService {
        events: events.clone(),
        store: store.clone(),
        content: cfg.content,
        snapshotter: cfg.snapshotter,
        cni: Arc::new(network::Cni {
            bin_dir: cfg.cni_bin_dir,
            netns_dir: cfg.netns_dir,
            networks: networks::Networks::new(cfg.networks),
        }),
        ports: Arc::default(),
        starting: Arc::default(),
        dns: Arc::new(dns::Dns::new(cfg.state.clone())),
        health: Arc::default(),
        restarting: Arc::default(),
        spares: spare::Spares::new(cfg.shim.clone(), cfg.state.join(".libcontainer")),
        state: cfg.state,
        shim: cfg.shim,
        volumes: cfg.volumes,
    };
    rt.hold_published_ports();
    rt.cni.networks.isolate_all();
    for n in rt.cni.networks.list().unwrap_or_default() {
        rt.dns.serve(&n);
    }
    rt.restart_at_boot();
    // Health checks of the containers that ran on while molded was away.
    for (ns, c) in rt.all_records() {
        if rt.observe(&ns, &c.id).state == "running" {
            rt.watch_health(&ns, &c.id);
        }
    }
    tokio::spawn(run::watch_exits(rt.clone()));
    Servers {
        containers: ContainersServer::new(containers::ContainersService { store, events })
            .max_decoding_message_size(16 << 20),
        tasks: molde_api::containerd::services::tasks::v1::tasks_server::TasksServer::new(rt.clone()),
        runtime: RuntimeServer::new(rt),
    }
}
