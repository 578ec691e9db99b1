//! molded's configuration: built-in defaults, then `/etc/molde/config.toml` (or
//! `--config`), then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Services `molded` can host. `all` in the config means every one of them.
pub const SERVICES: &[&str] = &["content", "snapshotter", "transfer", "runtime", "builder", "cri"];

pub const DEFAULT_CONFIG: &str = "/etc/molde/config.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: metadata and blobs.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot.
    pub state: PathBuf,
    /// Unix socket the daemon serves on.
    pub address: String,
    /// Services this process hosts; empty means all that are not remote.
    pub services: Vec<String>,
    /// Services reached at another address (split mode): name → address.
    pub remote: BTreeMap<String, String>,
    pub gc: GcConfig,
    pub snapshotter: SnapshotterConfig,
    pub transfer: TransferConfig,
    pub builder: BuilderConfig,
    pub cri: CriConfig,
    pub registry: RegistryConfig,
    pub cluster: ClusterConfig,
    pub grpc: GrpcConfig,
    pub debug: DebugConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    /// What reading the file found worth saying (logged once the log is up).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// `[debug]`: molded's own log (on stderr: the journal under systemd).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// error, warn, info (the default), debug or trace: for molde's own
    /// targets; the libraries underneath stay at warn. `RUST_LOG`, when
    /// set, overrides both with its own directives.
    pub level: String,
    /// text (the default) or json: one JSON object per line.
    pub format: String,
}

/// `[metrics]`: Prometheus metrics over HTTP (docs/operations.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// host:port serving `/metrics` and `/v1/metrics`, e.g.
    /// "127.0.0.1:1338"; empty (the default): no metrics endpoint.
    pub address: String,
}

/// `[tracing]`: OpenTelemetry traces over OTLP/gRPC (docs/operations.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. "http://127.0.0.1:4317"; empty (the
    /// default): no traces.
    pub otlp_endpoint: String,
    /// The share of traces started here that are kept (0.0–1.0); a trace
    /// begun by a caller (the CLI, a front, a peer) follows the caller's choice.
    pub sampling_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            sampling_ratio: 1.0,
        }
    }
}

/// The levels `[debug] level` and `--log-level` take.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// `[grpc]`: who may reach molde.sock besides root.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// The group the main socket is shared with (mode 0660), as docker's
    /// `docker` group: its members run `molde` without root. Root only when unset.
    pub gid: Option<u32>,
}

