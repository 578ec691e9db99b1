//! The connection to molded, and the commands about the daemon itself.

use anyhow::{Context, Result, anyhow};
use molde_api::client::Address;
use molde_api::containerd::services::introspection::v1::{
    PluginsRequest, introspection_client::IntrospectionClient,
};
use molde_api::containerd::services::version::v1::version_client::VersionClient;
use molde_api::molde::services::gc::v1::{CollectRequest, gc_client::GcClient};
use tonic::transport::Channel;

/// A connected daemon and the namespace requests act in.
#[derive(Clone)]
pub struct Daemon {
    pub channel: Channel,
    pub namespace: String,
    /// The namespace as the header every request carries.
    header: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// This command's trace context (W3C `traceparent`), on every request,
    /// so the daemon's spans for one command form one trace.
    traceparent: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    pub address: String,
}

/// The trace this command's requests belong to: the caller's when the
/// environment carries one (`TRACEPARENT`, as OpenTelemetry's environment
/// carrier names it), else a new one, sampled.
fn traceparent() -> tonic::metadata::MetadataValue<tonic::metadata::Ascii> {
    let valid = |t: &str| {
        let parts: Vec<&str> = t.split('-').collect();
        parts.len() == 4
            && [2, 32, 16, 2]
                .iter()
                .zip(&parts)
                .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let from_env = std::env::var("TRACEPARENT").ok().filter(|t| valid(t));
    let value = from_env.unwrap_or_else(|| {
        let trace = uuid::Uuid::new_v4().simple().to_string();
        let span = uuid::Uuid::new_v4().simple().to_string();
        format!("00-{trace}-{}-01", &span[..16])
    });
    value
        .parse()
        .unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static(""))
}

impl Daemon {
    pub async fn connect(address: &str, namespace: &str) -> Result<Daemon> {
        // Refused here, before any request: a name that is not valid would
        // not fit in the header, and a request without it acts in `default`.
        molde_common::context::validate_namespace(namespace)
            .map_err(|e| anyhow!("-n/--namespace (or MOLDE_NAMESPACE): {}", e.0))?;
        let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = namespace
            .parse()
            .map_err(|_| anyhow!("-n/--namespace {namespace:?}: not a valid header value"))?;
        let addr = Address::parse(address).map_err(|e| anyhow!("--address: {e}"))?;
        let channel = molde_api::client::connect(&addr).await.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            if permission_denied(&e) {
                return anyhow!(
                    "permission denied on molded's socket {addr}: run molde as root, or have molded \
                     share its socket with a group ([grpc] gid in /etc/molde/config.toml, or \
                     molded --group NAME) and join that group (usermod -aG NAME $USER, then log in again)"
                );
            }
            anyhow!(
                "cannot connect to molded at {addr}: {cause}\n\
                 is molded running? start it with `molded` (as root), \
                 or point --address / MOLDE_ADDRESS at its socket"
            )
        })?;
        Ok(Daemon {
            channel,
            namespace: namespace.to_string(),
            header,
            traceparent: traceparent(),
            address: addr.to_string(),
        })
    }

    /// Wraps a message with the namespace header.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert(molde_api::NAMESPACE_HEADER, self.header.clone());
        r.metadata_mut().insert("traceparent", self.traceparent.clone());
        r
    }
}

/// Whether connecting failed because the socket's mode refused this user.
fn permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || err.to_string().contains("Permission denied")
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Turns a gRPC status into an error that reads like the daemon's message.
pub fn status(context: impl std::fmt::Display) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |s| {
        if s.code() == tonic::Code::Unimplemented && s.message().is_empty() {
            // The service is not hosted by (or forwarded from) this molded.
            return anyhow!(
                "{context}: the molded at this address does not serve what this needs \
                 (it runs with --service; host the service there or forward it with --remote SERVICE=ADDRESS)"
            );
        }
        anyhow!("{context}: {}", s.message())
    }
}

