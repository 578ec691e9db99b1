//! molded: hosts molde's services on a unix socket.
//!
//! With no configuration it hosts every service on `/run/molde/molde.sock`, with
//! metadata and blobs under `/var/lib/molde`. `--service` narrows what this
//! process hosts; `--remote SERVICE=ADDRESS` (or `[remote]` in the config)
//! forwards a service to another molded (split mode).

mod cluster_cache;
mod config;
mod events;
mod info;
mod listener;
mod perms;
mod proxy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use molde_api::client::Address;
use molde_api::containerd::services::content::v1::content_server::ContentServer;
use molde_api::containerd::services::{
    introspection::v1::introspection_server::IntrospectionServer, version::v1::version_server::VersionServer,
};
use molde_content::{ContentConfig, Shared};
use molde_meta::{RedbStore, Store};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::config::Config;
use crate::info::{IntrospectionService, PluginInfo, VersionService};
use crate::proxy::{
    BuilderName, ContainersName, ContentName, DiffName, EventsName, Forward, GcName, ImagesName, LeasesName,
    NamespacesName, RuntimeName, SnapshotsName, TasksName, TransferName,
};

#[derive(Debug, Parser)]
#[command(name = "molded", version = info::VERSION, about = "The molde daemon")]
struct Args {
    /// Configuration file [default: /etc/molde/config.toml, if present]
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for persistent state (metadata, blobs)
    #[arg(long)]
    root: Option<PathBuf>,
    /// Directory for runtime state
    #[arg(long)]
    state: Option<PathBuf>,
    /// Unix socket to serve on
    #[arg(long)]
    address: Option<String>,
    /// Host only this service (repeatable); the default hosts all of them
    #[arg(long = "service", value_name = "NAME")]
    services: Vec<String>,
    /// Reach SERVICE at ADDRESS instead of hosting it (split mode), e.g. content=/run/molde/content.sock
    #[arg(long = "remote", value_name = "SERVICE=ADDRESS")]
    remotes: Vec<String>,
    /// Join a cluster: etcd=http://HOST:2379[,...]
    #[arg(long, value_name = "etcd=URL[,URL...]")]
    cluster: Option<String>,
    /// This node's name in the cluster [default: the host name]
    #[arg(long)]
    node_name: Option<String>,
    /// Where this node's peers reach it (HOST:PORT)
    #[arg(long)]
    advertise: Option<String>,
    /// The cluster's CA and this node's certificate (molde cluster init|join)
    #[arg(long)]
    cluster_certs: Option<PathBuf>,
    /// Every pull resolves a tag the cluster holds when the registry cannot be reached
    #[arg(long)]
    cluster_resolve: bool,
    /// The CA of etcd's certificate (https:// endpoints)
    #[arg(long)]
    etcd_ca: Option<PathBuf>,
    /// This node's client certificate for etcd
    #[arg(long)]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert
    #[arg(long)]
    etcd_key: Option<PathBuf>,
}

fn config(args: Args) -> anyhow::Result<Config> {
    let mut c = Config::load(args.config.as_deref())?;
    if let Some(r) = args.root {
        c.root = r;
    }
    if let Some(s) = args.state {
        c.state = s;
    }
    if let Some(a) = args.address {
        c.address = a;
    }
    if !args.services.is_empty() {
        c.services = args.services;
    }
    if let Some(cl) = args.cluster {
        let urls = cl
            .strip_prefix("etcd=")
            .with_context(|| format!("--cluster {cl:?}: expected etcd=URL[,URL...]"))?;
        c.cluster.etcd = urls
            .split(',')
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
    }
    if let Some(n) = args.node_name {
        c.cluster.node_name = n;
    }
    if let Some(a) = args.advertise {
        c.cluster.advertise = a;
    }
    if let Some(d) = args.cluster_certs {
        c.cluster.certs = Some(d);
    }
    c.cluster.resolve |= args.cluster_resolve;
    if let Some(p) = args.etcd_ca {
        c.cluster.etcd_ca = Some(p);
    }
    if let Some(p) = args.etcd_cert {
        c.cluster.etcd_cert = Some(p);
    }
    if let Some(p) = args.etcd_key {
        c.cluster.etcd_key = Some(p);
    }
    for r in args.remotes {
        let (svc, addr) = r
            .split_once('=')
            .with_context(|| format!("--remote {r:?}: expected SERVICE=ADDRESS"))?;
        c.remote.insert(svc.to_string(), addr.to_string());
    }
    c.validate()?;
    Ok(c)
}

