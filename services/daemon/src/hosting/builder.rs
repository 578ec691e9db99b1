//! molde's builder.v1; it cleans up after an earlier molded once it serves.

use std::sync::Arc;

use super::{Service, Wiring, content_store, plugin};
use crate::cluster_cache;
use crate::proxy::{BuilderName, Forward};

pub struct Builder;

impl Service for Builder {
    fn name(&self) -> &'static str {
        "builder"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &["build-cache", "build-cache-mounts"]
    }

    fn state_dirs(&self) -> &'static [&'static str] {
        &["build"]
    }

    fn needs_store(&self) -> bool {
        false
    }

    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let builder = molde_builder::service::BuilderService {
                content: molde_api::client::channel(&w.reach("content")?),
                transfer: molde_api::client::channel(&w.reach("transfer")?),
                snapshotter: molde_api::client::channel(&w.reach("snapshotter")?),
                runtime: molde_api::client::channel(&w.reach("runtime")?),
                scratch: w.cfg.state.join("build"),
                cache: w.cfg.root.join("build-cache"),
                cache_mounts: w.cfg.root.join("build-cache-mounts"),
                cache_max_bytes: w.cfg.builder.cache_max_bytes,
                entitlements: w.cfg.builder.entitlements.clone(),
                recovering: Default::default(),
                shared_cache: match &w.peers {
                    Some(p) => Some(Arc::new(cluster_cache::ClusterBuildCache {
                        peers: p.clone(),
                        content: content_store(&w.local_content, &w.reach("content")?),
                    })),
                    None => None,
                },
            };
            let guard = builder
                .recovering
                .clone()
                .try_write_owned()
                .expect("nothing holds a new lock");
            w.recover = Some((builder.clone(), guard));
            w.routes.add_service(
                molde_api::molde::services::builder::v1::builder_server::BuilderServer::new(builder)
                    // A context sent as a tar comes in one message.
                    .max_decoding_message_size(1 << 30),
            );
            w.plugins.push(plugin("io.molde.grpc.v1", "builder", &[]));
            w.hosted.push("builder".to_string());
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        w.routes
            .add_service(Forward::<BuilderName>::new(&w.reach("builder")?));
        w.plugins
            .push(plugin("io.molde.grpc.v1", "builder", &[("remote", remote)]));
        w.hosted.push(format!("builder (remote {remote})"));
        Ok(())
    }
}
