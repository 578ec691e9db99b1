//! containerd's snapshots and diff services.

use super::{Service, Wiring, plugin};
use crate::proxy::{DiffName, Forward, SnapshotsName};

pub struct Snapshotter;

impl Service for Snapshotter {
    fn name(&self) -> &'static str {
        "snapshotter"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &["snapshots"]
    }

    fn state_dirs(&self) -> &'static [&'static str] {
        &[]
    }

    fn needs_store(&self) -> bool {
        true
    }

    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let store = w.store()?;
            let content_root = w.cfg.root.join("content");
            let snap_root = w.cfg.root.join("snapshots");
            let snapshotter = molde_snapshotter::Snapshotter::new(store, &snap_root)?;
            // The named fast path: with content in this process, layers are read
            // from the blob files instead of through content.v1 Read.
            let local =
                (w.cfg.hosts("content") && w.cfg.snapshotter.content_fast_path).then(|| content_root.clone());
            let content = molde_snapshotter::ContentAccess::new(
                molde_api::client::channel(&w.reach("content")?),
                local,
            );
            let s = molde_snapshotter::servers(snapshotter, content);
            w.routes.add_service(s.snapshots).add_service(s.diff);
            for d in ["overlayfs", "native"] {
                let root = snap_root.join(d).display().to_string();
                w.plugins
                    .push(plugin("io.containerd.snapshotter.v1", d, &[("root", &root)]));
            }
            w.plugins.push(plugin("io.containerd.grpc.v1", "snapshots", &[]));
            w.plugins.push(plugin("io.containerd.grpc.v1", "diff", &[]));
            w.hosted.push("snapshotter".to_string());
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        let addr = w.reach("snapshotter")?;
        w.routes
            .add_service(Forward::<SnapshotsName>::new(&addr))
            .add_service(Forward::<DiffName>::new(&addr));
        for id in ["snapshots", "diff"] {
            w.plugins
                .push(plugin("io.containerd.grpc.v1", id, &[("remote", remote)]));
        }
        w.hosted.push(format!("snapshotter (remote {remote})"));
        Ok(())
    }
}
