//! Kubernetes' CRI runtime and image services, on a socket of their own for the kubelet, and the streaming server; never forwarded.

use anyhow::{Context, bail};
use molde_api::client::Address;
use tonic::transport::Server;

use super::{CriServing, Service, Wiring, plugin};
use crate::listener;

pub struct Cri;

impl Service for Cri {
    fn name(&self) -> &'static str {
        "cri"
    }

    fn root_dirs(&self) -> &'static [&'static str] {
        &[]
    }

    fn state_dirs(&self) -> &'static [&'static str] {
        &["cri"]
    }

    fn needs_store(&self) -> bool {
        true
    }

    fn host<'a>(&'a self, w: &'a mut Wiring<'_>) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let store = w.store()?;
            let pod_init = std::env::current_exe().context("finding molded's own binary for pod-init")?;
            let c = molde_cri::Cri::new(
                molde_cri::CriConfig {
                    state: w.cfg.state.join("cri"),
                    cni_conf_dir: w.cfg.cri.cni_conf_dir.clone(),
                    cni_bin_dirs: w.cfg.cri.cni_bin_dirs.clone(),
                    cgroup_driver: w.cfg.cri.cgroup_driver.clone(),
                    pod_init,
                },
                molde_cri::Channels {
                    content: molde_api::client::channel(&w.reach("content")?),
                    transfer: molde_api::client::channel(&w.reach("transfer")?),
                    snapshotter: molde_api::client::channel(&w.reach("snapshotter")?),
                    runtime: molde_api::client::channel(&w.reach("runtime")?),
                },
                store,
            );
            let cri_address = Address::parse(&w.cfg.cri_address())?;
            let Address::Unix(cri_path) = &cri_address;
            let (l, guard) = listener::bind(cri_path)?;
            let tls = match (&w.cfg.cri.stream_tls_cert, &w.cfg.cri.stream_tls_key) {
                (Some(cert), Some(key)) => Some(molde_cri::stream::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                (None, None) => None,
                _ => bail!("[cri] stream_tls_cert and stream_tls_key go together"),
            };
            let streaming =
                molde_cri::stream::serve(c.clone(), &w.cfg.cri.stream_address, w.cfg.cri.stream_port, tls)
                    .await
                    .context("starting the CRI streaming server")?;
            let state = c.clone();
            let s = molde_cri::servers(c);
            let server = Server::builder()
                .layer(crate::rpclog::RpcLog)
                .http2_max_header_list_size(molde_api::client::MAX_HEADER_LIST)
                .add_service(s.runtime)
                .add_service(s.image);
            w.plugins.push(plugin(
                "io.containerd.grpc.v1",
                "cri",
                &[
                    ("address", &cri_address.to_string()),
                    ("stream_address", &streaming.to_string()),
                ],
            ));
            w.hosted
                .push(format!("cri ({cri_address}, streaming on {streaming})"));
            w.cri = Some(CriServing {
                server,
                listener: l,
                socket: guard,
                cri: state,
            });
            Ok(())
        })
    }

    fn forward(&self, w: &mut Wiring<'_>, remote: &str) -> anyhow::Result<()> {
        let _ = (w, remote);
        Ok(())
    }
}
