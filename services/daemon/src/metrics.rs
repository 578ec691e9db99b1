//! `[metrics] address`: Prometheus metrics over HTTP at `/metrics` (and
//! containerd's `/v1/metrics`), in the OpenMetrics text format through
//! prometheus-client. Off unless an address is configured, as containerd's.
//!
//! - gRPC: `grpc_server_handled_total` and `grpc_server_handling_seconds` by
//!   service, method and code, for every call molded serves (the RPC layer
//!   in `rpclog.rs` records them).
//! - Containers, read at each scrape from the runtime's stats (their
//!   cgroups), under cAdvisor's names and labels: `id`, `name`, `image`,
//!   `namespace` (a pod's for CRI containers), and `pod` and `container` for
//!   CRI containers.
//! - Each namespace's stores, read at each scrape: content blobs and bytes,
//!   snapshots by kind and the bytes they hold (a committed snapshot is
//!   measured once), shims running.
//! - What the services counted (`molde_common::metrics`): pulls, pushes,
//!   unpacks, build steps, garbage collection, cluster claims; and the
//!   cluster's peers now.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use molde_api::client::{Address, namespaced};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rpc {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
    grpc_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcTiming {
    grpc_type: &'static str,
    grpc_service: String,
    grpc_method: String,
}

fn latency() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics kept between scrapes.
struct Kept {
    handled: Family<Rpc, Counter>,
    seconds: Family<RpcTiming, Histogram, fn() -> Histogram>,
}

static KEPT: OnceLock<Kept> = OnceLock::new();

