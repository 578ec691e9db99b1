//! molde's transfer.v1: pull, push, save, load.

use super::{Service, Wiring, content_store, plugin};
use crate::proxy::{Forward, TransferName};

pub struct Transfer;

impl Service for Transfer {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &[]
    }

    fn state_dirs(&self) -> &'static [&'static str] {
        &[]
    }

    fn needs_store(&self) -> bool {
        false
    }

    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let content = content_store(&w.local_content, &w.reach("content")?);
            let mut transfer = molde_transfer::TransferService::new(
                content,
                molde_api::client::channel(&w.reach("snapshotter")?),
                molde_transfer::TransferConfig {
                    hosts_dir: w.cfg.hosts_dir(),
                    parallel: w.cfg.transfer.parallel,
                },
            );
            transfer = transfer.with_events(molde_common::events::Publisher::new(
                molde_api::client::channel(&w.own),
            ));
            if let Some(p) = &w.peers {
                transfer = transfer.with_peers(p.clone(), w.cfg.cluster.resolve);
            }
            w.routes.add_service(
                molde_api::molde::services::transfer::v1::transfer_server::TransferServer::new(transfer),
            );
            w.plugins.push(plugin("io.molde.grpc.v1", "transfer", &[]));
            w.hosted.push("transfer".to_string());
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        w.routes
            .add_service(Forward::<TransferName>::new(&w.reach("transfer")?));
        w.plugins
            .push(plugin("io.molde.grpc.v1", "transfer", &[("remote", remote)]));
        w.hosted.push(format!("transfer (remote {remote})"));
        Ok(())
    }
}