pub async fn version(d: &Daemon) -> Result<()> {
    println!("Client:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
    let v = VersionClient::new(d.channel.clone())
        .version(d.request(()))
        .await
        .map_err(status("asking molded for its version"))?
        .into_inner();
    println!("Server:\n  Version:  {}\n  Revision: {}", v.version, v.revision);
    Ok(())
}

pub async fn info(d: &Daemon) -> Result<()> {
    let mut c = IntrospectionClient::new(d.channel.clone());
    let server = c
        .server(d.request(()))
        .await
        .map_err(status("asking molded about itself"))?
        .into_inner();
    let plugins = c
        .plugins(d.request(PluginsRequest::default()))
        .await
        .map_err(status("listing molded's services"))?
        .into_inner()
        .plugins;
    println!("Address:   {}", d.address);
    println!("Namespace: {}", d.namespace);
    println!("UUID:      {}", server.uuid);
    println!("PID:       {}", server.pid);
    println!("Services:");
    for p in plugins {
        let mut exports: Vec<_> = p.exports.iter().map(|(k, v)| format!("{k}={v}")).collect();
        exports.sort();
        println!("  {}.{}  {}", p.r#type, p.id, exports.join(" "));
    }
    // Each service's state as its health check says (grpc.health.v1).
    let mut health = tonic_health::pb::health_client::HealthClient::new(d.channel.clone());
    println!("Health:");
    for name in [
        "",
        "content",
        "snapshotter",
        "transfer",
        "runtime",
        "builder",
        "cri",
    ] {
        let state = match health
            .check(d.request(tonic_health::pb::HealthCheckRequest { service: name.into() }))
            .await
        {
            Ok(r) => tonic_health::pb::health_check_response::ServingStatus::try_from(r.into_inner().status)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| "UNKNOWN".into()),
            // Not a service this molded hosts (it may forward to it).
            Err(s) if s.code() == tonic::Code::NotFound => continue,
            Err(s) => format!("unknown ({})", s.message()),
        };
        println!("  {:<12} {state}", if name.is_empty() { "molded" } else { name });
    }
    Ok(())
}

pub async fn gc(d: &Daemon) -> Result<()> {
    let r = GcClient::new(d.channel.clone())
        .collect(d.request(CollectRequest {}))
        .await
        .map_err(status("garbage collection"))
        .context("molde gc")?
        .into_inner();
    println!(
        "removed {} content records, {} blobs, {} ingests, {} leases in {} ms",
        r.content_records,
        r.blobs,
        r.ingests,
        r.leases,
        r.duration_us / 1000
    );
    Ok(())
}

/// `molde node ls`: the cluster's nodes, this one marked.
pub async fn nodes(d: &Daemon) -> Result<()> {
    use molde_api::molde::services::cluster::v1::{NodesRequest, cluster_client::ClusterClient};
    let r = ClusterClient::new(d.channel.clone())
        .nodes(d.request(NodesRequest {}))
        .await
        .map_err(status("listing the cluster's nodes"))?
        .into_inner();
    println!(
        "{:<24} {:<22} {:<8} {:>10} {:>7}",
        "NAME", "ADDRESS", "VERSION", "FREE DISK", "IMAGES"
    );
    for n in r.nodes {
        let me = if n.name == r.self_name { " *" } else { "" };
        println!(
            "{:<24} {:<22} {:<8} {:>10} {:>7}",
            format!("{}{me}", n.name),
            n.address,
            n.version,
            crate::output::human_size(n.free_disk_bytes as i64),
            n.images
        );
    }
    Ok(())
}

/// A connection to node `node` of the cluster the local molded is part of:
/// through the peer transport, with this node's certificate from `certs`.
pub async fn cluster_node(
    local: &Daemon,
    certs: &std::path::Path,
    identity: Option<&str>,
    node: &str,
) -> Result<Daemon> {
    let all = cluster_nodes(local, certs, identity).await?;
    let known: Vec<String> = all.iter().map(|(n, _)| n.clone()).collect();
    all.into_iter()
        .find(|(n, _)| n == node)
        .map(|(_, d)| d)
        .ok_or_else(|| {
            anyhow!(
                "no node {node:?} is registered in the cluster (nodes: {})",
                known.join(", ")
            )
        })
}

/// Every node of the cluster, each reached through the peer transport (this
/// one through its socket) with the certificate `identity` names in
/// `certs` (an admin's), or the local node's own.
pub async fn cluster_nodes(
    local: &Daemon,
    certs: &std::path::Path,
    identity: Option<&str>,
) -> Result<Vec<(String, Daemon)>> {
    use molde_api::molde::services::cluster::v1::{NodesRequest, cluster_client::ClusterClient};
    let r = ClusterClient::new(local.channel.clone())
        .nodes(local.request(NodesRequest {}))
        .await
        .map_err(status("listing the cluster's nodes"))?
        .into_inner();
    let who = identity.unwrap_or(&r.self_name);
    let id = molde_cluster::certs::Identity::load(certs, who).map_err(|e| {
        anyhow!("the cluster certificate of {who}: {e} (--cluster-certs, --cluster-identity)")
    })?;
    let mut out = Vec::new();
    for n in r.nodes {
        if n.name == r.self_name {
            out.push((n.name, local.clone()));
            continue;
        }
        let channel = molde_cluster::peer::channel(&id, &n.name, &n.address).map_err(anyhow::Error::msg)?;
        out.push((
            n.name.clone(),
            Daemon {
                channel,
                namespace: local.namespace.clone(),
                header: local.header.clone(),
                traceparent: local.traceparent.clone(),
                address: format!("{} ({})", n.name, n.address),
            },
        ));
    }
    Ok(out)
}

/// `molde cluster revoke`: the certificate DIR/NAME.crt recorded as revoked
/// in the cluster the local molded is part of.
pub async fn revoke(local: &Daemon, dir: &std::path::Path, name: &str) -> Result<()> {
    use molde_api::molde::services::cluster::v1::{RevokeRequest, cluster_client::ClusterClient};
    let cert = molde_cluster::certs::Presented::load(&dir.join(format!("{name}.crt")))
        .map_err(|e| anyhow!("molde cluster revoke: {e}"))?;
    ClusterClient::new(local.channel.clone())
        .revoke(local.request(RevokeRequest {
            name: cert.name.clone(),
            serial: cert.serial.clone(),
            not_after: cert.not_after,
        }))
        .await
        .map_err(status(format!("revoking the certificate of {name}")))?;
    println!("revoked {} (serial {})", cert.name, cert.serial);
    Ok(())
}
