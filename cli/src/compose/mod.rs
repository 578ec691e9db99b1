//! `molde compose`: a project of services from a compose file, run as molde
//! containers. Each service becomes a `molde run` of its own (the same flag
//! handling, pulls and checks), on a network of the project's where the
//! services answer to their names; containers, networks and volumes carry
//! compose's labels, so every command finds the project's objects in molded
//! and nothing is kept on the client.

mod model;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};
use sha2::Digest;

use crate::daemon::{Daemon, status};
use crate::lifecycle::start_detached;
use model::{Build, Mount, Project, StrOrList};

const PROJECT: &str = "com.docker.compose.project";
const SERVICE: &str = "com.docker.compose.service";
const NUMBER: &str = "com.docker.compose.container-number";
const ONEOFF: &str = "com.docker.compose.oneoff";
const HASH: &str = "com.docker.compose.config-hash";
/// How long `up` waits for a dependency to become healthy or to complete.
const DEPENDENCY_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// Compose file (repeatable; later ones override earlier ones);
    /// compose.yaml, compose.yml, docker-compose.yml or docker-compose.yaml here by default
    #[arg(short = 'f', long = "file")]
    files: Vec<PathBuf>,
    /// Project name; the compose file's `name`, else its folder's name
    #[arg(short = 'p', long = "project-name")]
    project: Option<String>,
    #[command(subcommand)]
    cmd: ComposeCmd,
}

#[derive(Debug, Subcommand)]
enum ComposeCmd {
    /// Create and start the services (and what they depend on)
    Up {
        /// Start them in the background
        #[arg(short, long)]
        detach: bool,
        /// Build images before starting
        #[arg(long)]
        build: bool,
        /// Recreate containers even if their configuration is unchanged
        #[arg(long)]
        force_recreate: bool,
        /// Do not start the services they depend on
        #[arg(long)]
        no_deps: bool,
        services: Vec<String>,
    },
    /// Stop and remove the project's containers and networks
    Down {
        /// Remove named volumes declared in the file and anonymous volumes too
        #[arg(short, long)]
        volumes: bool,
        /// Remove images: all (every service's) or local (those built here)
        #[arg(long)]
        rmi: Option<String>,
        /// Seconds to wait before killing
        #[arg(short = 't', long)]
        timeout: Option<u32>,
    },
    /// List the project's containers
    Ps {
        /// Stopped containers too
        #[arg(short, long)]
        all: bool,
        /// IDs only
        #[arg(short, long)]
        quiet: bool,
        /// Service names only
        #[arg(long)]
        services: bool,
    },
    /// Show the services' output, each line prefixed by its container
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each container
        #[arg(long)]
        tail: Option<i64>,
        /// Without the container name before each line
        #[arg(long)]
        no_log_prefix: bool,
        services: Vec<String>,
    },
    /// Build the services that have a build section
    Build {
        #[arg(long)]
        no_cache: bool,
        services: Vec<String>,
    },
    /// Pull the services' images
    Pull {
        #[arg(short, long)]
        quiet: bool,
        services: Vec<String>,
    },
    /// Push the images of services that have both build and image
    Push { services: Vec<String> },
    /// Run a command in a service's running container
    Exec {
        /// No terminal (the default when stdin is not one)
        #[arg(short = 'T', long = "no-TTY")]
        no_tty: bool,
        #[arg(short, long = "env")]
        env: Vec<String>,
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short, long)]
        workdir: Option<String>,
        service: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a one-off command in a new container of a service
    Run {
        /// Remove the container when it exits
        #[arg(long)]
        rm: bool,
        /// Run in the background and print the container's id
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long = "env")]
        env: Vec<String>,
        /// No terminal (the default when stdin is not one)
        #[arg(short = 'T', long = "no-TTY")]
        no_tty: bool,
        /// Do not start the services it depends on
        #[arg(long)]
        no_deps: bool,
        /// Publish the service's ports too
        #[arg(long)]
        service_ports: bool,
        #[arg(long)]
        entrypoint: Option<String>,
        service: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Start the services' existing containers
    Start { services: Vec<String> },
    /// Stop the services' containers
    Stop {
        #[arg(short = 't', long)]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Restart the services' containers
    Restart {
        #[arg(short = 't', long)]
        timeout: Option<u32>,
        services: Vec<String>,
    },
    /// Print the project as molde reads it (interpolated, normalized)
    Config {
        /// Service names only
        #[arg(long)]
        services: bool,
        /// Volume names only
        #[arg(long)]
        volumes: bool,
        /// Only check the file
        #[arg(short, long)]
        quiet: bool,
    },
}

