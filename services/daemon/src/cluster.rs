//! This node in its cluster: membership in etcd, and the peer listener
//! other nodes read content through (node certificates may only read).

use std::sync::Arc;

use anyhow::{Context, bail};
use molde_api::client::Address;
use molde_api::containerd::services::content::v1::content_server::ContentServer;
use molde_meta::Store;

use crate::config::Config;
use crate::info;

/// Joins the cluster `[cluster]` names, if any: registers this node in etcd
/// and keeps it registered (an etcd that is down now is retried, and every
/// local service works meanwhile).
pub fn cluster_membership(
    cfg: &Config,
    store: Option<Arc<dyn Store>>,
) -> anyhow::Result<Option<(Arc<molde_cluster::Membership>, molde_cluster::Registration)>> {
    if cfg.cluster.etcd.is_empty() {
        return Ok(None);
    }
    let name = if cfg.cluster.node_name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name for --node-name")?
            .trim()
            .to_string()
    } else {
        cfg.cluster.node_name.clone()
    };
    molde_cluster::check_node_name(&name).map_err(anyhow::Error::msg)?;
    if cfg.cluster.advertise.is_empty() {
        bail!("[cluster] advertise (or --advertise HOST:PORT) is needed to join a cluster");
    }
    let tls = cfg.cluster.etcd_ca.is_some() || cfg.cluster.etcd_cert.is_some();
    for u in &cfg.cluster.etcd {
        match (u.split_once("://").map(|(s, _)| s), tls) {
            (Some("http"), false) | (Some("https"), true) => {}
            (Some("https"), false) => {
                bail!(
                    "[cluster] etcd endpoint {u:?}: https needs etcd_ca (--etcd-ca), and etcd_cert/etcd_key for client-cert-auth"
                )
            }
            (Some("http"), true) => bail!("[cluster] etcd endpoint {u:?}: TLS is configured, use https://"),
            _ => bail!("[cluster] etcd endpoint {u:?}: expected http://HOST:PORT or https://HOST:PORT"),
        }
    }
    let password = match &cfg.cluster.etcd_password_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("[cluster] etcd_password_file {}", p.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    let access = molde_meta::EtcdAccess {
        ca: cfg.cluster.etcd_ca.clone(),
        cert: cfg.cluster.etcd_cert.clone(),
        key: cfg.cluster.etcd_key.clone(),
        user: cfg.cluster.etcd_user.clone(),
        password,
    };
    let etcd = Arc::new(molde_meta::EtcdStore::connect_with(&cfg.cluster.etcd, &access)?);
    let images: molde_cluster::membership::ImageCount = match store.clone() {
        Some(s) => Box::new(move || molde_content::records::image_count(&*s)),
        None => Box::new(|| 0),
    };
    let blobs: molde_cluster::membership::LocalBlobs = match store {
        Some(s) => Box::new(move || molde_content::records::local_blobs(&*s).into_iter().collect()),
        None => Box::new(Default::default),
    };
    let cache_dir = cfg.root.join("build-cache");
    let build_cache: molde_cluster::membership::LocalBuildCache = Box::new(move || {
        molde_builder::service::local_cache_records(&cache_dir)
            .into_iter()
            .collect()
    });
    Ok(Some((
        molde_cluster::Membership::new(etcd, name, cfg.cluster.advertise.clone()),
        molde_cluster::Registration {
            version: info::VERSION.to_string(),
            root: cfg.root.clone(),
            images,
            index: molde_cluster::membership::Index { blobs, build_cache },
        },
    )))
}

/// The gRPC path prefix of containerd's content service.
const CONTENT_PATH: &str = "/containerd.services.content.v1.Content/";

