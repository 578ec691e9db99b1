//! molde: the command-line client. A thin client: every command is one or a few
//! gRPC calls to molded; the daemon owns the logic.

mod attach;
mod auth;
mod build;
mod commit;
mod compose;
mod containers;
mod content;
mod copy;
mod daemon;
mod events;
mod images;
mod inspect;
mod lifecycle;
mod network;
mod output;
mod run;
mod system;
mod template;
mod transfer;
mod volume;

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "molde", version, about = "Build and run containers with molde")]
struct Cli {
    /// molded's socket
    #[arg(
        long,
        global = true,
        env = "MOLDE_ADDRESS",
        default_value = "/run/molde/molde.sock"
    )]
    address: String,
    /// Namespace to work in
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "MOLDE_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Run the command on this node of the cluster, through the peer transport
    #[arg(long, global = true, env = "MOLDE_NODE")]
    node: Option<String>,
    /// Run `images` or `ps` on every node of the cluster
    #[arg(long, global = true)]
    all_nodes: bool,
    /// The cluster's CA and this node's certificate, for --node and --all-nodes
    #[arg(
        long,
        global = true,
        env = "MOLDE_CLUSTER_CERTS",
        default_value = "/etc/molde/cluster"
    )]
    cluster_certs: std::path::PathBuf,
    /// The certificate in --cluster-certs that --node and --all-nodes
    /// present: an admin's (molde cluster join --admin NAME); the local
    /// node's own when not given, which may only read from other nodes
    #[arg(long, global = true, env = "MOLDE_CLUSTER_IDENTITY")]
    cluster_identity: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the client's and the daemon's versions
    Version,
    /// Show what the daemon hosts and where it keeps its state
    Info,
    /// Manage blobs in the content store
    #[command(subcommand)]
    Content(content::ContentCmd),
    /// List images (`molde images ls` is the same), or prune them
    #[command(args_conflicts_with_subcommands = true, alias = "image")]
    Images {
        #[command(subcommand)]
        cmd: Option<images::ImagesCmd>,
        #[command(flatten)]
        list: images::ListArgs,
    },
    /// Run a command in a new container
    Run(Box<run::RunArgs>),
    /// Create a container without starting it
    Create(Box<run::RunArgs>),
    /// Start created or stopped containers
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Attach to the container's output and exit with its status
        #[arg(short, long)]
        attach: bool,
        /// Attach stdin too
        #[arg(short, long)]
        interactive: bool,
        /// The keys that detach, e.g. ctrl-p,ctrl-q
        #[arg(long, default_value = attach::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
    },
    /// Stop and start containers again
    Restart {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Seconds to wait before SIGKILL (the container's --stop-timeout, else 10)
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
    },
    /// Freeze every process of containers
    Pause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Thaw paused containers
    Unpause {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Give a container another name
    Rename { container: String, new_name: String },
    /// Change containers' limits (kept across restarts)
    Update(lifecycle::UpdateArgs),
    /// List a container's published ports, or the host address of one
    Port {
        container: String,
        /// PRIVATE_PORT[/PROTO]
        private_port: Option<String>,
    },
    /// Copy files out of or into a container (running or not): CONTAINER:PATH DEST|- or SRC|- CONTAINER:PATH
    Cp { src: String, dest: String },
    /// Make an image of a container's changes
    Commit(commit::CommitArgs),
    /// Write a container's filesystem as a tar
    Export {
        container: String,
        /// Write to this file instead of stdout
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// List what a container changed in its filesystem (A added, C changed, D deleted)
    Diff { container: String },
    /// Write molde's manual pages (one per command) into DIR
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
    /// Print a shell completion script: source it from your shell's startup file
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run a command in a running container
    Exec(run::ExecArgs),
    /// Attach the terminal to a running container's input and output
    Attach {
        id: String,
        /// Do not send stdin
        #[arg(long)]
        no_stdin: bool,
        /// The keys that detach, e.g. ctrl-p,ctrl-q
        #[arg(long, default_value = attach::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Forward SIGINT and SIGTERM to the container (without a terminal)
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
              default_missing_value = "true")]
        sig_proxy: bool,
    },
    /// List containers
    Ps(containers::PsArgs),
    /// Show a container's output
    Logs {
        id: String,
        /// Keep following the output until the container exits
        #[arg(short, long)]
        follow: bool,
        /// Only the last N records
        #[arg(long)]
        tail: Option<i64>,
        /// Prefix each record with its time
        #[arg(short, long)]
        timestamps: bool,
    },
    /// Send a signal to containers
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Signal name or number
        #[arg(short, long, default_value = "KILL")]
        signal: String,
    },
    /// Stop containers: SIGTERM, then SIGKILL after the grace period
    Stop {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Seconds to wait before SIGKILL (the container's --stop-timeout, else 10)
        #[arg(short = 't', long = "time")]
        time: Option<u32>,
    },
    /// Wait for containers to exit and print their exit codes
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Kill running containers first
        #[arg(short, long)]
        force: bool,
        /// Remove the containers' anonymous volumes too
        #[arg(short, long)]
        volumes: bool,
    },
    /// Run a project of services from a compose file
    Compose(compose::ComposeArgs),
    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Stream what happens to containers, images, networks and volumes
    Events(events::EventsArgs),
    /// What molded's images, containers and volumes take, and pruning them
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Manage the build cache
    Builder {
        #[command(subcommand)]
        cmd: BuilderCmd,
    },
    /// Pull an image from a registry and unpack it
    Pull {
        reference: String,
        /// os/arch[/variant]; the host's by default
        #[arg(long)]
        platform: Option<String>,
        /// Cluster mode: if the registry cannot be reached, resolve the tag
        /// as the cluster's nodes hold it and take its blobs from them
        #[arg(long)]
        cluster_resolve: bool,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Push an image to a registry (uploads only what the registry lacks)
    Push {
        name: String,
        /// Where to push; the image's own name by default
        destination: Option<String>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Write images to an OCI image layout tar
    Save {
        #[arg(required = true)]
        names: Vec<String>,
        /// Write to this file instead of stdout
        #[arg(short, long)]
        output: Option<std::path::PathBuf>,
    },
    /// Load images from a tar (OCI image layout or docker-archive)
    Load {
        /// Read from this file instead of stdin
        #[arg(short, long)]
        input: Option<std::path::PathBuf>,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Remove image names (content goes with the next garbage collection)
    Rmi {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image another name
    Tag { source: String, target: String },
    /// Show a container's or an image's details as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        /// A template applied to each object: '{{.State.Running}}', '{{json .Config}}'
        #[arg(short, long)]
        format: Option<template::Template>,
        /// Look only for this kind of object
        #[arg(long = "type", value_enum)]
        kind: Option<inspect::Kind>,
    },
    /// List a container's processes
    Top { id: String },
    /// Show containers' resource usage, live (every running one without arguments)
    Stats(containers::StatsArgs),
    /// Store credentials for a registry in ~/.docker/config.json
    Login {
        registry: String,
        #[arg(short, long)]
        username: String,
        /// Read the password from stdin
        #[arg(long)]
        password_stdin: bool,
        #[arg(short, long, conflicts_with = "password_stdin")]
        password: Option<String>,
    },
    /// Remove stored credentials for a registry
    Logout { registry: String },
    /// Run a garbage collection now and show what it removed
    Gc,
    /// The nodes of the cluster this molded is part of
    #[command(subcommand)]
    Node(NodeCmd),
    /// A cluster's certificates (no daemon needed)
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, clap::Subcommand)]
enum ClusterCmd {
    /// Write a new cluster CA (ca.crt, ca.key) into DIR
    Init {
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Write a node's certificate and key (--node-name NAME), or an
    /// administrator's (--admin NAME), into DIR, signed by its CA
    #[command(group(clap::ArgGroup::new("who").required(true).args(["node_name", "admin"])))]
    Join {
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long)]
        node_name: Option<String>,
        /// An administrator's certificate: may run any command on any node
        #[arg(long)]
        admin: Option<String>,
        /// Days the certificate is valid
        #[arg(long, default_value_t = molde_cluster::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Issue NAME's certificate again (a new key, the same role) in DIR
    Renew {
        #[arg(long)]
        dir: std::path::PathBuf,
        name: String,
        /// Days the new certificate is valid
        #[arg(long, default_value_t = molde_cluster::certs::DEFAULT_DAYS)]
        days: u32,
    },
    /// Have every node refuse NAME's certificate (DIR/NAME.crt), through
    /// the local molded's cluster
    Revoke {
        #[arg(long)]
        dir: std::path::PathBuf,
        name: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ContainerCmd {
    /// Remove every stopped container
    Prune {
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
enum NodeCmd {
    /// List the nodes registered now
    Ls,
}

#[derive(Debug, clap::Subcommand)]
enum BuilderCmd {
    /// Drop build cache records, least recently used first
    Prune {
        /// Drop every record (and the RUN --mount=type=cache directories)
        #[arg(short, long)]
        all: bool,
        /// Keep records whose layers take at most this much (e.g. 2GB)
        #[arg(long, value_parser = parse_size, default_value = "0")]
        keep_storage: u64,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    molde_common::parse_size(s).ok_or_else(|| format!("{s:?}: not a size (e.g. 512MB, 2GB)"))
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("molde: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    // Commands that need no daemon.
    match &cli.command {
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "molde", &mut std::io::stdout());
            return Ok(());
        }
        Command::Manpages { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            molde_common::man::write_pages(cmd, "1", dir)
                .map_err(|e| anyhow!("writing manual pages into {}: {e}", dir.display()))?;
            return Ok(());
        }
        Command::Cluster(ClusterCmd::Init { dir }) => {
            let crt = molde_cluster::certs::init(dir).map_err(|e| anyhow!("molde cluster init: {e}"))?;
            println!("{}", crt.display());
            return Ok(());
        }
        Command::Cluster(ClusterCmd::Join {
            dir,
            node_name,
            admin,
            days,
        }) => {
            let crt = match (node_name, admin) {
                (Some(n), None) => molde_cluster::certs::join(dir, n, *days),
                (None, Some(a)) => molde_cluster::certs::join_admin(dir, a, *days),
                _ => Err(molde_common::Error::InvalidArgument(
                    "give one of --node-name and --admin".into(),
                )),
            }
            .map_err(|e| anyhow!("molde cluster join: {e}"))?;
            println!("{}", crt.display());
            return Ok(());
        }
        Command::Cluster(ClusterCmd::Renew { dir, name, days }) => {
            let crt = molde_cluster::certs::renew(dir, name, *days)
                .map_err(|e| anyhow!("molde cluster renew: {e}"))?;
            println!("{}", crt.display());
            return Ok(());
        }
        Command::Logout { registry } => {
            if auth::remove(registry)? {
                println!("Removed login credentials for {registry}");
            } else {
                println!("Not logged in to {registry}");
            }
            return Ok(());
        }
        _ => {}
    }
    let local = daemon::Daemon::connect(&cli.address, &cli.namespace).await?;
    if let Command::Login {
        registry,
        username,
        password_stdin,
        password,
    } = &cli.command
    {
        let password = match (password, password_stdin) {
            (Some(p), _) => p.clone(),
            (None, true) => {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
                s.trim_end_matches(['\n', '\r']).to_string()
            }
            (None, false) => anyhow::bail!("give the password with --password-stdin (or --password)"),
        };
        return transfer::login(&local, registry, username, &password).await;
    }
    if let Command::Cluster(ClusterCmd::Revoke { dir, name }) = &cli.command {
        return daemon::revoke(&local, dir, name).await;
    }
    let identity = cli.cluster_identity.as_deref();
    if cli.all_nodes {
        let nodes = daemon::cluster_nodes(&local, &cli.cluster_certs, identity).await?;
        for (name, d) in nodes {
            println!("== {name} ==");
            match &cli.command {
                Command::Images { cmd: None, list } => {
                    images::run(&d, images::ImagesCmd::Ls(list.clone())).await?
                }
                Command::Ps(a) => containers::ps(&d, a.clone()).await?,
                _ => anyhow::bail!("--all-nodes goes with `images` and `ps`"),
            }
        }
        return Ok(());
    }
    let d = match &cli.node {
        Some(node) => daemon::cluster_node(&local, &cli.cluster_certs, identity, node).await?,
        None => local,
    };
    match cli.command {
        Command::Version => daemon::version(&d).await,
        Command::Info => daemon::info(&d).await,
        Command::Content(c) => content::run(&d, c).await,
        Command::Images { cmd, list } => images::run(&d, cmd.unwrap_or(images::ImagesCmd::Ls(list))).await,
        Command::Compose(a) => match compose::run(&d, a).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("molde: {e:#}");
                std::process::exit(run::exit_code(&e));
            }
        },
        Command::Run(a) => match run::run(&d, *a).await {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("molde: {e:#}");
                std::process::exit(run::exit_code(&e));
            }
        },
        Command::Create(a) => match run::create(&d, *a).await {
            Ok(()) => Ok(()),
            Err(e) => {
                eprintln!("molde: {e:#}");
                std::process::exit(run::exit_code(&e));
            }
        },
        Command::Start {
            ids,
            attach,
            interactive,
            detach_keys,
        } => {
            let code = lifecycle::start(&d, ids, attach, interactive, &detach_keys).await?;
            std::process::exit(code);
        }
        Command::Restart { ids, time } => lifecycle::restart(&d, ids, time).await,
        Command::Pause { ids } => lifecycle::pause(&d, ids, true).await,
        Command::Unpause { ids } => lifecycle::pause(&d, ids, false).await,
        Command::Commit(a) => commit::commit(&d, a).await,
        Command::Cp { src, dest } => copy::cp(&d, &src, &dest).await,
        Command::Export { container, output } => copy::export(&d, &container, output).await,
        Command::Diff { container } => copy::diff(&d, &container).await,
        Command::Rename { container, new_name } => lifecycle::rename(&d, &container, &new_name).await,
        Command::Update(a) => lifecycle::update(&d, a).await,
        Command::Port {
            container,
            private_port,
        } => lifecycle::port(&d, &container, private_port.as_deref()).await,
        Command::Build(a) => build::build(&d, *a).await,
        Command::Builder {
            cmd: BuilderCmd::Prune { all, keep_storage },
        } => build::prune(&d, all, keep_storage).await,
        Command::Exec(a) => {
            let code = run::exec(&d, a).await?;
            std::process::exit(code);
        }
        Command::Attach {
            id,
            no_stdin,
            detach_keys,
            sig_proxy,
        } => lifecycle::attach(&d, &id, !no_stdin, &detach_keys, sig_proxy).await,
        Command::Ps(a) => containers::ps(&d, a).await,
        Command::Logs {
            id,
            follow,
            tail,
            timestamps,
        } => containers::logs(&d, &id, follow, tail, timestamps).await,
        Command::Kill { ids, signal } => containers::kill(&d, ids, &signal).await,
        Command::Stop { ids, time } => containers::stop(&d, ids, time).await,
        Command::Wait { ids } => {
            let code = containers::wait(&d, ids).await?;
            std::process::exit(code);
        }
        Command::Rm { ids, force, volumes } => containers::rm(&d, ids, force, volumes).await,
        Command::Volume(c) => volume::run(&d, c).await,
        Command::Network(c) => network::run(&d, c).await,
        Command::Events(a) => events::events(&d, a).await,
        Command::Container(ContainerCmd::Prune { force }) => system::prune_containers(&d, force).await,
        Command::System(system::SystemCmd::Df) => system::df(&d).await,
        Command::System(system::SystemCmd::Prune { all, volumes, force }) => {
            system::prune(&d, all, volumes, force).await
        }
        Command::Pull {
            reference,
            platform,
            cluster_resolve,
            quiet,
        } => transfer::pull(&d, &reference, platform, cluster_resolve, quiet).await,
        Command::Push {
            name,
            destination,
            quiet,
        } => transfer::push(&d, &name, destination, quiet).await,
        Command::Save { names, output } => transfer::save(&d, names, output).await,
        Command::Load { input, quiet } => transfer::load(&d, input, quiet).await,
        Command::Rmi { names } => images::rmi(&d, names).await,
        Command::Tag { source, target } => images::tag(&d, &source, &target).await,
        Command::Inspect { names, format, kind } => inspect::run(&d, &names, format.as_ref(), kind).await,
        Command::Top { id } => containers::top(&d, &id).await,
        Command::Stats(a) => containers::stats(&d, a).await,
        Command::Gc => daemon::gc(&d).await,
        Command::Node(NodeCmd::Ls) => daemon::nodes(&d).await,
        Command::Login { .. }
        | Command::Logout { .. }
        | Command::Cluster(_)
        | Command::Completion { .. }
        | Command::Manpages { .. } => {
            unreachable!("handled above")
        }
    }
}
