//! containerd's content, images, leases and namespaces services and molde's gc.v1.

use molde_content::{ContentConfig, Shared};

use super::{Service, Wiring, plugin};
use crate::proxy::{ContentName, Forward, GcName, ImagesName, LeasesName, NamespacesName};

pub struct Content;

impl Service for Content {
    fn name(&self) -> &'static str {
        "content"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &["content"]
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
            let mut cc = ContentConfig::new(content_root.clone());
            cc.gc_interval = w.cfg.gc.interval();
            cc.ingest_expiry = w.cfg.gc.ingest_expiry();
            cc.gc_delay = w.cfg.gc.delay();
            cc.snapshotter = Some(molde_api::client::channel(&w.reach("snapshotter")?));
            cc.events = Some(molde_common::events::Publisher::new(molde_api::client::channel(
                &w.own,
            )));
            let shared = Shared::new(store, cc)?;
            tokio::spawn(molde_content::gc::run_scheduler(shared.clone()));
            w.local_content = Some(shared.clone());
            let s = molde_content::servers(shared);
            w.routes
                .add_service(s.content)
                .add_service(s.images)
                .add_service(s.leases)
                .add_service(s.namespaces)
                .add_service(s.gc);
            let root = content_root.display().to_string();
            w.plugins
                .push(plugin("io.containerd.content.v1", "content", &[("root", &root)]));
            for id in ["content", "images", "leases", "namespaces"] {
                w.plugins.push(plugin("io.containerd.grpc.v1", id, &[]));
            }
            w.plugins.push(plugin("io.molde.grpc.v1", "gc", &[]));
            w.hosted.push("content".to_string());
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        let addr = w.reach("content")?;
        w.routes
            .add_service(Forward::<ContentName>::new(&addr))
            .add_service(Forward::<ImagesName>::new(&addr))
            .add_service(Forward::<LeasesName>::new(&addr))
            .add_service(Forward::<NamespacesName>::new(&addr))
            .add_service(Forward::<GcName>::new(&addr));
        for id in ["content", "images", "leases", "namespaces"] {
            w.plugins
                .push(plugin("io.containerd.grpc.v1", id, &[("remote", remote)]));
        }
        w.hosted.push(format!("content (remote {remote})"));
        Ok(())
    }
}