/// A `molde` subcommand's arguments made from compose's settings, parsed
/// by the same clap definitions the command line uses.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct RunArgv {
    #[command(flatten)]
    a: crate::run::RunArgs,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct BuildArgv {
    #[command(flatten)]
    a: crate::build::BuildArgs,
}

#[derive(Parser)]
#[command(no_binary_name = true)]
struct ExecArgv {
    #[command(flatten)]
    a: crate::run::ExecArgs,
}

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

pub async fn run(d: &Daemon, args: ComposeArgs) -> Result<i32> {
    let (p, warnings) = Project::load(&args.files, args.project.as_deref())?;
    for w in &warnings {
        eprintln!("WARN: {w}");
    }
    match args.cmd {
        ComposeCmd::Config {
            services,
            volumes,
            quiet,
        } => {
            if quiet {
            } else if services {
                for s in p.services.keys() {
                    println!("{s}");
                }
            } else if volumes {
                for v in p.volumes.keys() {
                    println!("{v}");
                }
            } else {
                print!("{}", serde_yaml_ng::to_string(&p)?);
            }
            Ok(0)
        }
        ComposeCmd::Up {
            detach,
            build,
            force_recreate,
            no_deps,
            services,
        } => up(d, &p, &services, detach, build, force_recreate, no_deps).await,
        ComposeCmd::Down {
            volumes,
            rmi,
            timeout,
        } => down(d, &p, volumes, rmi.as_deref(), timeout).await.map(|_| 0),
        ComposeCmd::Ps { all, quiet, services } => ps(d, &p, all, quiet, services).await.map(|_| 0),
        ComposeCmd::Logs {
            follow,
            tail,
            no_log_prefix,
            services,
        } => {
            let list = containers(d, &p, &services, true).await?;
            logs(d, &list, follow, tail, !no_log_prefix).await.map(|_| 0)
        }
        ComposeCmd::Build { no_cache, services } => {
            for s in selected(&p, &services)? {
                if p.services[&s].build.is_some() {
                    build(d, &p, &s, no_cache).await?;
                }
            }
            Ok(0)
        }
        ComposeCmd::Pull { quiet, services } => {
            for s in selected(&p, &services)? {
                let svc = &p.services[&s];
                if let Some(image) = &svc.image
                    && svc.build.is_none()
                {
                    crate::transfer::pull(d, image, None, false, quiet).await?;
                }
            }
            Ok(0)
        }
        ComposeCmd::Push { services } => {
            for s in selected(&p, &services)? {
                let svc = &p.services[&s];
                if let (Some(image), Some(_)) = (&svc.image, &svc.build) {
                    crate::transfer::push(d, image, None, false).await?;
                }
            }
            Ok(0)
        }
        ComposeCmd::Exec {
            no_tty,
            env,
            user,
            workdir,
            service,
            command,
        } => {
            let c = running_container(d, &p, &service).await?;
            let mut argv: Vec<String> = Vec::new();
            if !no_tty && std::io::stdin().is_terminal() {
                argv.extend(["-i".into(), "-t".into()]);
            }
            for e in env {
                argv.extend(["-e".into(), e]);
            }
            if let Some(u) = user {
                argv.extend(["-u".into(), u]);
            }
            if let Some(w) = workdir {
                argv.extend(["-w".into(), w]);
            }
            argv.push(c.id);
            argv.extend(command);
            let a = ExecArgv::try_parse_from(&argv)
                .map_err(|e| anyhow!("compose exec: {e}"))?
                .a;
            crate::run::exec(d, a).await
        }
        ComposeCmd::Run {
            rm,
            detach,
            env,
            no_tty,
            no_deps,
            service_ports,
            entrypoint,
            service,
            command,
        } => {
            if !p.services.contains_key(&service) {
                bail!("no such service: {service}");
            }
            let deps: Vec<String> = p.dependencies(&service).into_iter().map(|(s, _)| s).collect();
            if !no_deps && !deps.is_empty() {
                up(d, &p, &deps, true, false, false, false).await?;
            }
            ensure_networks(d, &p).await?;
            ensure_volumes(d, &p).await?;
            let name = format!("{}-{service}-run-{}", p.name, &short_random()[..8]);
            let settings = OneOff {
                command: (!command.is_empty()).then_some(command),
                entrypoint,
                env,
                ports: service_ports,
            };
            let mut argv = service_argv(d, &p, &service, &name, Some(&settings)).await?;
            let mut front = Vec::new();
            if rm {
                front.push("--rm".to_string());
            }
            if detach {
                front.push("-d".to_string());
            } else if !no_tty && std::io::stdin().is_terminal() {
                front.extend(["-i".into(), "-t".into()]);
            }
            front.append(&mut argv);
            if p.services[&service].build.is_some() && !image_present(d, &p.image(&service)).await? {
                build(d, &p, &service, false).await?;
            }
            let a = RunArgv::try_parse_from(&front)
                .map_err(|e| anyhow!("compose run: {e}"))?
                .a;
            crate::run::run(d, a).await
        }
        ComposeCmd::Start { services } => {
            for c in containers(d, &p, &services, true).await? {
                start_detached(d, &c.id, &c.name).await?;
                eprintln!("Container {}  Started", c.name);
            }
            Ok(0)
        }
        ComposeCmd::Stop { timeout, services } => {
            stop_all(d, &containers(d, &p, &services, false).await?, timeout).await?;
            Ok(0)
        }
        ComposeCmd::Restart { timeout, services } => {
            for c in containers(d, &p, &services, true).await? {
                stop_all(d, std::slice::from_ref(&c), timeout).await?;
                start_detached(d, &c.id, &c.name).await?;
                eprintln!("Container {}  Restarted", c.name);
            }
            Ok(0)
        }
    }
}

