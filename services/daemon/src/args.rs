//! molded's command line, and the configuration it makes with the file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

use crate::config::Config;
use crate::info;

#[derive(Debug, Parser)]
#[command(name = "molded", version = info::VERSION, about = "The molde daemon")]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// Share the socket with this group (name or GID): its members may use molde
    #[arg(long, short = 'G')]
    group: Option<String>,
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
    /// How much molde itself logs ([debug] level); libraries stay at warn
    #[arg(long, value_parser = crate::config::LOG_LEVELS.to_vec())]
    log_level: Option<String>,
    /// text or json, one object per line ([debug] format)
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The configuration file's keys (`config default`, `config check FILE`)
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Write molded's manual page into DIR (the Debian package's build does)
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Print the default configuration, every key with its value
    Default,
    /// Check a configuration file (unknown keys, bad values), as molded would read it
    Check {
        /// The file [default: /etc/molde/config.toml]
        file: Option<PathBuf>,
    },
}

/// Runs `molded config ...`: output on stdout, an error once on stderr.
pub fn config_command(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Default => {
            print!(
                "{}",
                toml::to_string_pretty(&Config::default()).context("writing the defaults")?
            );
        }
        ConfigCmd::Check { file } => {
            let file = file.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
            if !file.exists() {
                anyhow::bail!("config {}: no such file", file.display());
            }
            let c = Config::load(Some(&file))?;
            c.validate()
                .with_context(|| format!("config {}", file.display()))?;
            println!("config {}: ok", file.display());
        }
    }
    Ok(())
}

pub fn config(args: Args) -> anyhow::Result<Config> {
    let mut c = Config::load(args.config.as_deref())?;
    if let Some(l) = args.log_level {
        c.debug.level = l;
    }
    if let Some(f) = args.log_format {
        c.debug.format = f;
    }
    if let Some(r) = args.root {
        c.root = r;
    }
    if let Some(s) = args.state {
        c.state = s;
    }
    if let Some(a) = args.address {
        c.address = a;
    }
    if let Some(g) = args.group {
        c.grpc.gid = Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(&g)
                .with_context(|| format!("--group {g:?}: looking the group up"))?
                .with_context(|| format!("--group {g:?}: no such group"))?
                .gid
                .as_raw(),
        });
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
