//! `molde run`: the daemon creates and starts the container in its shim; the
//! CLI prints the output it streams and exits with the container's status.

use std::io::Write;

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, run_event::Event, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Start the container and print its id
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and send it to the container
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal
    #[arg(short, long)]
    tty: bool,
    /// Container name (id)
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable, KEY=VALUE (repeatable)
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// Run as user[:group] (names from the image's /etc/passwd and /etc/group)
    #[arg(short, long)]
    user: Option<String>,
    /// Memory limit, e.g. 32m, 1g
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs, e.g. 0.5
    #[arg(long)]
    cpus: Option<f64>,
    /// Maximum number of processes
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Bind mount or named volume, SOURCE:DEST[:ro] (repeatable)
    #[arg(short, long = "volume")]
    volumes: Vec<String>,
    /// Mount a tmpfs at this path (repeatable)
    #[arg(long)]
    tmpfs: Vec<String>,
    /// type=volume|bind|tmpfs,source=…,target=…[,readonly] (repeatable)
    #[arg(long)]
    mount: Vec<String>,
    /// bridge (molde's default network), none (an isolated namespace), host,
    /// or a network made with `molde network create`
    #[arg(long, alias = "net", default_value = "bridge")]
    network: String,
    /// Another name the container has on its network (repeatable)
    #[arg(long)]
    network_alias: Vec<String>,
    /// Its address on its network
    #[arg(long)]
    ip: Option<String>,
    /// A DNS server for the container (repeatable)
    #[arg(long)]
    dns: Vec<String>,
    /// A DNS search domain (repeatable)
    #[arg(long)]
    dns_search: Vec<String>,
    /// NAME:IP for the container's /etc/hosts (repeatable)
    #[arg(long)]
    add_host: Vec<String>,
    /// Publish a port, [IP:]HOST:CONTAINER[/tcp|udp] (repeatable)
    #[arg(short = 'p', long = "publish")]
    ports: Vec<String>,
    /// Add a host device, HOST[:CONTAINER][:PERMISSIONS] (repeatable)
    #[arg(long = "device")]
    devices: Vec<String>,
    /// Give the container every capability and host device, unfiltered
    #[arg(long)]
    privileged: bool,
    /// Add a supplementary group, by name or number (repeatable)
    #[arg(long)]
    group_add: Vec<String>,
    /// seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false] (repeatable)
    #[arg(long)]
    security_opt: Vec<String>,
    /// Start it again when it exits and when molded starts: no,
    /// on-failure[:MAX], always, unless-stopped
    #[arg(long, default_value = "no")]
    restart: String,
    /// Add a capability (or ALL) (repeatable)
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability (or ALL) (repeatable)
    #[arg(long)]
    cap_drop: Vec<String>,
    /// NAME=SOFT[:HARD], e.g. nofile=1024:2048 (repeatable)
    #[arg(long)]
    ulimit: Vec<String>,
    /// Size of /dev/shm, e.g. 128m
    #[arg(long)]
    shm_size: Option<String>,
    /// KEY=VALUE label of the container (repeatable)
    #[arg(short, long)]
    label: Vec<String>,
    /// The signal `stop` sends first (the image's StopSignal, else SIGTERM)
    #[arg(long)]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before SIGKILL (10 when not given)
    #[arg(long)]
    stop_timeout: Option<i32>,
    /// Run an init as PID 1 that reaps orphans and forwards signals
    #[arg(long)]
    init: bool,
    /// Command to check the container's health (run with /bin/sh -c)
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between health checks, e.g. 30s
    #[arg(long)]
    health_interval: Option<String>,
    /// Time a health check may take, e.g. 30s
    #[arg(long)]
    health_timeout: Option<String>,
    /// Failures in a row that make it unhealthy
    #[arg(long)]
    health_retries: Option<i32>,
    /// Time after the start when failures do not count
    #[arg(long)]
    health_start_period: Option<String>,
    /// No health check, not even the image's
    #[arg(long)]
    no_healthcheck: bool,
    /// Log options: max-size=SIZE (rotate molde's log file at that size),
    /// max-file=N (files kept) (repeatable)
    #[arg(long)]
    log_opt: Vec<String>,
    /// Pull the image before running: missing (when not here), always, never
    #[arg(long, value_enum, default_value = "missing")]
    pull: PullPolicy,
    /// The keys that detach from an attached container, e.g. ctrl-p,ctrl-q
    #[arg(long, default_value = crate::attach::DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Forward the signals `molde run` gets to the container (without -t)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    sig_proxy: bool,
    image: String,
    /// Command and arguments (replace the image's Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `seccomp=FILE` is sent as the profile it holds, as docker's CLI does:
/// the file is the user's, read where the user is.
fn security_opt(opt: &str) -> Result<String> {
    match opt.split_once(['=', ':']) {
        Some(("seccomp", v)) if v != "unconfined" => {
            let profile =
                std::fs::read_to_string(v).map_err(|e| anyhow!("--security-opt seccomp={v}: {e}"))?;
            Ok(format!("seccomp={profile}"))
        }
        _ => Ok(opt.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

/// A failed `run` or `create`, with the status docker exits with: 125
/// when the container could not be made or started, 126 when its command
/// cannot be run, 127 when it is not there.
#[derive(Debug)]
pub struct Failed {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

/// The exit status a failed `run` gives for `e`.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<Failed>().map_or(125, |f| f.code)
}

/// molded says in a header what a failed start's status is.
pub(crate) fn failed(context: String) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |s| {
        let code = s
            .metadata()
            .get(molde_api::EXIT_CODE_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(125);
        Failed {
            code,
            message: format!("{context}: {}", s.message()),
        }
        .into()
    }
}

/// Makes sure the image is here as `policy` says: pulled when missing (or
/// always), with progress on stderr.
async fn ensure_image(d: &Daemon, image: &str, policy: PullPolicy) -> Result<()> {
    use molde_api::containerd::services::images::v1::{GetImageRequest, images_client::ImagesClient};
    let present = || async {
        match ImagesClient::new(d.channel.clone())
            .get(d.request(GetImageRequest {
                name: crate::images::normalize(image),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(status(format!("image {image}"))(s)),
        }
    };
    match policy {
        PullPolicy::Never => Ok(()),
        PullPolicy::Always => crate::transfer::pull_for_run(d, image).await,
        PullPolicy::Missing if present().await? => Ok(()),
        PullPolicy::Missing => {
            eprintln!("Unable to find image '{image}' locally");
            crate::transfer::pull_for_run(d, image).await
        }
    }
}

/// `molde create`: the container, not started; prints its id.
pub async fn create(d: &Daemon, a: RunArgs) -> Result<()> {
    println!("{}", create_container(d, a).await?);
    Ok(())
}

/// Creates the container (pulling a missing image as `--pull` says); its id.
pub async fn create_container(d: &Daemon, mut a: RunArgs) -> Result<String> {
    if !a.image.is_empty() {
        a.image = crate::images::resolve_one(d, &a.image).await?;
        ensure_image(d, &a.image, a.pull).await?;
    }
    let mut req = request(&a)?;
    req.create_only = true;
    let mut stream = RuntimeClient::new(d.channel.clone())
        .run(d.request(req))
        .await
        .map_err(failed(format!("creating a container from {}", a.image)))?
        .into_inner();
    while let Some(ev) = stream
        .message()
        .await
        .map_err(failed("creating a container".into()))?
    {
        if let Some(Event::Started(s)) = ev.event {
            return Ok(s.id);
        }
    }
    Err(anyhow!("the daemon did not create the container"))
}

/// `30s`, `1m30s`, `500ms`, `2h` → nanoseconds.
fn duration_ns(flag: &str, s: &str) -> Result<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        num.clear();
        num.push_str(&rest[..digits]);
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let mult = match &rest[..unit] {
            "ns" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => anyhow::bail!("{flag} {s:?}: a duration such as 30s, 1m30s or 500ms"),
        };
        rest = &rest[unit..];
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("{flag} {s:?}: a duration such as 30s, 1m30s or 500ms"))?;
        total += n * mult;
    }
    if total <= 0.0 {
        anyhow::bail!("{flag} {s:?}: must be more than 0");
    }
    Ok(total as i64)
}

/// The --health-* flags as a check; None when no flag is given (the
/// image's HEALTHCHECK applies). Flags without --health-cmd tune the image's.
fn health(a: &RunArgs) -> Result<Option<api::HealthConfig>> {
    let any = a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some();
    if !any {
        return Ok(None);
    }
    let Some(cmd) = &a.health_cmd else {
        anyhow::bail!(
            "--health-interval, --health-timeout, --health-retries and --health-start-period go with --health-cmd"
        );
    };
    let d = |flag: &str, v: &Option<String>| v.as_deref().map(|s| duration_ns(flag, s)).transpose();
    Ok(Some(api::HealthConfig {
        test: vec!["CMD-SHELL".into(), cmd.clone()],
        interval_ns: d("--health-interval", &a.health_interval)?.unwrap_or(0),
        timeout_ns: d("--health-timeout", &a.health_timeout)?.unwrap_or(0),
        start_period_ns: d("--health-start-period", &a.health_start_period)?.unwrap_or(0),
        retries: match a.health_retries {
            Some(r) if r < 1 => anyhow::bail!("--health-retries {r}: at least 1"),
            Some(r) => r,
            None => 0,
        },
    }))
}

/// The request `run` and `create` send.
fn request(a: &RunArgs) -> Result<api::RunRequest> {
    let mounts = a
        .mount
        .iter()
        .map(|m| mount_entry(m))
        .collect::<Result<Vec<_>>>()?;
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow!("--env-file {}: {e}", f.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    env.extend(a.env.iter().cloned());
    for e in &env {
        if !e.contains('=') {
            anyhow::bail!("environment variable {e:?}: expected KEY=VALUE");
        }
    }
    Ok(api::RunRequest {
        image: crate::images::normalize(&a.image),
        args: a.command.clone(),
        env,
        name: a.name.clone().unwrap_or_default(),
        rm: a.rm,
        detach: a.detach,
        workdir: a.workdir.clone().unwrap_or_default(),
        entrypoint_set: a.entrypoint.is_some(),
        entrypoint: a
            .entrypoint
            .clone()
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect(),
        hostname: a.hostname.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        memory_bytes: match &a.memory {
            Some(m) => parse_bytes(m)?,
            None => 0,
        },
        cpus: match a.cpus {
            Some(c) if c <= 0.0 || !c.is_finite() => anyhow::bail!("--cpus {c}: must be a positive number"),
            Some(c) => c,
            None => 0.0,
        },
        pids_limit: a.pids_limit.unwrap_or(0),
        read_only: a.read_only,
        volumes: a
            .volumes
            .iter()
            .cloned()
            .chain(mounts.iter().filter(|(v, _)| *v).map(|(_, e)| e.clone()))
            .collect(),
        tmpfs: a
            .tmpfs
            .iter()
            .cloned()
            .chain(mounts.iter().filter(|(v, _)| !*v).map(|(_, e)| e.clone()))
            .collect(),
        network: a.network.clone(),
        ports: a.ports.clone(),
        tty: a.tty,
        interactive: a.interactive,
        devices: a.devices.clone(),
        privileged: a.privileged,
        group_add: a.group_add.clone(),
        restart: a.restart.clone(),
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        ulimits: a.ulimit.clone(),
        shm_size: match &a.shm_size {
            Some(s) => molde_common::parse_size(s)
                .ok_or_else(|| anyhow!("--shm-size {s:?}: not a size (e.g. 64m)"))?
                as i64,
            None => 0,
        },
        labels: crate::output::label_flags(&a.label),
        stop_signal: a.stop_signal.clone().unwrap_or_default(),
        stop_timeout: a.stop_timeout.unwrap_or(0),
        init: a.init,
        health: health(a)?,
        no_healthcheck: a.no_healthcheck,
        log_opts: a.log_opt.clone(),
        network_aliases: a.network_alias.clone(),
        ip: a.ip.clone().unwrap_or_default(),
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        add_hosts: a.add_host.clone(),
        security_opt: a
            .security_opt
            .iter()
            .map(|o| security_opt(o))
            .collect::<Result<_>>()?,
        ..Default::default()
    })
}

/// `--mount` as docker reads it, as the `-v` or `--tmpfs` entry it is:
/// `type=volume,src=data,dst=/data,readonly` is `data:/data:ro`.
fn mount_entry(m: &str) -> Result<(bool, String)> {
    let bad = |why: &str| anyhow!("--mount {m:?}: {why}");
    let (mut kind, mut src, mut dst, mut ro, mut size) = ("volume", "", "", false, "");
    for field in m.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => src = v,
            "destination" | "dst" | "target" => dst = v,
            "readonly" | "ro" => ro = matches!(v, "" | "true" | "1"),
            "tmpfs-size" => size = v,
            _ => return Err(bad(&format!("unknown field {k:?}"))),
        }
    }
    if !dst.starts_with('/') {
        return Err(bad("give an absolute target (target=/path)"));
    }
    let ro = if ro { ":ro" } else { "" };
    match kind {
        "volume" if src.is_empty() => Ok((true, dst.to_string())),
        "volume" if src.starts_with('/') => Err(bad("a volume's source is a volume name")),
        "volume" => Ok((true, format!("{src}:{dst}{ro}"))),
        "bind" if !src.starts_with('/') => Err(bad("a bind mount's source is an absolute host path")),
        "bind" => Ok((true, format!("{src}:{dst}{ro}"))),
        "tmpfs" if size.is_empty() => Ok((false, dst.to_string())),
        "tmpfs" => Ok((false, format!("{dst}:size={size}"))),
        other => Err(bad(&format!("type {other:?}: volume, bind or tmpfs"))),
    }
}

/// Runs the container; returns its exit status.
pub async fn run(d: &Daemon, mut a: RunArgs) -> Result<i32> {
    a.image = crate::images::resolve_one(d, &a.image).await?;
    ensure_image(d, &a.image, a.pull).await?;
    let req = request(&a)?;
    if a.interactive || a.tty {
        let keys = crate::attach::DetachKeys::parse(&a.detach_keys)?;
        return run_attached(d, req, a.detach, keys, a.sig_proxy).await;
    }
    // Caught from before the container starts, so none ends this CLI early.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stream = RuntimeClient::new(d.channel.clone())
        .run(d.request(req))
        .await
        .map_err(failed(format!("running {}", a.image)))?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut id = String::new();
    // A signal that came before the container's id: sent once the id is known.
    let mut pending: Option<&str> = None;
    loop {
        // Signals to `molde run` go to the container, as with docker.
        let msg = tokio::select! {
            m = stream.message() => m.map_err(|s| anyhow!("{}", s.message()))?,
            _ = sigint.recv(), if a.sig_proxy => {
                if id.is_empty() { pending = Some("INT") } else { forward(d, &id, "INT").await }
                continue;
            }
            _ = sigterm.recv(), if a.sig_proxy => {
                if id.is_empty() { pending = Some("TERM") } else { forward(d, &id, "TERM").await }
                continue;
            }
        };
        match msg {
            Some(api::RunEvent {
                event: Some(Event::Started(s)),
            }) if a.detach => {
                println!("{}", s.id);
                return Ok(0);
            }
            Some(api::RunEvent {
                event: Some(Event::Started(s)),
            }) => {
                id = s.id;
                if let Some(sig) = pending.take() {
                    forward(d, &id, sig).await;
                }
            }
            Some(api::RunEvent {
                event: Some(Event::Output(o)),
            }) => {
                if o.stream == 2 {
                    err.write_all(&o.data)?;
                    err.flush()?;
                } else {
                    out.write_all(&o.data)?;
                    out.flush()?;
                }
            }
            Some(api::RunEvent {
                event: Some(Event::Exited(x)),
            }) => return Ok(x.status),
            Some(_) => {}
            None => {
                return Err(anyhow!(
                    "the daemon ended the run without the container's exit status"
                ));
            }
        }
    }
}

/// `-i` / `-t`: create, attach, start, then collect the exit status.
async fn run_attached(
    d: &Daemon,
    mut req: api::RunRequest,
    detach: bool,
    keys: crate::attach::DetachKeys,
    sig_proxy: bool,
) -> Result<i32> {
    let rm = req.rm && !detach;
    req.rm = false;
    req.create_only = !detach;
    req.detach = true;
    let image = req.image.clone();
    let how = crate::attach::How {
        stdin: req.interactive,
        tty: req.tty,
        keys,
        sig_proxy,
    };
    let mut stream = RuntimeClient::new(d.channel.clone())
        .run(d.request(req))
        .await
        .map_err(failed(format!("running {image}")))?
        .into_inner();
    let id = loop {
        match stream
            .message()
            .await
            .map_err(failed(format!("running {image}")))?
        {
            Some(api::RunEvent {
                event: Some(Event::Started(s)),
            }) => break s.id,
            Some(_) => {}
            None => return Err(anyhow!("the daemon did not start the container")),
        }
    };
    if detach {
        println!("{id}");
        return Ok(0);
    }
    let code = crate::lifecycle::attach_and_start(d, &id, how).await;
    if rm {
        let _ = RuntimeClient::new(d.channel.clone())
            .remove(d.request(api::RemoveRequest {
                id,
                force: true,
                volumes: true,
            }))
            .await;
    }
    code
}

async fn forward(d: &Daemon, id: &str, signal: &str) {
    if id.is_empty() {
        return;
    }
    let _ = RuntimeClient::new(d.channel.clone())
        .kill(d.request(api::KillRequest {
            id: id.into(),
            signal: signal.into(),
        }))
        .await;
}

/// `32m`, `1g`, `512k`, `1048576` → bytes.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.trim_end_matches('b').len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (t.trim_end_matches('b'), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid memory value {s:?}: use a number with k, m or g, e.g. 32m"))?;
    let bytes = n * mult as f64;
    // Past i64 the cast would saturate into "no limit at all".
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        anyhow::bail!("invalid memory value {s:?}: more than any limit can be (8 EiB)");
    }
    let bytes = bytes as i64;
    if bytes < 4 << 20 {
        anyhow::bail!("invalid memory value {s:?}: the minimum is 4m");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::{mount_entry, parse_bytes};

    #[test]
    fn durations_as_docker_writes_them() {
        assert_eq!(super::duration_ns("x", "30s").unwrap(), 30_000_000_000);
        assert_eq!(super::duration_ns("x", "1m30s").unwrap(), 90_000_000_000);
        assert_eq!(super::duration_ns("x", "500ms").unwrap(), 500_000_000);
        assert!(super::duration_ns("x", "soon").is_err());
        assert!(super::duration_ns("x", "0s").is_err());
    }

    #[test]
    fn mounts_read_as_docker_reads_them() {
        assert_eq!(
            mount_entry("type=volume,src=data,dst=/data,readonly").unwrap(),
            (true, "data:/data:ro".into())
        );
        assert_eq!(
            mount_entry("target=/cache").unwrap(),
            (true, "/cache".into()),
            "anonymous"
        );
        assert_eq!(
            mount_entry("type=bind,source=/srv,target=/srv").unwrap(),
            (true, "/srv:/srv".into())
        );
        assert_eq!(
            mount_entry("type=tmpfs,dst=/run,tmpfs-size=64m").unwrap(),
            (false, "/run:size=64m".into())
        );
        let err = mount_entry("type=bind,src=rel,dst=/x").unwrap_err().to_string();
        assert!(err.contains("absolute host path"), "{err}");
        assert!(mount_entry("type=nfs,dst=/x").is_err());
        assert!(mount_entry("type=volume,src=v,dst=x").is_err());
        assert!(
            mount_entry("type=volume,bogus=1,dst=/x")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
    }

    #[test]
    fn memory_values() {
        assert_eq!(parse_bytes("32m").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64MB").unwrap(), 64 << 20);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1k").is_err(), "below the minimum");
        let err = parse_bytes("99999999999g").unwrap_err().to_string();
        assert!(err.contains("more than any limit"), "{err}");
    }
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Set an environment variable, KEY=VALUE (repeatable)
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Run as user[:group]
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Keep stdin open and send it to the process
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    tty: bool,
    id: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs a process in a running container; returns its exit status.
pub async fn exec(d: &Daemon, a: ExecArgs) -> Result<i32> {
    let req = api::ExecRequest {
        id: a.id.clone(),
        args: a.command,
        env: a.env,
        user: a.user.unwrap_or_default(),
        workdir: a.workdir.unwrap_or_default(),
        interactive: a.interactive,
        tty: a.tty,
        timeout_ms: 0,
    };
    let mut stream = RuntimeClient::new(d.channel.clone())
        .exec(d.request(req))
        .await
        .map_err(status(format!("exec in {}", a.id)))?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let mut relay = None;
    loop {
        match stream.message().await.map_err(|s| anyhow!("{}", s.message()))? {
            Some(api::RunEvent {
                event: Some(Event::Started(s)),
            }) => {
                // An interactive exec: its stdio goes through an attach.
                let (d, id) = (d.clone(), a.id.clone());
                let how = crate::attach::How {
                    stdin: a.interactive,
                    tty: a.tty,
                    keys: crate::attach::DetachKeys::none(),
                    sig_proxy: false,
                };
                relay = Some(tokio::spawn(async move {
                    crate::attach::attach(&d, &id, how, &s.id).await
                }));
            }
            Some(api::RunEvent {
                event: Some(Event::Output(o)),
            }) => {
                let w: &mut dyn Write = if o.stream == 2 { &mut err } else { &mut out };
                w.write_all(&o.data)?;
                w.flush()?;
            }
            Some(api::RunEvent {
                event: Some(Event::Exited(x)),
            }) => {
                if let Some(r) = relay {
                    r.await??;
                }
                return Ok(x.status);
            }
            Some(_) => {}
            None => return Err(anyhow!("the daemon ended the exec without its exit status")),
        }
    }
}