/// What the peer role may call: content reads (layers, build-cache layers)
/// and image lookups (`--cluster-resolve`). Everything else needs an admin
/// certificate.
const PEER_CALLS: &[&str] = &[
    "/containerd.services.content.v1.Content/Read",
    "/containerd.services.content.v1.Content/Info",
    "/containerd.services.images.v1.Images/Get",
    // Whether the node serves (grpc.health.v1).
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Whether the holder of a certificate may make a call on this node: not
/// with a revoked certificate, and only the peer calls with a node's.
fn peer_may(
    membership: &molde_cluster::Membership,
    who: &molde_cluster::certs::Presented,
    path: &str,
) -> Result<(), tonic::Status> {
    if membership.is_revoked(&who.serial) {
        return Err(tonic::Status::permission_denied(format!(
            "the certificate of {} (serial {}) is revoked",
            who.name, who.serial
        )));
    }
    match who.role {
        molde_cluster::certs::Role::Admin => Ok(()),
        molde_cluster::certs::Role::Peer if PEER_CALLS.contains(&path) => Ok(()),
        role => Err(tonic::Status::permission_denied(format!(
            "{} presents a certificate with the {} role, which may not call {path}: \
             that needs an admin certificate (molde cluster join --admin NAME, then --cluster-identity NAME)",
            who.name,
            role.name()
        ))),
    }
}

/// Serves this node's API to its peers on its advertise address, over
/// mutual TLS under the cluster's CA: every call is forwarded to this
/// molded's own socket (`molde --node`, and content reads for peer pulls).
pub async fn serve_peers(
    dir: &std::path::Path,
    membership: Arc<molde_cluster::Membership>,
    advertise: &str,
    own: &Address,
    content: Option<ContentServer<molde_content::content::ContentService>>,
) -> anyhow::Result<()> {
    let name = &membership.name;
    let id = molde_cluster::certs::Identity::load(dir, name).map_err(|e| {
        anyhow::anyhow!(
            "[cluster] certs: {e} (molde cluster join --dir {} --node-name {name})",
            dir.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(advertise)
        .await
        .with_context(|| format!("listening for peers on {advertise}"))?;
    let mut incoming = molde_cluster::peer::incoming(listener, &id).map_err(anyhow::Error::msg)?;
    let local = molde_api::client::channel(own);
    tokio::spawn(async move {
        while let Some(Ok(peer)) = incoming.recv().await {
            let (local, content, membership) = (local.clone(), content.clone(), membership.clone());
            // Who connected, from the certificate the handshake verified.
            let Some(who) = peer.presented() else {
                tracing::warn!("a peer's certificate could not be read; its connection ends");
                continue;
            };
            let who = Arc::new(who);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (local, content, membership, who) =
                        (local.clone(), content.clone(), membership.clone(), who.clone());
                    async move {
                        if let Err(refused) = peer_may(&membership, &who, req.uri().path()) {
                            return Ok(refused.into_http());
                        }
                        let req = req.map(tonic::body::Body::new);
                        // Content reads, what peers ask most (a layer's bytes), are
                        // answered here when this process holds content; the rest
                        // goes to this molded's socket.
                        if let Some(content) = content
                            && req.uri().path().starts_with(CONTENT_PATH)
                        {
                            let content = tower::Layer::layer(&crate::rpclog::RpcLog, content);
                            return Ok(tower::ServiceExt::oneshot(content, req)
                                .await
                                .unwrap_or_else(|e| match e {}));
                        }
                        match tower::ServiceExt::oneshot(local, req).await {
                            Ok(resp) => Ok::<_, std::convert::Infallible>(resp),
                            Err(e) => Ok(tonic::Status::unavailable(format!("this molded: {e}")).into_http()),
                        }
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .initial_stream_window_size(molde_api::client::STREAM_WINDOW)
                    .initial_connection_window_size(molde_api::client::CONNECTION_WINDOW)
                    .max_frame_size(molde_api::client::MAX_FRAME)
                    .max_header_list_size(molde_api::client::MAX_HEADER_LIST)
                    .serve_connection(hyper_util::rt::TokioIo::new(peer), svc);
                if let Err(e) = conn.await {
                    tracing::debug!("a peer connection ended: {e}");
                }
            });
        }
    });
    Ok(())
}