/// The services named, or all of them.
fn selected(p: &Project, services: &[String]) -> Result<Vec<String>> {
    if services.is_empty() {
        return Ok(p.services.keys().cloned().collect());
    }
    for s in services {
        if !p.services.contains_key(s) {
            bail!("no such service: {s}");
        }
    }
    Ok(services.to_vec())
}

fn short_random() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom_fill(&mut b);
    hex::encode(b)
}

fn getrandom_fill(b: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// The project's containers (of `services`, or all), `all` with stopped ones.
async fn containers(
    d: &Daemon,
    p: &Project,
    services: &[String],
    all: bool,
) -> Result<Vec<api::ContainerStatus>> {
    let wanted: HashSet<&String> = services.iter().collect();
    for s in services {
        if !p.services.contains_key(s) {
            bail!("no such service: {s}");
        }
    }
    let mut list: Vec<_> = client(d)
        .list(d.request(api::ListRequest { all, ids: Vec::new() }))
        .await
        .map_err(status("listing containers"))?
        .into_inner()
        .containers
        .into_iter()
        .filter(|c| c.labels.get(PROJECT) == Some(&p.name))
        .filter(|c| wanted.is_empty() || c.labels.get(SERVICE).is_some_and(|s| wanted.contains(s)))
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

async fn running_container(d: &Daemon, p: &Project, service: &str) -> Result<api::ContainerStatus> {
    containers(d, p, &[service.to_string()], false)
        .await?
        .into_iter()
        .find(|c| c.labels.get(ONEOFF).is_none_or(|o| o == "False"))
        .ok_or_else(|| anyhow!("service {service} is not running (molde compose up {service})"))
}

async fn image_present(d: &Daemon, image: &str) -> Result<bool> {
    use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
    match ImagesClient::new(d.channel.clone())
        .get(d.request(GetImageRequest {
            name: crate::images::normalize(image),
        }))
        .await
    {
        Ok(r) => Ok(r.into_inner().image.is_some()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
        Err(s) => Err(status(format!("image {image}"))(s)),
    }
}

/// The digest an image name points at (empty when there is none).
async fn image_digest(d: &Daemon, image: &str) -> String {
    use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
    ImagesClient::new(d.channel.clone())
        .get(d.request(GetImageRequest {
            name: crate::images::normalize(image),
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().image?.target)
        .map(|t| t.digest)
        .unwrap_or_default()
}

async fn build(d: &Daemon, p: &Project, service: &str, no_cache: bool) -> Result<()> {
    let svc = &p.services[service];
    let (context, dockerfile, args, target) = match &svc.build {
        Some(Build::Context(c)) => (c.clone(), None, Vec::new(), None),
        Some(Build::Full {
            context,
            dockerfile,
            args,
            target,
        }) => (
            context.clone().unwrap_or_else(|| ".".into()),
            dockerfile.clone(),
            args.as_ref().map(|a| a.pairs(&p.env)).unwrap_or_default(),
            target.clone(),
        ),
        None => bail!("service {service} has no build section"),
    };
    let context = p.dir.join(context);
    let mut argv = vec!["-t".to_string(), p.image(service)];
    if let Some(f) = dockerfile {
        argv.extend(["-f".into(), context.join(f).display().to_string()]);
    }
    for (k, v) in args {
        argv.extend(["--build-arg".into(), format!("{k}={v}")]);
    }
    if let Some(t) = target {
        argv.extend(["--target".into(), t]);
    }
    if no_cache {
        argv.push("--no-cache".into());
    }
    argv.push(context.display().to_string());
    let a = BuildArgv::try_parse_from(&argv)
        .map_err(|e| anyhow!("service {service}'s build: {e}"))?
        .a;
    eprintln!("Building {service}");
    crate::build::build(d, a)
        .await
        .with_context(|| format!("building service {service}"))
}

/// What `compose run` changes in a service's container.
struct OneOff {
    command: Option<Vec<String>>,
    entrypoint: Option<String>,
    env: Vec<String>,
    ports: bool,
}

/// A duration compose writes (`1m30s`, `10s`) in whole seconds.
fn seconds(s: &str) -> Option<u32> {
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += match c {
            'h' => n * 3600.0,
            'm' => n * 60.0,
            's' => n,
            _ => return None,
        };
    }
    if !num.is_empty() {
        total += num.parse::<f64>().ok()?;
    }
    Some(total.round() as u32)
}

/// The `molde run` arguments for a service's container named `name`
/// (without -d, -i, -t and --rm): its settings as flags, its image, its command.
async fn service_argv(
    d: &Daemon,
    p: &Project,
    service: &str,
    name: &str,
    oneoff: Option<&OneOff>,
) -> Result<Vec<String>> {
    let s = &p.services[service];
    let mut a: Vec<String> = vec!["--name".into(), name.into()];
    let flag = |a: &mut Vec<String>, f: &str, v: String| {
        a.push(f.to_string());
        a.push(v);
    };
    // Network: the service's (one per container in molde), with its name as an alias.
    match s.network_mode.as_deref() {
        Some(mode @ ("host" | "none" | "bridge")) => flag(&mut a, "--network", mode.to_string()),
        Some(other) => {
            bail!("service {service}: network_mode {other:?} is not supported (host, none or bridge)")
        }
        None => {
            // The first network at creation; `connect_rest` adds the others.
            let nets = p.service_networks(service);
            let (net, settings) = &nets[0];
            flag(&mut a, "--network", p.network_name(net));
            if oneoff.is_none() {
                flag(&mut a, "--network-alias", service.to_string());
            }
            for alias in &settings.aliases {
                flag(&mut a, "--network-alias", alias.clone());
            }
            if let Some(ip) = &settings.ipv4_address {
                flag(&mut a, "--ip", ip.clone());
            }
        }
    }
    // Labels: compose's, so every command finds the project's containers.
    let mut labels: BTreeMap<String, String> = s
        .labels
        .as_ref()
        .map(|l| l.pairs(&p.env))
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(PROJECT.into(), p.name.clone());
    labels.insert(SERVICE.into(), service.into());
    labels.insert(NUMBER.into(), "1".into());
    labels.insert(
        ONEOFF.into(),
        if oneoff.is_some() { "True" } else { "False" }.into(),
    );
    labels.insert(
        "com.docker.compose.project.working_dir".into(),
        p.dir.display().to_string(),
    );
    let hash = {
        let mut h = sha2::Sha256::new();
        h.update(serde_json::to_vec(s)?);
        h.update(image_digest(d, &p.image(service)).await.as_bytes());
        hex::encode(h.finalize())
    };
    labels.insert(HASH.into(), hash);
    for (k, v) in labels {
        flag(&mut a, "--label", format!("{k}={v}"));
    }
    // Environment: env_file first, environment over it, `run -e` last.
    if let Some(files) = &s.env_file {
        for f in files.list() {
            let path = p.dir.join(&f);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("service {service}: env_file {}", path.display()))?;
            for (k, v) in model::parse_env_file(&text) {
                flag(&mut a, "-e", format!("{k}={v}"));
            }
        }
    }
    if let Some(env) = &s.environment {
        for (k, v) in env.pairs(&p.env) {
            flag(&mut a, "-e", format!("{k}={v}"));
        }
    }
    if oneoff.is_none() || oneoff.is_some_and(|o| o.ports) {
        for port in &s.ports {
            flag(&mut a, "-p", port.flag());
        }
    }
    for m in &s.volumes {
        match m {
            Mount::Short(spec) => {
                let mut parts: Vec<String> = spec.split(':').map(str::to_string).collect();
                if parts.len() >= 2 {
                    if let Some(v) = p.named_volume(m) {
                        parts[0] = p.volume_name(&v);
                    } else {
                        parts[0] = host_path(p, &parts[0]);
                    }
                }
                flag(&mut a, "-v", parts.join(":"));
            }
            Mount::Long {
                kind,
                source,
                target,
                read_only,
            } => {
                let mut spec = format!("type={kind},dst={target}");
                match kind.as_str() {
                    "volume" => {
                        if let Some(v) = p.named_volume(m) {
                            spec.push_str(&format!(",src={}", p.volume_name(&v)));
                        }
                    }
                    "bind" => {
                        let src = source.as_deref().ok_or_else(|| {
                            anyhow!("service {service}: a bind mount of {target} without source")
                        })?;
                        spec.push_str(&format!(",src={}", host_path(p, src)));
                    }
                    _ => {}
                }
                if *read_only {
                    spec.push_str(",readonly");
                }
                flag(&mut a, "--mount", spec);
            }
        }
    }
    if let Some(t) = &s.tmpfs {
        for path in t.list() {
            flag(&mut a, "--tmpfs", path);
        }
    }
    if oneoff.is_none()
        && let Some(r) = &s.restart
    {
        flag(&mut a, "--restart", r.clone());
    }
    if let Some(u) = &s.user {
        flag(&mut a, "-u", u.clone());
    }
    if let Some(w) = &s.working_dir {
        flag(&mut a, "-w", w.clone());
    }
    if let Some(h) = &s.hostname {
        flag(&mut a, "--hostname", h.clone());
    }
    for c in &s.cap_add {
        flag(&mut a, "--cap-add", c.clone());
    }
    for c in &s.cap_drop {
        flag(&mut a, "--cap-drop", c.clone());
    }
    if let Some(l) = s
        .deploy
        .as_ref()
        .and_then(|d| d.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
    {
        if let Some(c) = &l.cpus {
            let cpus = match c {
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => bail!("service {service}: deploy.resources.limits.cpus {other:?} is not a number"),
            };
            flag(&mut a, "--cpus", cpus);
        }
        if let Some(m) = &l.memory {
            flag(&mut a, "--memory", m.clone());
        }
        if let Some(n) = l.pids {
            flag(&mut a, "--pids-limit", n.to_string());
        }
    }
    if let Some(h) = &s.healthcheck {
        if h.disable || matches!(&h.test, Some(StrOrList::List(l)) if l.first().is_some_and(|f| f == "NONE"))
        {
            a.push("--no-healthcheck".into());
        } else {
            if let Some(test) = &h.test {
                let cmd = match test {
                    StrOrList::Str(s) => s.clone(),
                    StrOrList::List(l) => match l.first().map(String::as_str) {
                        Some("CMD-SHELL") => l[1..].join(" "),
                        Some("CMD") => shlex::try_join(l[1..].iter().map(String::as_str))
                            .map_err(|e| anyhow!("service {service}: healthcheck test: {e}"))?,
                        _ => bail!(
                            "service {service}: healthcheck test must start with CMD, CMD-SHELL or NONE"
                        ),
                    },
                };
                flag(&mut a, "--health-cmd", cmd);
            }
            for (f, v) in [
                ("--health-interval", &h.interval),
                ("--health-timeout", &h.timeout),
                ("--health-start-period", &h.start_period),
            ] {
                if let Some(v) = v {
                    flag(&mut a, f, v.clone());
                }
            }
            if let Some(r) = h.retries {
                flag(&mut a, "--health-retries", r.to_string());
            }
        }
    }
    if s.tty {
        a.push("-t".into());
    }
    if s.stdin_open {
        a.push("-i".into());
    }
    if s.privileged {
        a.push("--privileged".into());
    }
    if s.read_only {
        a.push("--read-only".into());
    }
    if s.init {
        a.push("--init".into());
    }
    if let Some(sig) = &s.stop_signal {
        flag(&mut a, "--stop-signal", sig.clone());
    }
    if let Some(g) = &s.stop_grace_period {
        let secs = seconds(g)
            .ok_or_else(|| anyhow!("service {service}: stop_grace_period {g:?} is not a duration"))?;
        flag(&mut a, "--stop-timeout", secs.to_string());
    }
    for h in &s.extra_hosts {
        // compose takes HOST:IP and HOST=IP; molde's --add-host takes HOST:IP.
        flag(&mut a, "--add-host", h.replacen('=', ":", 1));
    }
    if let Some(dns) = &s.dns {
        for server in dns.list() {
            flag(&mut a, "--dns", server);
        }
    }
    for dev in &s.devices {
        flag(&mut a, "--device", dev.clone());
    }
    for o in &s.security_opt {
        flag(&mut a, "--security-opt", o.clone());
    }
    if let Some(shm) = &s.shm_size {
        let v = match shm {
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            serde_yaml_ng::Value::String(s) => s.clone(),
            other => bail!("service {service}: shm_size {other:?} is not a size"),
        };
        flag(&mut a, "--shm-size", v);
    }
    if let Some(o) = oneoff {
        for e in &o.env {
            flag(&mut a, "-e", e.clone());
        }
    }
    // Entrypoint: compose's replaces the image's and its CMD; a list's
    // first word is the program, the rest go before the command.
    let mut command: Vec<String> = Vec::new();
    let entrypoint = match oneoff.and_then(|o| o.entrypoint.clone()) {
        Some(e) => Some(vec![e]),
        None => s.entrypoint.as_ref().map(|e| e.words("entrypoint")).transpose()?,
    };
    if let Some(mut words) = entrypoint {
        if words.is_empty() {
            flag(&mut a, "--entrypoint", String::new());
        } else {
            flag(&mut a, "--entrypoint", words.remove(0));
            command.extend(words);
        }
    }
    match oneoff.and_then(|o| o.command.clone()) {
        Some(c) => command.extend(c),
        None => {
            if let Some(c) = &s.command {
                command.extend(c.words("command")?);
            }
        }
    }
    // Flags end here: what follows is the image and its command, as given.
    a.push(p.image(service));
    a.extend(command);
    Ok(a)
}

/// Connects a created container to its service's networks after the
/// first (kept with the container, attached when it starts).
async fn connect_rest(d: &Daemon, p: &Project, service: &str, id: &str, oneoff: bool) -> Result<()> {
    if p.services[service].network_mode.is_some() {
        return Ok(());
    }
    for (net, settings) in p.service_networks(service).into_iter().skip(1) {
        let mut aliases = settings.aliases.clone();
        if !oneoff {
            aliases.insert(0, service.to_string());
        }
        let name = p.network_name(&net);
        client(d)
            .connect_network(d.request(api::ConnectNetworkRequest {
                network: name.clone(),
                container: id.to_string(),
                aliases,
                ip: settings.ipv4_address.clone().unwrap_or_default(),
            }))
            .await
            .map_err(status(format!("connecting service {service} to network {name}")))?;
    }
    Ok(())
}

/// A bind mount's host side: relative to the project's folder, `~` the home.
fn host_path(p: &Project, src: &str) -> String {
    if let Some(rest) = src.strip_prefix("~/") {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        return format!("{home}/{rest}");
    }
    if src.starts_with('/') {
        return src.to_string();
    }
    let joined = p.dir.join(src);
    std::fs::canonicalize(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}

/// Creates the project's networks that molded does not have yet.
async fn ensure_networks(d: &Daemon, p: &Project) -> Result<()> {
    let mut used: Vec<String> = Vec::new();
    for s in p.services.keys() {
        if p.services[s].network_mode.is_none() {
            for (n, _) in p.service_networks(s) {
                if !used.contains(&n) {
                    used.push(n);
                }
            }
        }
    }
    for net in used {
        let name = p.network_name(&net);
        let def = p.networks.get(&net).cloned().unwrap_or_default();
        let exists = client(d)
            .inspect_network(d.request(api::InspectNetworkRequest { name: name.clone() }))
            .await
            .is_ok();
        if exists {
            continue;
        }
        if def.external {
            bail!("network {name} is external but molded has no such network (molde network create {name})");
        }
        let subnet = def
            .ipam
            .as_ref()
            .and_then(|i| {
                i.get("config")?
                    .as_sequence()?
                    .first()?
                    .get("subnet")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let labels = HashMap::from([
            (PROJECT.to_string(), p.name.clone()),
            ("com.docker.compose.network".to_string(), net.clone()),
        ]);
        client(d)
            .create_network(d.request(api::CreateNetworkRequest {
                name: name.clone(),
                subnet,
                gateway: String::new(),
                internal: def.internal,
                labels,
                driver: "bridge".into(),
            }))
            .await
            .map_err(status(format!("creating network {name}")))?;
        eprintln!("Network {name}  Created");
    }
    Ok(())
}

/// Creates the project's named volumes that molded does not have yet.
async fn ensure_volumes(d: &Daemon, p: &Project) -> Result<()> {
    for (vol, def) in &p.volumes {
        let name = p.volume_name(vol);
        let exists = client(d)
            .inspect_volume(d.request(api::InspectVolumeRequest { name: name.clone() }))
            .await
            .is_ok();
        if exists {
            continue;
        }
        if def.external {
            bail!("volume {name} is external but molded has no such volume (molde volume create {name})");
        }
        let mut labels: HashMap<String, String> = def
            .labels
            .as_ref()
            .map(|l| l.pairs(&p.env))
            .unwrap_or_default()
            .into_iter()
            .collect();
        labels.insert(PROJECT.into(), p.name.clone());
        labels.insert("com.docker.compose.volume".into(), vol.clone());
        client(d)
            .create_volume(d.request(api::CreateVolumeRequest {
                name: name.clone(),
                driver: "local".into(),
                labels,
            }))
            .await
            .map_err(status(format!("creating volume {name}")))?;
        eprintln!("Volume {name}  Created");
    }
    Ok(())
}

/// Waits until `service`'s container meets `condition` (compose's
/// depends_on conditions), at most `DEPENDENCY_WAIT`.
async fn wait_for(d: &Daemon, p: &Project, service: &str, condition: &str) -> Result<()> {
    let deadline = Instant::now() + DEPENDENCY_WAIT;
    loop {
        let c = containers(d, p, &[service.to_string()], true)
            .await?
            .into_iter()
            .find(|c| c.labels.get(ONEOFF).is_none_or(|o| o == "False"))
            .ok_or_else(|| anyhow!("service {service} has no container"))?;
        let running = matches!(c.state.as_str(), "running" | "paused");
        match condition {
            "service_started" if running || c.state == "exited" => return Ok(()),
            "service_healthy" if running && c.health == "healthy" => return Ok(()),
            "service_healthy" if running && c.health.is_empty() => {
                bail!("service {service} has no healthcheck, so it cannot become healthy")
            }
            "service_healthy" if !running && c.state != "created" => {
                bail!(
                    "service {service} exited ({}) before it became healthy",
                    c.exit_code
                )
            }
            "service_completed_successfully" if c.state == "exited" => {
                if c.exit_code == 0 {
                    return Ok(());
                }
                bail!(
                    "service {service} did not complete successfully: it exited {}",
                    c.exit_code
                );
            }
            "service_started" | "service_healthy" | "service_completed_successfully" => {}
            other => bail!("depends_on condition {other:?} is not one compose defines"),
        }
        if Instant::now() > deadline {
            bail!(
                "service {service}: gave up waiting for {condition} after {}s",
                DEPENDENCY_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn up(
    d: &Daemon,
    p: &Project,
    services: &[String],
    detach: bool,
    build_first: bool,
    force_recreate: bool,
    no_deps: bool,
) -> Result<i32> {
    let wanted = selected(p, services)?;
    let order = if no_deps { wanted } else { p.order(&wanted)? };
    ensure_networks(d, p).await?;
    ensure_volumes(d, p).await?;
    let mut started = Vec::new();
    for service in &order {
        let svc = &p.services[service];
        for (dep, condition) in p.dependencies(service) {
            if order.contains(&dep) {
                wait_for(d, p, &dep, &condition).await?;
            }
        }
        if svc.build.is_some() && (build_first || !image_present(d, &p.image(service)).await?) {
            build(d, p, service, false).await?;
        }
        let name = svc
            .container_name
            .clone()
            .unwrap_or_else(|| format!("{}-{service}-1", p.name));
        let argv = service_argv(d, p, service, &name, None).await?;
        let hash = argv
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{HASH}=")))
            .unwrap_or_default()
            .to_string();
        let existing = containers(d, p, std::slice::from_ref(service), true)
            .await?
            .into_iter()
            .find(|c| c.name == name);
        if let Some(c) = &existing {
            if !force_recreate && c.labels.get(HASH) == Some(&hash) {
                if !matches!(c.state.as_str(), "running" | "paused") {
                    start_detached(d, &c.id, &name).await?;
                    eprintln!("Container {name}  Started");
                } else {
                    eprintln!("Container {name}  Running");
                }
                started.push(c.id.clone());
                continue;
            }
            client(d)
                .remove(d.request(api::RemoveRequest {
                    id: c.id.clone(),
                    force: true,
                    volumes: false,
                }))
                .await
                .map_err(status(format!("removing {name} to recreate it")))?;
            eprintln!("Container {name}  Recreate");
        }
        let a = RunArgv::try_parse_from(&argv)
            .map_err(|e| anyhow!("service {service}: {e}"))?
            .a;
        let id = crate::run::create_container(d, a)
            .await
            .with_context(|| format!("creating service {service}'s container"))?;
        connect_rest(d, p, service, &id, false).await?;
        start_detached(d, &id, &name).await?;
        eprintln!("Container {name}  Started");
        started.push(id);
    }
    if detach {
        return Ok(0);
    }
    // Attached: every started container's output, until they all exit or
    // Ctrl-C, which stops them.
    let list: Vec<_> = containers(d, p, &[], true)
        .await?
        .into_iter()
        .filter(|c| started.contains(&c.id))
        .collect();
    tokio::select! {
        r = logs(d, &list, true, None, true) => r?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            stop_all(d, &list, None).await?;
        }
    }
    Ok(0)
}

async fn stop_all(d: &Daemon, list: &[api::ContainerStatus], timeout: Option<u32>) -> Result<()> {
    for c in list {
        if !matches!(c.state.as_str(), "running" | "paused") {
            continue;
        }
        client(d)
            .stop(d.request(api::StopRequest {
                id: c.id.clone(),
                timeout: timeout.unwrap_or(0),
                signal: String::new(),
                container_timeout: timeout.is_none(),
            }))
            .await
            .map_err(status(format!("stopping {}", c.name)))?;
        eprintln!("Container {}  Stopped", c.name);
    }
    Ok(())
}

async fn down(d: &Daemon, p: &Project, volumes: bool, rmi: Option<&str>, timeout: Option<u32>) -> Result<()> {
    let list = containers(d, p, &[], true).await?;
    stop_all(d, &list, timeout).await?;
    for c in &list {
        client(d)
            .remove(d.request(api::RemoveRequest {
                id: c.id.clone(),
                force: true,
                volumes,
            }))
            .await
            .map_err(status(format!("removing {}", c.name)))?;
        eprintln!("Container {}  Removed", c.name);
    }
    let mut nets: Vec<String> = Vec::new();
    for s in p.services.keys() {
        for (n, _) in p.service_networks(s) {
            if !p.networks.get(&n).is_some_and(|d| d.external) && !nets.contains(&n) {
                nets.push(n);
            }
        }
    }
    for n in nets {
        let name = p.network_name(&n);
        match client(d)
            .remove_network(d.request(api::RemoveNetworkRequest { name: name.clone() }))
            .await
        {
            Ok(_) => eprintln!("Network {name}  Removed"),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(status(format!("removing network {name}"))(s)),
        }
    }
    if volumes {
        for (v, def) in &p.volumes {
            if def.external {
                continue;
            }
            let name = p.volume_name(v);
            match client(d)
                .remove_volume(d.request(api::RemoveVolumeRequest {
                    name: name.clone(),
                    force: true,
                }))
                .await
            {
                Ok(_) => eprintln!("Volume {name}  Removed"),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(status(format!("removing volume {name}"))(s)),
            }
        }
    }
    match rmi {
        None => {}
        Some(which @ ("all" | "local")) => {
            for (s, svc) in &p.services {
                if which == "local" && svc.image.is_some() {
                    continue;
                }
                let image = p.image(s);
                if image_present(d, &image).await? {
                    crate::images::rmi(d, vec![image]).await?;
                }
            }
        }
        Some(other) => bail!("--rmi {other:?}: all or local"),
    }
    Ok(())
}

async fn ps(d: &Daemon, p: &Project, all: bool, quiet: bool, services: bool) -> Result<()> {
    let list = containers(d, p, &[], all).await?;
    if quiet {
        for c in &list {
            println!("{}", c.id);
        }
        return Ok(());
    }
    if services {
        let mut names: Vec<&String> = list.iter().filter_map(|c| c.labels.get(SERVICE)).collect();
        names.dedup();
        for n in names {
            println!("{n}");
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|c| {
            let created = prost_types::Timestamp {
                seconds: c.created_unix,
                nanos: 0,
            };
            let mut cmd = c.command.join(" ");
            if cmd.chars().count() > 20 {
                cmd = cmd.chars().take(19).collect::<String>() + "…";
            }
            vec![
                c.name.clone(),
                c.image.clone(),
                format!("\"{cmd}\""),
                c.labels.get(SERVICE).cloned().unwrap_or_default(),
                crate::output::age(Some(&created)),
                crate::containers::status_text(c),
                c.ports
                    .iter()
                    .filter_map(|p| crate::lifecycle::port_line(p))
                    .map(|(container, host)| format!("{host}->{container}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS", "PORTS",
        ],
        &rows,
    );
    Ok(())
}

/// The containers' output, each line after `NAME  | ` when `prefix`; with
/// `follow`, until every one has exited.
async fn logs(
    d: &Daemon,
    list: &[api::ContainerStatus],
    follow: bool,
    tail: Option<i64>,
    prefix: bool,
) -> Result<()> {
    let width = list.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut tasks = Vec::new();
    for c in list {
        let d = d.clone();
        let (id, name) = (c.id.clone(), c.name.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = client(&d)
                .logs(d.request(api::LogsRequest {
                    id: id.clone(),
                    follow,
                    tail: tail.unwrap_or(0),
                }))
                .await
                .map_err(status(format!("logs of {name}")))?
                .into_inner();
            let head = if prefix {
                format!("{name:width$}  | ")
            } else {
                String::new()
            };
            let mut partial: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
            while let Some(r) = s.message().await.map_err(|s| anyhow!("{}", s.message()))? {
                let k = usize::from(r.stream == 2);
                partial[k].extend_from_slice(&r.data);
                while let Some(i) = partial[k].iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial[k].drain(..=i).collect();
                    emit(k, &head, &line)?;
                }
            }
            for (k, rest) in partial.iter().enumerate() {
                if !rest.is_empty() {
                    let mut line = rest.clone();
                    line.push(b'\n');
                    emit(k, &head, &line)?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn emit(stream: usize, head: &str, line: &[u8]) -> Result<()> {
    let mut buf = Vec::with_capacity(head.len() + line.len());
    buf.extend_from_slice(head.as_bytes());
    buf.extend_from_slice(line);
    if stream == 1 {
        let mut e = std::io::stderr().lock();
        e.write_all(&buf)?;
        e.flush()?;
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&buf)?;
        o.flush()?;
    }
    Ok(())
}