/// Records one call served (only when metrics are on).
pub fn observe_rpc(path: &str, code: &str, seconds: f64) {
    let Some(k) = KEPT.get() else { return };
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    k.handled
        .get_or_create(&Rpc {
            grpc_type: "unary",
            grpc_service: service.to_string(),
            grpc_method: method.to_string(),
            grpc_code: code.to_string(),
        })
        .inc();
    k.seconds
        .get_or_create(&RpcTiming {
            grpc_type: "unary",
            grpc_service: service.to_string(),
            grpc_method: method.to_string(),
        })
        .observe(seconds);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Container {
    id: String,
    name: String,
    image: String,
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Interface {
    id: String,
    name: String,
    image: String,
    namespace: String,
    pod: String,
    container: String,
    interface: String,
}

/// Serves the metrics on `address` (host:port) until the process ends;
/// containers' readings come from the runtime at `own` (molded's socket).
pub async fn serve(address: &str, own: Address) -> anyhow::Result<()> {
    use anyhow::Context;
    let _ = KEPT.set(Kept {
        handled: Family::default(),
        seconds: Family::new_with_constructor(latency),
    });
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("[metrics] address {address}: listening"))?;
    let channel = molde_api::client::channel(&own);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let channel = channel.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let channel = channel.clone();
                    async move {
                        // `/metrics`, and containerd's `/v1/metrics`.
                        let path = req.uri().path();
                        let metrics = path == "/metrics" || path.strip_prefix("/v1") == Some("/metrics");
                        let resp = match metrics {
                            true => http::Response::builder()
                                .header(
                                    "content-type",
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(http_body_util::Full::new(bytes::Bytes::from(
                                    scrape(channel).await,
                                ))),
                            false => http::Response::builder()
                                .status(404)
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(
                                    b"molded serves /metrics (and containerd's path for it)\n",
                                ))),
                        };
                        Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// One scrape: the kept metrics and every container's readings now.
async fn scrape(channel: tonic::transport::Channel) -> String {
    let mut registry = Registry::default();
    if let Some(k) = KEPT.get() {
        registry.register(
            "grpc_server_handled",
            "gRPC calls completed, by service, method and code",
            k.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "How long gRPC calls took to answer",
            k.seconds.clone(),
        );
    }
    let cpu = Family::<Container, Counter<f64, AtomicU64>>::default();
    let working_set = Family::<Container, Gauge<f64, AtomicU64>>::default();
    let usage = Family::<Container, Gauge<f64, AtomicU64>>::default();
    let rss = Family::<Container, Gauge<f64, AtomicU64>>::default();
    let processes = Family::<Container, Gauge<f64, AtomicU64>>::default();
    let fs_usage = Family::<Container, Gauge<f64, AtomicU64>>::default();
    let rx = Family::<Interface, Counter<f64, AtomicU64>>::default();
    let tx = Family::<Interface, Counter<f64, AtomicU64>>::default();
    let names = namespace_names(&channel).await;
    let (readings, running) = containers(&channel, &names).await;
    for (labels, s, layer_bytes) in readings {
        fs_usage.get_or_create(&labels).set(layer_bytes as f64);
        cpu.get_or_create(&labels).inc_by(s.cpu_usage_ns as f64 / 1e9);
        working_set
            .get_or_create(&labels)
            .set(s.memory_working_set_bytes as f64);
        usage.get_or_create(&labels).set(s.memory_bytes as f64);
        rss.get_or_create(&labels).set(s.memory_rss_bytes as f64);
        processes.get_or_create(&labels).set(s.pids as f64);
        let iface = Interface {
            id: labels.id.clone(),
            name: labels.name.clone(),
            image: labels.image.clone(),
            namespace: labels.namespace.clone(),
            pod: labels.pod.clone(),
            container: labels.container.clone(),
            interface: "eth0".into(),
        };
        rx.get_or_create(&iface).inc_by(s.net_rx_bytes as f64);
        tx.get_or_create(&iface).inc_by(s.net_tx_bytes as f64);
    }
    registry.register(
        "container_cpu_usage_seconds",
        "Cumulative cpu time consumed in seconds.",
        cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        working_set,
    );
    registry.register(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        usage,
    );
    registry.register("container_memory_rss", "Size of RSS in bytes.", rss);
    registry.register(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem (its writable layer).",
        fs_usage,
    );
    registry.register(
        "container_processes",
        "Number of processes running inside the container.",
        processes,
    );
    registry.register(
        "container_network_receive_bytes",
        "Cumulative count of bytes received.",
        rx,
    );
    registry.register(
        "container_network_transmit_bytes",
        "Cumulative count of bytes transmitted.",
        tx,
    );
    namespaces(&mut registry, &channel, &names, &running).await;
    counts(&mut registry);
    if let Some(peers) = cluster_peers(&channel).await {
        let g: Gauge = Gauge::default();
        g.set(peers);
        registry.register(
            "molde_cluster_peers",
            "Other nodes registered in the cluster now",
            g,
        );
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding the metrics");
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// What this process's services counted (`molde_common::metrics`).
fn counts(registry: &mut Registry) {
    use molde_common::metrics as m;
    let counter = |v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        c
    };
    let seconds = |micros: u64| {
        let c: Counter<f64, AtomicU64> = Counter::default();
        c.inc_by(micros as f64 / 1e6);
        c
    };
    registry.register("molde_pulls", "Images pulled", counter(m::PULLS.get()));
    registry.register(
        "molde_pull_seconds",
        "Time spent pulling images, summed over pulls",
        seconds(m::PULL_MICROS.get()),
    );
    let by_source = |counts: [(&'static str, u64); 2]| {
        let f = Family::<Source, Counter>::default();
        for (source, n) in counts {
            f.get_or_create(&Source { source }).inc_by(n);
        }
        f
    };
    registry.register(
        "molde_pull_blobs",
        "Blobs pulls fetched, from the registry or from cluster peers",
        by_source([
            ("registry", m::REGISTRY_BLOBS.get()),
            ("peer", m::PEER_BLOBS.get()),
        ]),
    );
    registry.register(
        "molde_pull_bytes",
        "Bytes pulls fetched, from the registry or from cluster peers",
        by_source([
            ("registry", m::REGISTRY_BYTES.get()),
            ("peer", m::PEER_BYTES.get()),
        ]),
    );
    registry.register("molde_pushes", "Images pushed", counter(m::PUSHES.get()));
    registry.register(
        "molde_push_seconds",
        "Time spent pushing images, summed over pushes",
        seconds(m::PUSH_MICROS.get()),
    );
    let by_outcome = |counts: [(&'static str, u64); 3]| {
        let f = Family::<Outcome, Counter>::default();
        for (outcome, n) in counts {
            f.get_or_create(&Outcome { outcome }).inc_by(n);
        }
        f
    };
    registry.register(
        "molde_push_blobs",
        "Blobs pushes handed to registries: uploaded, mounted from another repository, or already there",
        by_outcome([
            ("uploaded", m::PUSH_BLOBS_UPLOADED.get()),
            ("mounted", m::PUSH_BLOBS_MOUNTED.get()),
            ("present", m::PUSH_BLOBS_PRESENT.get()),
        ]),
    );
    registry.register(
        "molde_push_bytes",
        "Bytes pushes uploaded",
        counter(m::PUSH_BYTES.get()),
    );
    let claims = Family::<Outcome, Counter>::default();
    for (outcome, n) in [
        ("taken", m::CLAIMS_TAKEN.get()),
        ("deferred", m::CLAIMS_DEFERRED.get()),
    ] {
        claims.get_or_create(&Outcome { outcome }).inc_by(n);
    }
    registry.register(
        "molde_cluster_claims",
        "Download claims in the cluster: taken by this node, or deferred to the peer holding one",
        claims,
    );
    registry.register(
        "molde_layers_unpacked",
        "Layers unpacked into snapshots",
        counter(m::LAYERS_UNPACKED.get()),
    );
    registry.register(
        "molde_unpack_seconds",
        "Time spent unpacking layers, summed over layers",
        seconds(m::UNPACK_MICROS.get()),
    );
    registry.register(
        "molde_build_steps",
        "Build steps, run or taken from the cache",
        by_source([
            ("run", m::BUILD_STEPS_RUN.get()),
            ("cache", m::BUILD_STEPS_CACHED.get()),
        ]),
    );
    registry.register(
        "molde_gc_runs",
        "Garbage collections run",
        counter(m::GC_RUNS.get()),
    );
    registry.register(
        "molde_gc_blobs_removed",
        "Blobs garbage collection removed",
        counter(m::GC_BLOBS_REMOVED.get()),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Namespace {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotKind {
    namespace: String,
    snapshotter: &'static str,
    kind: &'static str,
}

/// Sizes of committed snapshots (namespace, snapshotter, key): they do not
/// change, so each is walked once rather than at every scrape.
static COMMITTED_SIZES: std::sync::Mutex<Option<std::collections::HashMap<SnapshotId, u64>>> =
    std::sync::Mutex::new(None);

/// namespace, snapshotter, key.
type SnapshotId = (String, String, String);

/// The namespaces molded has now.
async fn namespace_names(channel: &tonic::transport::Channel) -> Vec<String> {
    use molde_api::containerd::services::namespaces::v1::{
        ListNamespacesRequest, namespaces_client::NamespacesClient,
    };
    NamespacesClient::new(channel.clone())
        .list(ListNamespacesRequest::default())
        .await
        .map(|l| l.into_inner().namespaces.into_iter().map(|n| n.name).collect())
        .unwrap_or_default()
}

/// Each namespace's content and snapshots, and its shims (one per running
/// container: `running`).
async fn namespaces(
    registry: &mut Registry,
    channel: &tonic::transport::Channel,
    names: &[String],
    running: &std::collections::HashMap<String, usize>,
) {
    use molde_api::containerd::services::content::v1::{ListContentRequest, content_client::ContentClient};
    use molde_api::containerd::services::snapshots::v1::{
        Kind, ListSnapshotsRequest, UsageRequest, snapshots_client::SnapshotsClient,
    };
    let content_blobs = Family::<Namespace, Gauge>::default();
    let content_bytes = Family::<Namespace, Gauge>::default();
    let snapshots = Family::<SnapshotKind, Gauge>::default();
    let snapshot_bytes = Family::<SnapshotKind, Gauge>::default();
    let shims = Family::<Namespace, Gauge>::default();
    let mut seen = std::collections::HashSet::new();
    for ns in names {
        let label = Namespace {
            namespace: ns.clone(),
        };
        if let Ok(stream) = ContentClient::new(channel.clone())
            .list(namespaced(ns, ListContentRequest::default()))
            .await
        {
            let mut stream = stream.into_inner();
            let (mut blobs, mut bytes) = (0i64, 0i64);
            while let Ok(Some(page)) = stream.message().await {
                blobs += page.info.len() as i64;
                bytes += page.info.iter().map(|i| i.size.max(0)).sum::<i64>();
            }
            content_blobs.get_or_create(&label).set(blobs);
            content_bytes.get_or_create(&label).set(bytes);
        }
        for snapshotter in ["overlayfs", "native"] {
            let mut client = SnapshotsClient::new(channel.clone());
            let Ok(stream) = client
                .list(namespaced(
                    ns,
                    ListSnapshotsRequest {
                        snapshotter: snapshotter.into(),
                        filters: Vec::new(),
                    },
                ))
                .await
            else {
                continue;
            };
            let mut stream = stream.into_inner();
            let mut infos = Vec::new();
            while let Ok(Some(page)) = stream.message().await {
                infos.extend(page.info);
            }
            for info in infos {
                let kind = match Kind::try_from(info.kind) {
                    Ok(Kind::Committed) => "committed",
                    Ok(Kind::Active) => "active",
                    Ok(Kind::View) => "view",
                    _ => "unknown",
                };
                let key = SnapshotKind {
                    namespace: ns.clone(),
                    snapshotter,
                    kind,
                };
                snapshots.get_or_create(&key).inc();
                let id = (ns.clone(), snapshotter.to_string(), info.name.clone());
                let cached = COMMITTED_SIZES
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .and_then(|m| m.get(&id).copied());
                let size = match cached {
                    Some(size) if kind == "committed" => size,
                    _ => {
                        let request = UsageRequest {
                            snapshotter: snapshotter.into(),
                            key: info.name.clone(),
                        };
                        let size = match client.usage(namespaced(ns, request)).await {
                            Ok(u) => u.into_inner().size.max(0) as u64,
                            Err(_) => continue,
                        };
                        if kind == "committed" {
                            COMMITTED_SIZES
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert_default()
                                .insert(id.clone(), size);
                        }
                        size
                    }
                };
                seen.insert(id);
                snapshot_bytes.get_or_create(&key).inc_by(size as i64);
            }
        }
        if let Some(n) = running.get(ns) {
            shims.get_or_create(&label).set(*n as i64);
        }
    }
    if let Some(m) = COMMITTED_SIZES.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.retain(|id, _| seen.contains(id));
    }
    registry.register(
        "molde_content_blobs",
        "Blobs in the content store, by namespace",
        content_blobs,
    );
    registry.register(
        "molde_content_bytes",
        "Bytes of the blobs in the content store, by namespace",
        content_bytes,
    );
    registry.register(
        "molde_snapshots",
        "Snapshots, by namespace, snapshotter and kind",
        snapshots,
    );
    registry.register(
        "molde_snapshot_bytes",
        "Bytes the snapshots hold on disk, by namespace, snapshotter and kind",
        snapshot_bytes,
    );
    registry.register(
        "molde_shims_running",
        "Container shims running (one per running container), by namespace",
        shims,
    );
}

/// How many other nodes the cluster has registered; none without a cluster.
async fn cluster_peers(channel: &tonic::transport::Channel) -> Option<i64> {
    use molde_api::molde::services::cluster::v1::{NodesRequest, cluster_client::ClusterClient};
    let nodes = ClusterClient::new(channel.clone())
        .nodes(NodesRequest {})
        .await
        .ok()?
        .into_inner();
    Some(nodes.nodes.iter().filter(|n| n.name != nodes.self_name).count() as i64)
}

/// A running container's labels, readings and writable layer's bytes.
type Reading = (
    Container,
    molde_api::molde::services::runtime::v1::StatsResponse,
    u64,
);

/// Every running container of the namespaces `names` with its readings and
/// the bytes its writable layer holds; and how many run in each namespace.
async fn containers(
    channel: &tonic::transport::Channel,
    names: &[String],
) -> (Vec<Reading>, std::collections::HashMap<String, usize>) {
    use molde_api::containerd::services::containers::v1::{
        GetContainerRequest, containers_client::ContainersClient,
    };
    use molde_api::containerd::services::snapshots::v1::{UsageRequest, snapshots_client::SnapshotsClient};
    use molde_api::molde::services::runtime::v1::{self as rt, runtime_client::RuntimeClient};
    let mut out = Vec::new();
    let mut running = std::collections::HashMap::new();
    for name in names {
        let mut runtime = RuntimeClient::new(channel.clone());
        let Ok(list) = runtime
            .list(namespaced(
                name,
                rt::ListRequest {
                    all: false,
                    ids: Vec::new(),
                },
            ))
            .await
        else {
            continue;
        };
        let list = list.into_inner().containers;
        running.insert(name.clone(), list.len());
        for c in list {
            let Ok(stats) = runtime
                .stats(namespaced(name, rt::StatsRequest { id: c.id.clone() }))
                .await
            else {
                continue;
            };
            let label = |k: &str| c.labels.get(k).cloned().unwrap_or_default();
            let pod = label("io.kubernetes.pod.name");
            let labels = Container {
                name: if c.name.is_empty() {
                    c.id.clone()
                } else {
                    c.name.clone()
                },
                id: c.id.clone(),
                image: c.image.clone(),
                namespace: if pod.is_empty() {
                    name.clone()
                } else {
                    label("io.kubernetes.pod.namespace")
                },
                container: label("io.kubernetes.container.name"),
                pod,
            };
            let layer = match ContainersClient::new(channel.clone())
                .get(namespaced(name, GetContainerRequest { id: c.id.clone() }))
                .await
                .ok()
                .and_then(|r| r.into_inner().container)
            {
                Some(rec) if !rec.snapshot_key.is_empty() => SnapshotsClient::new(channel.clone())
                    .usage(namespaced(
                        name,
                        UsageRequest {
                            snapshotter: rec.snapshotter,
                            key: rec.snapshot_key,
                        },
                    ))
                    .await
                    .map(|u| u.into_inner().size.max(0) as u64)
                    .unwrap_or(0),
                _ => 0,
            };
            out.push((labels, stats.into_inner(), layer));
        }
    }
    (out, running)
}