/// `[cluster]`: many nodes, one etcd (see docs/cluster.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://HOST:2379`); empty: this molded runs alone.
    pub etcd: Vec<String>,
    /// This node's name in the cluster; default: the host name.
    pub node_name: String,
    /// Where peers reach this node (host:port).
    pub advertise: String,
    /// The cluster's CA and this node's certificate (`molde cluster
    /// init|join`): with them, peers reach this node over mutual TLS.
    pub certs: Option<PathBuf>,
    /// Every pull on this node (CRI's and builds' too) resolves a tag the
    /// cluster holds when its registry cannot be reached, as `molde pull
    /// --cluster-resolve` does.
    pub resolve: bool,
    /// etcd over TLS (`https://` endpoints): the CA that signed etcd's
    /// certificate, and this node's client certificate and key (etcd's
    /// `--client-cert-auth`, as kubeadm's etcd wants).
    pub etcd_ca: Option<PathBuf>,
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
    /// etcd's auth: a user, and a file holding its password (root's alone).
    pub etcd_user: Option<String>,
    pub etcd_password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriConfig {
    /// The CRI socket the kubelet talks to; empty: `cri.sock` next to `address`.
    pub address: String,
    /// Where pods' network configs are; the first by name is used.
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The streaming server's address and port (0: any free port).
    pub stream_address: String,
    pub stream_port: u16,
    /// A PEM certificate (chain) and key: the streaming server speaks TLS.
    pub stream_tls_cert: Option<PathBuf>,
    pub stream_tls_key: Option<PathBuf>,
    /// "cgroupfs" or "systemd", as the kubelet is configured.
    pub cgroup_driver: String,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self {
            address: String::new(),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            stream_address: "127.0.0.1".into(),
            stream_port: 0,
            stream_tls_cert: None,
            stream_tls_key: None,
            cgroup_driver: "cgroupfs".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// `hosts.toml` per registry (containerd's format) for every pull:
    /// `<config_path>/<registry host>/hosts.toml`, `_default/` for the rest.
    pub config_path: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            config_path: PathBuf::from("/etc/molde/certs.d"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuilderConfig {
    /// Bytes of layers the build cache may hold; after each build the least
    /// recently used records beyond it are dropped.
    pub cache_max_bytes: u64,
    /// Entitlements builds may be granted with `molde build --allow`
    /// (`network.host`); one not listed here is refused even when asked for.
    pub entitlements: Vec<String>,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            cache_max_bytes: 10 << 30,
            entitlements: vec!["network.host".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// The old name of `[registry] config_path`: read, with a warning,
    /// when that is not set.
    #[serde(skip_serializing)]
    pub hosts_dir: Option<PathBuf>,
    /// Blobs a pull fetches at once.
    pub parallel: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            hosts_dir: None,
            parallel: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotterConfig {
    /// Read layer blobs straight from the content store's files when content
    /// runs in the same process (otherwise they stream over content.v1 Read).
    pub content_fast_path: bool,
}

impl Default for SnapshotterConfig {
    fn default() -> Self {
        Self {
            content_fast_path: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between scheduled collections.
    pub interval_secs: u64,
    /// Seconds an ingest may sit idle before a collection removes it.
    pub ingest_expiry_secs: u64,
    /// Milliseconds between a delete and the collection it triggers.
    pub delay_ms: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval_secs: 3600,
            ingest_expiry_secs: 24 * 3600,
            delay_ms: 100,
        }
    }
}

impl GcConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs.max(1))
    }
    pub fn ingest_expiry(&self) -> Duration {
        Duration::from_secs(self.ingest_expiry_secs)
    }
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/var/lib/molde"),
            state: PathBuf::from("/run/molde"),
            address: "/run/molde/molde.sock".into(),
            services: Vec::new(),
            remote: BTreeMap::new(),
            gc: GcConfig::default(),
            snapshotter: SnapshotterConfig::default(),
            transfer: TransferConfig::default(),
            builder: BuilderConfig::default(),
            cri: CriConfig::default(),
            registry: RegistryConfig::default(),
            cluster: ClusterConfig::default(),
            grpc: GrpcConfig::default(),
            debug: DebugConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: TracingConfig::default(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Reads `path`; a missing default config file is not an error, a missing
    /// explicitly named one is.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        let mut c: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        if let Some(old) = c.transfer.hosts_dir.take() {
            let table: toml::Table = toml::from_str(&text).unwrap_or_default();
            let set = table.get("registry").and_then(|r| r.get("config_path")).is_some();
            if set {
                c.warnings.push(format!(
                    "config {}: [transfer] hosts_dir is ignored: [registry] config_path is set",
                    path.display()
                ));
            } else {
                c.warnings.push(format!(
                    "config {}: [transfer] hosts_dir is the old name of [registry] config_path; use that",
                    path.display()
                ));
                c.registry.config_path = old;
            }
        }
        if !c.debug.level.is_empty() && !LOG_LEVELS.contains(&c.debug.level.as_str()) {
            bail!(
                "config {}: [debug] level {:?}: expected one of {}",
                path.display(),
                c.debug.level,
                LOG_LEVELS.join(", ")
            );
        }
        if !(0.0..=1.0).contains(&c.tracing.sampling_ratio) {
            bail!(
                "config {}: [tracing] sampling_ratio {}: expected a number from 0.0 to 1.0",
                path.display(),
                c.tracing.sampling_ratio
            );
        }
        let endpoint = c.tracing.otlp_endpoint.as_str();
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            bail!(
                "config {}: [tracing] otlp_endpoint {:?}: expected http://HOST:PORT (or https://)",
                path.display(),
                c.tracing.otlp_endpoint
            );
        }
        if !matches!(c.debug.format.as_str(), "" | "text" | "json") {
            bail!(
                "config {}: [debug] format {:?}: expected text or json",
                path.display(),
                c.debug.format
            );
        }
        Ok(c)
    }

    /// Whether this process serves `service` itself.
    pub fn hosts(&self, service: &str) -> bool {
        !self.remote.contains_key(service)
            && (self.services.is_empty() || self.services.iter().any(|s| s == service))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for s in self.services.iter().chain(self.remote.keys()) {
            if !SERVICES.contains(&s.as_str()) {
                bail!("unknown service {s:?}: molded hosts {}", SERVICES.join(", "));
            }
        }
        for s in &self.services {
            if self.remote.contains_key(s) {
                bail!("service {s:?} is both hosted here and configured as remote");
            }
        }
        if self.remote.contains_key("cri") {
            bail!("cri cannot be remote: the kubelet reaches it on its own socket ([cri] address)");
        }
        if !["cgroupfs", "systemd"].contains(&self.cri.cgroup_driver.as_str()) {
            bail!(
                "[cri] cgroup_driver {:?}: expected \"cgroupfs\" or \"systemd\"",
                self.cri.cgroup_driver
            );
        }
        Ok(())
    }
}

