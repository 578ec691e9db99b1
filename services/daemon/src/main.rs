//! molded: hosts molde's services on a unix socket.
//!
//! With no configuration it hosts every service on `/run/molde/molde.sock`, with
//! metadata and blobs under `/var/lib/molde`. `--service` narrows what this
//! process hosts; `--remote SERVICE=ADDRESS` (or `[remote]` in the config)
//! forwards a service to another molded (split mode).

mod args;
mod cluster;
mod cluster_cache;
mod config;
mod events;
mod hosting;
mod info;
mod listener;
mod metrics;
mod otel;
mod perms;
mod proxy;
mod rpclog;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use molde_api::client::Address;
use molde_api::containerd::services::{
    introspection::v1::introspection_server::IntrospectionServer, version::v1::version_server::VersionServer,
};
use molde_meta::{RedbStore, Store};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::config::Config;
use crate::hosting::{SERVICES, Wiring, plugin};
use crate::info::{IntrospectionService, VersionService};

fn main() -> std::process::ExitCode {
    // The init of a pod's shared PID namespace (molde's own holder, no pause image).
    if std::env::args().nth(1).as_deref() == Some("pod-init") {
        molde_cri::sandbox::pod_init_main();
    }
    // The maker of a pod's user namespace and the namespaces inside it.
    if std::env::args().nth(1).as_deref() == Some("pod-userns") {
        molde_cri::userns::helper_main();
    }
    let mut parsed = args::Args::parse();
    if let Some(args::Command::Manpages { dir }) = &parsed.command {
        let cmd = <args::Args as clap::CommandFactory>::command();
        return match molde_common::man::write_pages(cmd, "8", dir) {
            Ok(_) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("molded: writing manual pages into {}: {e}", dir.display());
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(args::Command::Config(cmd)) = parsed.command.take() {
        return match args::config_command(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("molded: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let cfg = args::config(parsed);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    // The trace exporter's channel runs on the runtime: made inside it.
    let traces = match (&cfg, &rt) {
        (Ok(c), Ok(rt)) => {
            let _inside = rt.enter();
            otel::provider(c)
        }
        _ => Ok(None),
    };
    // The log as configured; a configuration that does not load is said
    // at the default level.
    init_log(
        cfg.as_ref()
            .map(|c| &c.debug)
            .unwrap_or(&config::DebugConfig::default()),
        traces.as_ref().ok().and_then(Option::as_ref),
    );
    // An error is said once, with its causes, without a backtrace.
    let fail = |e: anyhow::Error| {
        tracing::error!("{e:#}");
        std::process::ExitCode::FAILURE
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("starting the async runtime")),
    };
    let traces = match traces {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let res = rt.block_on(run(cfg));
    // The spans still batched leave now, unless the collector is away.
    if let Some(t) = traces
        && let Err(e) = t.shutdown_with_timeout(Duration::from_millis(500))
    {
        tracing::debug!("flushing traces: {e}");
    }
    // Don't wait for blocking threads still reading a stream from a gone client.
    rt.shutdown_timeout(Duration::from_millis(300));
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// molde's own crates, whose level `[debug] level` sets.
const OWN_TARGETS: &[&str] = &[
    "molded",
    "molde_api",
    "molde_common",
    "molde_bundle",
    "molde_meta",
    "molde_content",
    "molde_snapshotter",
    "molde_transfer",
    "molde_runtime",
    "molde_builder",
    "molde_cri",
    "molde_cluster",
];

/// stderr in text or JSON; molde's targets at `[debug] level` (info by
/// default), everything else at warn. `RUST_LOG` replaces the filter.
fn init_log(d: &config::DebugConfig, traces: Option<&opentelemetry_sdk::trace::SdkTracerProvider>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let level = if d.level.is_empty() {
        "info"
    } else {
        d.level.as_str()
    };
    // The spans exported as traces stay out of the log (a line would carry
    // every span it is in) unless RUST_LOG names them.
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if directives.contains(molde_api::trace::TARGET) => EnvFilter::new(directives),
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::new(format!("{directives},{}=off", molde_api::trace::TARGET))
        }
        _ => EnvFilter::new(
            std::iter::once("warn".to_string())
                .chain(OWN_TARGETS.iter().map(|t| format!("{t}={level}")))
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = if d.format == "json" {
        log.json().with_filter(filter).boxed()
    } else {
        log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(filter)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(log)
        .with(traces.map(otel::layer))
        .init();
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    for d in [&cfg.root, &cfg.state] {
        perms::top(d)?;
    }
    let hosted_here: Vec<_> = SERVICES.iter().filter(|s| cfg.hosts(s.name())).collect();
    // Before any hosted service writes there: the directories they fill, owner-only.
    let root_dirs: Vec<&str> = hosted_here.iter().flat_map(|s| s.root_dirs()).copied().collect();
    let state_dirs: Vec<&str> = hosted_here.iter().flat_map(|s| s.state_dirs()).copied().collect();
    perms::seal(&cfg.root, &root_dirs, &[])?;
    perms::seal(&cfg.state, &state_dirs, &[])?;
    let address = Address::parse(&cfg.address)?;
    let Address::Unix(sock_path) = &address;
    let (listener, socket) = listener::bind(sock_path)?;
    if let Some(gid) = cfg.grpc.gid {
        listener::share_with_group(sock_path, gid)?;
    }
    let uuid = info::load_uuid(&cfg.root)?;

    let store = if hosted_here.iter().any(|s| s.needs_store()) {
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
    // This node in its cluster, and the peers it takes layers from.
    // Registered last, once every listener is bound (`join` below).
    let (membership, registration) = match cluster::cluster_membership(&cfg, store.clone())? {
        Some((m, r)) => (Some(m), Some(r)),
        None => (None, None),
    };
    let peers = match (&membership, &cfg.cluster.certs) {
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
    let mut w = Wiring {
        cfg: &cfg,
        own: address.clone(),
        store,
        routes: Default::default(),
        plugins: vec![
            plugin("io.containerd.grpc.v1", "version", &[]),
            plugin("io.containerd.grpc.v1", "introspection", &[]),
            plugin("io.containerd.grpc.v1", "events", &[]),
        ],
        hosted: Vec::new(),
        local_content: None,
        peers,
        recover: None,
        cri: None,
    };
    for s in SERVICES {
        if cfg.hosts(s.name()) {
            s.host(&mut w).await?;
        } else if let Some(remote) = cfg.remote.get(s.name()) {
            s.forward(&mut w, remote)?;
        }
    }
    if w.hosted.is_empty() {
        bail!("nothing to serve: no service is hosted here or configured as remote");
    }
    if let Some(m) = &membership {
        w.hosted.push(format!(
            "cluster node {} (etcd {})",
            m.name,
            cfg.cluster.etcd.join(",")
        ));
        if let Some(dir) = &cfg.cluster.certs {
            let content = w
                .local_content
                .clone()
                .map(|shared| molde_content::servers(shared).content);
            cluster::serve_peers(dir, m.clone(), &cfg.cluster.advertise, &address, content).await?;
            w.hosted
                .push(format!("peers over mutual TLS on {}", cfg.cluster.advertise));
        }
        if let Some(r) = registration {
            m.join(r)
                .map_err(|e| anyhow::anyhow!("joining the cluster: {e}"))?;
        }
    }
    w.routes.add_service(
        molde_api::molde::services::cluster::v1::cluster_server::ClusterServer::new(
            molde_cluster::service::ClusterService { membership },
        ),
    );
    if !cfg.remote.contains_key("runtime") {
        w.routes.add_service(
            molde_api::containerd::services::events::v1::events_server::EventsServer::new(
                events::EventsService::new(),
            ),
        );
    }
    let Wiring {
        mut routes,
        plugins,
        hosted,
        recover,
        cri,
        ..
    } = w;
    // grpc.health.v1: NOT_SERVING until every socket serves, and again once
    // a shutdown begins; "" is molded as a whole, then each service hosted
    // here by its molde name and its gRPC names.
    let (health, health_service) = tonic_health::server::health_reporter();
    let health_names = health_names(&cfg, cri.is_some());
    for n in &health_names {
        health
            .set_service_status(n, tonic_health::ServingStatus::NotServing)
            .await;
    }
    routes
        .add_service(VersionServer::new(VersionService))
        .add_service(IntrospectionServer::new(IntrospectionService { uuid, plugins }))
        .add_service(health_service.clone());
    let router = Server::builder()
        .layer(rpclog::RpcLog)
        .initial_stream_window_size(molde_api::client::STREAM_WINDOW)
        .initial_connection_window_size(molde_api::client::CONNECTION_WINDOW)
        .max_frame_size(molde_api::client::MAX_FRAME)
        .http2_max_header_list_size(molde_api::client::MAX_HEADER_LIST)
        .add_routes(routes.routes());

    // Again, now that the services made their files (meta.redb, uuid).
    perms::seal(&cfg.root, &[], &["meta.redb", "uuid"])?;
    tracing::info!(
        address = %address,
        root = %cfg.root.display(),
        services = %hosted.join(", "),
        version = info::VERSION,
        "molded serving"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stopped = stop_rx.clone();
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    ));
    let mut cri_socket = None;
    let (cri_ready_tx, cri_ready) = tokio::sync::oneshot::channel::<()>();
    let cri_server = cri.map(|c| {
        cri_socket = Some(c.socket);
        let mut stopped = stop_rx.clone();
        let server = c.server.add_service(health_service.clone());
        tokio::spawn(async move {
            // What a crash left half made goes before the kubelet is served
            // (the services it calls are being served by now).
            match c.cri.release_owed_networks() {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    pods = n,
                    "CRI: releasing the networks of pods stopped before molded did"
                ),
                Err(e) => tracing::warn!(error = %e, "CRI: releasing the networks owed failed"),
            }
            match c.cri.reconcile().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(removed = n, "CRI: removed what a crash left without records"),
                Err(e) => tracing::warn!(error = %e, "CRI: looking for what a crash left failed"),
            }
            let _ = cri_ready_tx.send(());
            // Through the authority fixer: kubelets of 1.26 send the socket path as :authority.
            server
                .serve_with_incoming_shutdown(molde_cri::authority::incoming(c.listener), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        })
    });
    if !cfg.metrics.address.is_empty() {
        metrics::serve(&cfg.metrics.address, address.clone()).await?;
        tracing::info!(address = %cfg.metrics.address, "metrics served at /metrics");
    }
    if !cfg.tracing.otlp_endpoint.is_empty() {
        tracing::info!(endpoint = %cfg.tracing.otlp_endpoint, "traces exported over OTLP");
    }
    if let Some((builder, guard)) = recover {
        tokio::spawn(async move { builder.recover(guard).await });
    }
    {
        let (health, names, with_cri) = (health.clone(), health_names.clone(), cri_server.is_some());
        tokio::spawn(async move {
            if with_cri {
                let _ = cri_ready.await;
            }
            for n in &names {
                health
                    .set_service_status(n, tonic_health::ServingStatus::Serving)
                    .await;
            }
            // Under systemd (Type=notify): started once every socket serves.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        });
    }

    let signal = shutdown_signal().await?;
    tracing::info!(signal, "shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    for n in &health_names {
        health
            .set_service_status(n, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let _ = stop_tx.send(true);
    // Streams still open (attach, logs -f, events, health watches) get half
    // a second; then the process ends regardless, and a new molded can
    // take the socket at once. Containers run on under their shims.
    for s in std::iter::once(server).chain(cri_server) {
        match tokio::time::timeout(Duration::from_millis(500), s).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => tracing::info!("closing the streams still open"),
        }
    }
    drop(socket);
    drop(cri_socket);
    tracing::info!("stopped");
    Ok(())
}

/// The names molded answers health checks for: "" (the whole daemon), each
/// service it hosts by its molde name, and the CRI's gRPC services.
fn health_names(cfg: &Config, cri: bool) -> Vec<String> {
    let mut names = vec![String::new()];
    names.extend(
        config::SERVICES
            .iter()
            .filter(|s| cfg.hosts(s) && (**s != "cri" || cri))
            .map(|s| s.to_string()),
    );
    if cri {
        names.extend([
            "runtime.v1.RuntimeService".to_string(),
            "runtime.v1.ImageService".to_string(),
        ]);
    }
    names
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