fn main() -> std::process::ExitCode {
    // The init of a pod's shared PID namespace (molde's own holder, no pause image).
    if std::env::args().nth(1).as_deref() == Some("pod-init") {
        molde_cri::sandbox::pod_init_main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // An error is said once, with its causes, without a backtrace.
    let fail = |e: anyhow::Error| {
        tracing::error!("{e:#}");
        std::process::ExitCode::FAILURE
    };
    let cfg = match config(Args::parse()) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("starting the async runtime")),
    };
    let res = rt.block_on(run(cfg));
    // Don't wait for blocking threads still reading a stream from a gone client.
    rt.shutdown_timeout(Duration::from_secs(1));
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    for d in [&cfg.root, &cfg.state] {
        perms::top(d)?;
    }
    // Before any hosted service writes there: the directories they fill, owner-only.
    let mut root_dirs = Vec::new();
    let mut state_dirs = Vec::new();
    if cfg.hosts("content") {
        root_dirs.push("content");
    }
    if cfg.hosts("snapshotter") {
        root_dirs.push("snapshots");
    }
    if cfg.hosts("runtime") {
        root_dirs.push("volumes");
        state_dirs.extend(["runtime", "netns"]);
    }
    if cfg.hosts("builder") {
        root_dirs.extend(["build-cache", "build-cache-mounts"]);
        state_dirs.push("build");
    }
    if cfg.hosts("cri") {
        state_dirs.push("cri");
    }
    perms::seal(&cfg.root, &root_dirs, &[])?;
    perms::seal(&cfg.state, &state_dirs, &[])?;
    let address = Address::parse(&cfg.address)?;
    let Address::Unix(sock_path) = &address;
    let (listener, socket) = listener::bind(sock_path)?;
    let uuid = info::load_uuid(&cfg.root)?;

    let mut router = Server::builder()
        .initial_stream_window_size(molde_api::client::STREAM_WINDOW)
        .initial_connection_window_size(molde_api::client::CONNECTION_WINDOW)
        .max_frame_size(molde_api::client::MAX_FRAME)
        .http2_max_header_list_size(molde_api::client::MAX_HEADER_LIST)
        .add_routes(Default::default());
    let mut plugins = vec![
        plugin("io.containerd.grpc.v1", "version", &[]),
        plugin("io.containerd.grpc.v1", "introspection", &[]),
        plugin("io.containerd.grpc.v1", "events", &[]),
    ];
    let mut hosted = Vec::new();
    // The builder cleans up after an earlier molded once it serves.
    let mut recover = None;

    let store =
        if cfg.hosts("content") || cfg.hosts("snapshotter") || cfg.hosts("runtime") || cfg.hosts("cri") {
            let meta_path = cfg.root.join("meta.redb");
            let store: Arc<dyn Store> = Arc::new(RedbStore::open(&meta_path).with_context(|| {
                format!(
                    "opening metadata {} (is another molded using root {}?)",
                    meta_path.display(),
                    cfg.root.display()
                )
            })?);
            Some(store)
        } else {
            None
        };
    // How this process reaches each service: itself, or a remote molded.
    let own = address.clone();
    let reach = |service: &str| -> anyhow::Result<Address> {
        match cfg.remote.get(service) {
            Some(r) => Address::parse(r).map_err(|e| anyhow::anyhow!("remote {service}: {e}")),
            None => Ok(own.clone()),
        }
    };
    let content_root = cfg.root.join("content");
    // The content service's state, when this process hosts it.
    let mut local_content = None;
    // This node in its cluster, and the peers it takes layers from.
    // Registered last, once every listener is bound (`join` below).
    let (membership, registration) = match cluster_membership(&cfg, store.clone())? {
        Some((m, r)) => (Some(m), Some(r)),
        None => (None, None),
    };
    let peers: Option<Arc<molde_cluster::peers::Peers>> = match (&membership, &cfg.cluster.certs) {
        (Some(m), Some(dir)) => {
            let id = molde_cluster::certs::Identity::load(dir, &m.name).map_err(|e| {
                anyhow::anyhow!(
                    "[cluster] certs: {e} (molde cluster join --dir {} --node-name {})",
                    dir.display(),
                    m.name
                )
            })?;
            Some(Arc::new(molde_cluster::peers::Peers::new(m.clone(), id)))
        }
        _ => None,
    };

    if let Some(store) = store.clone().filter(|_| cfg.hosts("content")) {
        let mut cc = ContentConfig::new(content_root.clone());
        cc.gc_interval = cfg.gc.interval();
        cc.ingest_expiry = cfg.gc.ingest_expiry();
        cc.gc_delay = cfg.gc.delay();
        cc.snapshotter = Some(molde_api::client::channel(&reach("snapshotter")?));
        let shared = Shared::new(store, cc)?;
        tokio::spawn(molde_content::gc::run_scheduler(shared.clone()));
        local_content = Some(shared.clone());
        let s = molde_content::servers(shared);
        router = router
            .add_service(s.content)
            .add_service(s.images)
            .add_service(s.leases)
            .add_service(s.namespaces)
            .add_service(s.gc);
        let root = content_root.display().to_string();
        plugins.push(plugin("io.containerd.content.v1", "content", &[("root", &root)]));
        for id in ["content", "images", "leases", "namespaces"] {
            plugins.push(plugin("io.containerd.grpc.v1", id, &[]));
        }
        plugins.push(plugin("io.molde.grpc.v1", "gc", &[]));
        hosted.push("content".to_string());
    } else if let Some(remote) = cfg.remote.get("content") {
        let addr = reach("content")?;
        router = router
            .add_service(Forward::<ContentName>::new(&addr))
            .add_service(Forward::<ImagesName>::new(&addr))
            .add_service(Forward::<LeasesName>::new(&addr))
            .add_service(Forward::<NamespacesName>::new(&addr))
            .add_service(Forward::<GcName>::new(&addr));
        for id in ["content", "images", "leases", "namespaces"] {
            plugins.push(plugin("io.containerd.grpc.v1", id, &[("remote", remote)]));
        }
        hosted.push(format!("content (remote {remote})"));
    }

    if cfg.hosts("transfer") {
        // The content store: this process's own, or the content service's
        // through its gRPC APIs.
        let content = content_store(&local_content, &reach("content")?);
        let mut transfer = molde_transfer::TransferService::new(
            content,
            molde_api::client::channel(&reach("snapshotter")?),
            molde_transfer::TransferConfig {
                hosts_dir: cfg.hosts_dir(),
                parallel: cfg.transfer.parallel,
            },
        );
        if let Some(p) = &peers {
            transfer = transfer.with_peers(p.clone(), cfg.cluster.resolve);
        }
        router = router.add_service(
            molde_api::molde::services::transfer::v1::transfer_server::TransferServer::new(transfer),
        );
        plugins.push(plugin("io.molde.grpc.v1", "transfer", &[]));
        hosted.push("transfer".to_string());
    } else if let Some(remote) = cfg.remote.get("transfer") {
        router = router.add_service(Forward::<TransferName>::new(&reach("transfer")?));
        plugins.push(plugin("io.molde.grpc.v1", "transfer", &[("remote", remote)]));
        hosted.push(format!("transfer (remote {remote})"));
    }

    if let Some(store) = store.clone().filter(|_| cfg.hosts("snapshotter")) {
        let snap_root = cfg.root.join("snapshots");
        let snapshotter = molde_snapshotter::Snapshotter::new(store, &snap_root)?;
        // The named fast path: with content in this process, layers are read
        // from the blob files instead of through content.v1 Read.
        let local = (cfg.hosts("content") && cfg.snapshotter.content_fast_path).then(|| content_root.clone());
        let content =
            molde_snapshotter::ContentAccess::new(molde_api::client::channel(&reach("content")?), local);
        let s = molde_snapshotter::servers(snapshotter, content);
        router = router.add_service(s.snapshots).add_service(s.diff);
        for d in ["overlayfs", "native"] {
            let root = snap_root.join(d).display().to_string();
            plugins.push(plugin("io.containerd.snapshotter.v1", d, &[("root", &root)]));
        }
        plugins.push(plugin("io.containerd.grpc.v1", "snapshots", &[]));
        plugins.push(plugin("io.containerd.grpc.v1", "diff", &[]));
        hosted.push("snapshotter".to_string());
    } else if let Some(remote) = cfg.remote.get("snapshotter") {
        let addr = reach("snapshotter")?;
        router = router
            .add_service(Forward::<SnapshotsName>::new(&addr))
            .add_service(Forward::<DiffName>::new(&addr));
        for id in ["snapshots", "diff"] {
            plugins.push(plugin("io.containerd.grpc.v1", id, &[("remote", remote)]));
        }
        hosted.push(format!("snapshotter (remote {remote})"));
    }
    if let Some(store) = store.clone().filter(|_| cfg.hosts("runtime")) {
        let shim = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("molde-shim")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("molde-shim"));
        let s = molde_runtime::servers(
            store,
            molde_runtime::RuntimeConfig {
                state: cfg.state.join("runtime"),
                shim,
                volumes: cfg.root.join("volumes"),
                cni_bin_dir: PathBuf::from("/usr/lib/cni"),
                netns_dir: cfg.state.join("netns"),
                content: molde_api::client::channel(&reach("content")?),
                snapshotter: molde_api::client::channel(&reach("snapshotter")?),
                events: molde_api::client::channel(&own),
            },
        );
        router = router
            .add_service(s.containers)
            .add_service(s.runtime)
            .add_service(s.tasks);
        plugins.push(plugin("io.containerd.grpc.v1", "containers", &[]));
        plugins.push(plugin("io.containerd.grpc.v1", "tasks", &[]));
        plugins.push(plugin("io.molde.grpc.v1", "runtime", &[]));
        hosted.push("runtime".to_string());
    } else if let Some(remote) = cfg.remote.get("runtime") {
        let addr = reach("runtime")?;
        router = router
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
            plugins.push(plugin(kind, id, &[("remote", remote)]));
        }
        hosted.push(format!("runtime (remote {remote})"));
    }
    if cfg.hosts("builder") {
        let builder = molde_builder::service::BuilderService {
            content: molde_api::client::channel(&reach("content")?),
            transfer: molde_api::client::channel(&reach("transfer")?),
            snapshotter: molde_api::client::channel(&reach("snapshotter")?),
            runtime: molde_api::client::channel(&reach("runtime")?),
            scratch: cfg.state.join("build"),
            cache: cfg.root.join("build-cache"),
            cache_mounts: cfg.root.join("build-cache-mounts"),
            cache_max_bytes: cfg.builder.cache_max_bytes,
            entitlements: cfg.builder.entitlements.clone(),
            recovering: Default::default(),
            shared_cache: match &peers {
                Some(p) => Some(Arc::new(cluster_cache::ClusterBuildCache {
                    peers: p.clone(),
                    content: content_store(&local_content, &reach("content")?),
                })),
                None => None,
            },
        };
        let guard = builder
            .recovering
            .clone()
            .try_write_owned()
            .expect("nothing holds a new lock");
        recover = Some((builder.clone(), guard));
        router = router.add_service(
            molde_api::molde::services::builder::v1::builder_server::BuilderServer::new(builder)
                // A context sent as a tar comes in one message.
                .max_decoding_message_size(1 << 30),
        );
        plugins.push(plugin("io.molde.grpc.v1", "builder", &[]));
        hosted.push("builder".to_string());
    } else if let Some(remote) = cfg.remote.get("builder") {
        router = router.add_service(Forward::<BuilderName>::new(&reach("builder")?));
        plugins.push(plugin("io.molde.grpc.v1", "builder", &[("remote", remote)]));
        hosted.push(format!("builder (remote {remote})"));
    }
    // CRI, on a socket of its own for the kubelet.
    let mut cri = None;
    let mut cri_state = None;
    if let Some(store) = store.clone().filter(|_| cfg.hosts("cri")) {
        let pod_init = std::env::current_exe().context("finding molded's own binary for pod-init")?;
        let c = molde_cri::Cri::new(
            molde_cri::CriConfig {
                state: cfg.state.join("cri"),
                cni_conf_dir: cfg.cri.cni_conf_dir.clone(),
                cni_bin_dirs: cfg.cri.cni_bin_dirs.clone(),
                cgroup_driver: cfg.cri.cgroup_driver.clone(),
                pod_init,
            },
            molde_cri::Channels {
                content: molde_api::client::channel(&reach("content")?),
                transfer: molde_api::client::channel(&reach("transfer")?),
                snapshotter: molde_api::client::channel(&reach("snapshotter")?),
                runtime: molde_api::client::channel(&reach("runtime")?),
            },
            store,
        );
        let cri_address = Address::parse(&cfg.cri_address())?;
        let Address::Unix(cri_path) = &cri_address;
        let (l, guard) = listener::bind(cri_path)?;
        let tls = match (&cfg.cri.stream_tls_cert, &cfg.cri.stream_tls_key) {
            (Some(cert), Some(key)) => Some(molde_cri::stream::Tls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => bail!("[cri] stream_tls_cert and stream_tls_key go together"),
        };
        let streaming =
            molde_cri::stream::serve(c.clone(), &cfg.cri.stream_address, cfg.cri.stream_port, tls)
                .await
                .context("starting the CRI streaming server")?;
        cri_state = Some(c.clone());
        let s = molde_cri::servers(c);
        let server = Server::builder()
            .http2_max_header_list_size(molde_api::client::MAX_HEADER_LIST)
            .add_service(s.runtime)
            .add_service(s.image);
        plugins.push(plugin(
            "io.containerd.grpc.v1",
            "cri",
            &[
                ("address", &cri_address.to_string()),
                ("stream_address", &streaming.to_string()),
            ],
        ));
        hosted.push(format!("cri ({cri_address}, streaming on {streaming})"));
        cri = Some((server, l, guard));
    }
    if hosted.is_empty() {
        bail!("nothing to serve: no service is hosted here or configured as remote");
    }
    if let Some(m) = &membership {
        hosted.push(format!(
            "cluster node {} (etcd {})",
            m.name,
            cfg.cluster.etcd.join(",")
        ));
        if let Some(dir) = &cfg.cluster.certs {
            let content = local_content
                .clone()
                .map(|shared| molde_content::servers(shared).content);
            serve_peers(dir, m.clone(), &cfg.cluster.advertise, &address, content).await?;
            hosted.push(format!("peers over mutual TLS on {}", cfg.cluster.advertise));
        }
        if let Some(r) = registration {
            m.join(r)
                .map_err(|e| anyhow::anyhow!("joining the cluster: {e}"))?;
        }
    }
    router = router.add_service(
        molde_api::molde::services::cluster::v1::cluster_server::ClusterServer::new(
            molde_cluster::service::ClusterService { membership },
        ),
    );

    if !cfg.remote.contains_key("runtime") {
        router = router.add_service(
            molde_api::containerd::services::events::v1::events_server::EventsServer::new(
                events::EventsService::new(),
            ),
        );
    }
    router = router
        .add_service(VersionServer::new(VersionService))
        .add_service(IntrospectionServer::new(IntrospectionService { uuid, plugins }));

    // Again, now that the services made their files (meta.redb, uuid).
    perms::seal(&cfg.root, &[], &["meta.redb", "uuid"])?;
    tracing::info!(
        address = %address,
        root = %cfg.root.display(),
        services = %hosted.join(", "),
        version = info::VERSION,
        "molded serving"
    );
    let incoming = UnixListenerStream::new(listener);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let mut cri_socket = None;
    let cri_server = cri.map(|(server, l, guard)| {
        cri_socket = Some(guard);
        let mut stopped = stop_rx.clone();
        let cri = cri_state.clone();
        tokio::spawn(async move {
            // What a crash left half made goes before the kubelet is served
            // (the services it calls are being served by now).
            if let Some(c) = cri {
                match c.reconcile().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(removed = n, "CRI: removed what a crash left without records"),
                    Err(e) => tracing::warn!(error = %e, "CRI: looking for what a crash left failed"),
                }
            }
            // Through the authority fixer: kubelets of 1.26 send the socket path as :authority.
            server
                .serve_with_incoming_shutdown(molde_cri::authority::incoming(l), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        })
    });
    if let Some((builder, guard)) = recover {
        tokio::spawn(async move { builder.recover(guard).await });
    }

    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    let _ = stop_tx.send(true);
    // Streams still open get a grace period; then the process ends regardless.
    for s in std::iter::once(server).chain(cri_server) {
        match tokio::time::timeout(Duration::from_secs(5), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => tracing::warn!("open streams did not finish within 5s; closing them"),
        }
    }
    drop(socket);
    drop(cri_socket);
    tracing::info!("stopped");
    Ok(())
}

fn plugin(kind: &'static str, id: &'static str, exports: &[(&str, &str)]) -> PluginInfo {
    PluginInfo {
        kind,
        id,
        exports: exports
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// The content store as this process reaches it: its own, or the content
/// service's through its gRPC APIs.
fn content_store(
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

/// Joins the cluster `[cluster]` names, if any: registers this node in etcd
/// and keeps it registered (an etcd that is down now is retried, and every
/// local service works meanwhile).
fn cluster_membership(
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
async fn serve_peers(
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