impl Config {
    /// Where pulls find `hosts.toml` files: `[registry] config_path`.
    pub fn hosts_dir(&self) -> PathBuf {
        self.registry.config_path.clone()
    }

    /// The CRI socket: `[cri] address`, else `cri.sock` next to the main socket.
    pub fn cri_address(&self) -> String {
        if !self.cri.address.is_empty() {
            return self.cri.address.clone();
        }
        let main = self.address.strip_prefix("unix://").unwrap_or(&self.address);
        Path::new(main)
            .parent()
            .unwrap_or(Path::new("/run/molde"))
            .join("cri.sock")
            .display()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_mode_config() {
        let c: Config = toml::from_str(
            r#"
            root = "/tmp/r"
            address = "/tmp/r/m.sock"
            [remote]
            content = "unix:///tmp/c.sock"
            [gc]
            interval_secs = 5
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert!(!c.hosts("content"));
        assert_eq!(c.gc.interval(), Duration::from_secs(5));
        assert_eq!(c.gc.delay_ms, 100);
    }

    #[test]
    fn the_split_mode_configs_in_deploy_parse() {
        for (name, text) in [
            ("content", include_str!("../../../deploy/split/content.toml")),
            (
                "snapshotter",
                include_str!("../../../deploy/split/snapshotter.toml"),
            ),
            ("transfer", include_str!("../../../deploy/split/transfer.toml")),
            ("runtime", include_str!("../../../deploy/split/runtime.toml")),
            ("builder", include_str!("../../../deploy/split/builder.toml")),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            c.validate().unwrap();
            for s in SERVICES {
                assert_eq!(c.hosts(s), *s == name, "{name}.toml hosts {s}?");
            }
        }
        let front: Config = toml::from_str(include_str!("../../../deploy/split/front.toml")).unwrap();
        front.validate().unwrap();
        assert!(
            SERVICES.iter().all(|s| !front.hosts(s) || *s == "cri"),
            "the front hosts nothing but CRI, which the kubelet reaches on its own socket"
        );
        let all: Config = toml::from_str(include_str!("../../../deploy/config.example.toml")).unwrap();
        all.validate().unwrap();
        assert!(SERVICES.iter().all(|s| all.hosts(s)));
    }

    #[test]
    fn rejects_unknown_keys_and_services() {
        assert!(toml::from_str::<Config>("roots = 1").is_err());
        let c: Config = toml::from_str(r#"services = ["nope"]"#).unwrap();
        assert!(c.validate().is_err());
    }
}
