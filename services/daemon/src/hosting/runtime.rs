//! containerd's containers and tasks services and molde's runtime.v1; it publishes the events.

use std::path::PathBuf;

use super::{Service, Wiring, plugin};
use crate::proxy::{ContainersName, EventsName, Forward, RuntimeName, TasksName};

pub struct Runtime;

impl Service for Runtime {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &["volumes"]
    }

    fn state_dirs(&self) -> &'static [&'static str] {
        &["runtime", "netns"]
    }

    fn needs_store(&self) -> bool {
        true
    }

    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let store = w.store()?;
            let shim = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("molde-shim")))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("molde-shim"));
            let s = molde_runtime::servers(
                store,
                molde_runtime::RuntimeConfig {
                    state: w.cfg.state.join("runtime"),
                    shim,
                    volumes: w.cfg.root.join("volumes"),
                    networks: w.cfg.root.join("networks"),
                    cni_bin_dir: PathBuf::from("/usr/lib/cni"),
                    netns_dir: w.cfg.state.join("netns"),
                    content: molde_api::client::channel(&w.reach("content")?),
                    snapshotter: molde_api::client::channel(&w.reach("snapshotter")?),
                    events: molde_api::client::channel(&w.own),
                },
            );
            w.routes
                .add_service(s.containers)
                .add_service(s.runtime)
                .add_service(s.tasks);
            w.plugins.push(plugin("io.containerd.grpc.v1", "containers", &[]));
            w.plugins.push(plugin("io.containerd.grpc.v1", "tasks", &[]));
            w.plugins.push(plugin("io.molde.grpc.v1", "runtime", &[]));
            w.hosted.push("runtime".to_string());
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        let addr = w.reach("runtime")?;
        w.routes
            .add_service(Forward::<ContainersName>::new(&addr))
            .add_service(Forward::<TasksName>::new(&addr))
            .add_service(Forward::<RuntimeName>::new(&addr))
            // The runtime publishes the events (containers, tasks).
            .add_service(Forward::<EventsName>::new(&addr));
        for (kind, id) in [
            ("io.containerd.grpc.v1", "containers"),
            ("io.containerd.grpc.v1", "tasks"),
            ("io.molde.grpc.v1", "runtime"),
        ] {
            w.plugins.push(plugin(kind, id, &[("remote", remote)]));
        }
        w.hosted.push(format!("runtime (remote {remote})"));
        Ok(())
    }
}
