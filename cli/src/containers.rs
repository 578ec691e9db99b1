//! `molde ps | logs | kill | stop | wait | rm`: containers the daemon's shims run.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};
use crate::output::{self, Format};

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

/// `molde ps`'s flags, docker's names (`-n` is molde's namespace: `--last N`).
#[derive(Debug, Clone, clap::Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    all: bool,
    /// Only IDs
    #[arg(short, long)]
    quiet: bool,
    /// Only the most recently created container (any state)
    #[arg(short, long)]
    latest: bool,
    /// Only the N most recently created containers (any state)
    #[arg(long)]
    last: Option<usize>,
    /// Full IDs and commands
    #[arg(long)]
    no_trunc: bool,
    /// name=, id=, status=created|running|paused|exited, label=KEY[=VALUE],
    /// ancestor=IMAGE, exited=CODE, health=…; repeatable, all must match
    #[arg(short, long = "filter")]
    filter: Vec<String>,
    /// table, json, or a template: '{{.Names}}', 'table {{.ID}}\t{{.Status}}'
    #[arg(long, default_value = "table")]
    format: Format,
}

/// Seconds since an RFC 3339 time; None when it cannot be read.
fn since(rfc3339: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .num_seconds()
            .max(0),
    )
}

/// docker's STATUS: `Up 5 minutes (healthy)`, `Exited (0) 2 minutes ago`.
pub fn status_text(c: &api::ContainerStatus) -> String {
    let health = match c.health.as_str() {
        "" => String::new(),
        "starting" => " (health: starting)".to_string(),
        h => format!(" ({h})"),
    };
    let up = since(&c.started_at)
        .map(output::human_duration)
        .unwrap_or_default();
    let ago = since(&c.finished_at)
        .map(|s| format!(" {} ago", output::human_duration(s)))
        .unwrap_or_default();
    let spaced = |s: String| if s.is_empty() { s } else { format!(" {s}") };
    match c.state.as_str() {
        "running" => format!("Up{}{health}", spaced(up)),
        "paused" => format!("Up{} (Paused)", spaced(up)),
        "created" => "Created".into(),
        "restarting" => format!("Restarting ({}){ago}", c.exit_code),
        "exited" if c.oom_killed => format!("Exited ({}) OOMKilled{ago}", c.exit_code),
        "exited" => format!("Exited ({}){ago}", c.exit_code),
        other => other.to_string(),
    }
}

/// Whether a container passes every `-f` filter.
fn passes(c: &api::ContainerStatus, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "name" => c.name.contains(v.as_str()),
        "id" => c.id.starts_with(v.as_str()),
        "status" => c.state == *v,
        "exited" => c.state == "exited" && c.exit_code.to_string() == *v,
        "health" => c.health == *v || (v == "none" && c.health.is_empty()),
        "ancestor" => {
            c.image == *v
                || c.image.strip_suffix(":latest") == Some(v)
                || c.image.rsplit('/').next() == Some(v)
        }
        "label" => match v.split_once('=') {
            Some((key, want)) => c.labels.get(key).is_some_and(|x| x == want),
            None => c.labels.contains_key(v.as_str()),
        },
        _ => false,
    })
}

/// `-f KEY=VALUE` flags, checked against the keys `ps` knows.
fn parse_filters(flags: &[String]) -> Result<Vec<(String, String)>> {
    const KEYS: [&str; 7] = ["name", "id", "status", "exited", "health", "ancestor", "label"];
    flags
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("--filter {f:?}: give KEY=VALUE, e.g. name=web"))?;
            if !KEYS.contains(&k) {
                anyhow::bail!("--filter {f:?}: ps filters by {}", KEYS.join(", "));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The object a `--format` template sees for a container: docker's fields.
fn ps_row(c: &api::ContainerStatus, no_trunc: bool) -> serde_json::Value {
    let mut cmd = c.command.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    let created = prost_types::Timestamp {
        seconds: c.created_unix,
        nanos: 0,
    };
    let labels: std::collections::BTreeMap<_, _> = c.labels.iter().collect();
    serde_json::json!({
        "ID": if no_trunc { c.id.clone() } else { c.id.chars().take(12).collect() },
        "Image": c.image,
        "Command": format!("\"{cmd}\""),
        "CreatedAt": chrono::DateTime::from_timestamp(c.created_unix, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
            .unwrap_or_default(),
        "RunningFor": output::age(Some(&created)),
        "Ports": c.ports
            .iter()
            .filter_map(|p| crate::lifecycle::port_line(p))
            .map(|(container, host)| format!("{host}->{container}"))
            .collect::<Vec<_>>()
            .join(", "),
        "State": c.state,
        "Status": status_text(c),
        "Names": if c.name.is_empty() { c.id.clone() } else { c.name.clone() },
        "Labels": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "ExitCode": c.exit_code,
        "Pid": c.pid,
    })
}

const PS_COLUMNS: [(&str, &str); 7] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
];

pub async fn ps(d: &Daemon, a: PsArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    let last = if a.latest { Some(1) } else { a.last };
    let mut list = client(d)
        .list(d.request(api::ListRequest {
            all: a.all || last.is_some() || filters.iter().any(|(k, _)| k == "status" || k == "exited"),
            ids: Vec::new(),
        }))
        .await
        .map_err(status("listing containers"))?
        .into_inner()
        .containers;
    list.retain(|c| passes(c, &filters));
    // Newest first, as docker lists them.
    list.sort_by(|x, y| y.created_unix.cmp(&x.created_unix).then_with(|| x.id.cmp(&y.id)));
    if let Some(n) = last {
        list.truncate(n);
    }
    if a.quiet {
        for c in &list {
            let id: String = if a.no_trunc {
                c.id.clone()
            } else {
                c.id.chars().take(12).collect()
            };
            println!("{id}");
        }
        return Ok(());
    }
    match a.format {
        Format::Json => {
            let v: Vec<_> = list
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id, "image": c.image, "command": c.command, "created": c.created_unix,
                        "state": c.state, "exitCode": c.exit_code, "oomKilled": c.oom_killed, "pid": c.pid,
                        "startedAt": c.started_at, "finishedAt": c.finished_at, "error": c.error, "name": c.name,
                        "ports": c.ports, "health": c.health, "labels": c.labels,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let r = ps_row(c, a.no_trunc);
                    PS_COLUMNS
                        .iter()
                        .map(|(k, _)| r[k].as_str().unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            output::table(&PS_COLUMNS.map(|(_, h)| h), &rows);
        }
        Format::Template(t) => {
            let rows: Vec<_> = list.iter().map(|c| ps_row(c, a.no_trunc)).collect();
            t.print(&PS_COLUMNS, &rows)?;
        }
    }
    Ok(())
}

pub async fn logs(d: &Daemon, id: &str, follow: bool, tail: Option<i64>, timestamps: bool) -> Result<()> {
    let mut s = client(d)
        .logs(d.request(api::LogsRequest {
            id: id.into(),
            follow,
            tail: tail.unwrap_or(0),
        }))
        .await
        .map_err(status(format!("logs of {id}")))?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(r) = s.message().await.map_err(|s| anyhow!("{}", s.message()))? {
        let w: &mut dyn Write = if r.stream == 2 { &mut err } else { &mut out };
        if timestamps {
            w.write_all(format!("{} ", r.time).as_bytes())?;
        }
        w.write_all(&r.data)?;
        w.flush()?;
    }
    Ok(())
}

pub async fn kill(d: &Daemon, ids: Vec<String>, signal: &str) -> Result<()> {
    for id in ids {
        client(d)
            .kill(d.request(api::KillRequest {
                id: id.clone(),
                signal: signal.into(),
            }))
            .await
            .map_err(status(format!("killing {id}")))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn stop(d: &Daemon, ids: Vec<String>, timeout: Option<u32>) -> Result<()> {
    for id in ids {
        client(d)
            .stop(d.request(api::StopRequest {
                id: id.clone(),
                timeout: timeout.unwrap_or(0),
                signal: String::new(),
                container_timeout: timeout.is_none(),
            }))
            .await
            .map_err(status(format!("stopping {id}")))?;
        println!("{id}");
    }
    Ok(())
}

pub async fn wait(d: &Daemon, ids: Vec<String>) -> Result<i32> {
    let mut last = 0;
    for id in ids {
        let x = client(d)
            .wait(d.request(api::WaitRequest { id: id.clone() }))
            .await
            .map_err(status(format!("waiting for {id}")))?
            .into_inner();
        println!("{}", x.status);
        last = x.status;
    }
    Ok(last)
}

pub async fn rm(d: &Daemon, ids: Vec<String>, force: bool, volumes: bool) -> Result<()> {
    for id in ids {
        client(d)
            .remove(d.request(api::RemoveRequest {
                id: id.clone(),
                force,
                volumes,
            }))
            .await
            .map_err(status(format!("removing {id}")))?;
        println!("{id}");
    }
    Ok(())
}

/// The container's inspect JSON, or `None` when no container has that name.
pub async fn inspect(d: &Daemon, id: &str) -> Result<Option<String>> {
    match client(d)
        .inspect(d.request(api::InspectRequest { id: id.into() }))
        .await
    {
        Ok(r) => Ok(Some(r.into_inner().json)),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(anyhow!("inspecting {id}: {}", s.message())),
    }
}

pub async fn top(d: &Daemon, id: &str) -> Result<()> {
    let ps = client(d)
        .top(d.request(api::TopRequest { id: id.into() }))
        .await
        .map_err(status(format!("processes of {id}")))?
        .into_inner()
        .processes;
    let rows: Vec<Vec<String>> = ps
        .iter()
        .map(|p| vec![p.pid.to_string(), p.user.clone(), p.command.clone()])
        .collect();
    output::table(&["PID", "UID", "CMD"], &rows);
    Ok(())
}

/// `molde stats`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// Containers; every running one when none is given
    ids: Vec<String>,
    /// Print one sample and exit
    #[arg(long)]
    no_stream: bool,
    /// Full container IDs
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a template: 'table {{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}'
    #[arg(long, default_value = "table")]
    format: Format,
}

const STATS_COLUMNS: [(&str, &str); 8] = [
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// The machine's memory, the limit docker shows for an unlimited container.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// docker's binary sizes for memory: `12.5MiB`.
fn binary_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    // Four significant digits, trailing zeros dropped: 64MiB, 23.54GiB, 324KiB.
    let whole = (v.max(1.0).log10().floor() as usize) + 1;
    let mut s = format!("{v:.*}", 4usize.saturating_sub(whole));
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[u])
}

/// The containers `stats` shows: those named, else every running one.
async fn stats_targets(d: &Daemon, ids: &[String]) -> Result<Vec<(String, String)>> {
    let list = client(d)
        .list(d.request(api::ListRequest {
            all: !ids.is_empty(),
            ids: Vec::new(),
        }))
        .await
        .map_err(status("listing containers"))?
        .into_inner()
        .containers;
    let name = |c: &api::ContainerStatus| {
        if c.name.is_empty() {
            c.id.clone()
        } else {
            c.name.clone()
        }
    };
    if ids.is_empty() {
        return Ok(list.iter().map(|c| (c.id.clone(), name(c))).collect());
    }
    let mut out = Vec::new();
    for want in ids {
        let found: Vec<_> = list
            .iter()
            .filter(|c| c.id == *want || c.name == *want || c.id.starts_with(want.as_str()))
            .collect();
        match found.as_slice() {
            [one] => out.push((one.id.clone(), name(one))),
            [] => anyhow::bail!("no such container: {want}"),
            many => match many.iter().find(|c| c.id == *want || c.name == *want) {
                Some(c) => out.push((c.id.clone(), name(c))),
                None => anyhow::bail!(
                    "container {want:?}: {} containers have ids starting with it ({}); give more of the id",
                    many.len(),
                    many.iter()
                        .map(|c| c.id.chars().take(12).collect::<String>())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    Ok(out)
}

async fn sample(d: &Daemon, id: &str) -> Option<api::StatsResponse> {
    client(d)
        .stats(d.request(api::StatsRequest { id: id.into() }))
        .await
        .ok()
        .map(|r| r.into_inner())
}

pub async fn stats(d: &Daemon, a: StatsArgs) -> Result<()> {
    use std::io::IsTerminal;
    let interval = Duration::from_millis(if a.no_stream { 500 } else { 1000 });
    let host = host_memory();
    let mut before: std::collections::HashMap<String, (api::StatsResponse, std::time::Instant)> =
        Default::default();
    let mut first = true;
    loop {
        let targets = stats_targets(d, &a.ids).await?;
        if !a.ids.is_empty() && first {
            // A named container that is not running is an error, as in docker.
            for (id, _) in &targets {
                if sample(d, id).await.is_none() {
                    anyhow::bail!("container {id} is not running");
                }
            }
        }
        if first {
            for (id, _) in &targets {
                if let Some(s) = sample(d, id).await {
                    before.insert(id.clone(), (s, std::time::Instant::now()));
                }
            }
            tokio::time::sleep(interval).await;
            first = false;
        }
        let mut rows = Vec::new();
        for (id, name) in &targets {
            let Some(s) = sample(d, id).await else { continue };
            let now = std::time::Instant::now();
            let cpu = match before.get(id) {
                Some((b, at)) => {
                    let wall = now.duration_since(*at).as_nanos().max(1) as f64;
                    s.cpu_usage_ns.saturating_sub(b.cpu_usage_ns) as f64 / wall * 100.0
                }
                None => 0.0,
            };
            let limit = if s.memory_limit_bytes == 0 {
                host
            } else {
                s.memory_limit_bytes.min(host.max(1))
            };
            let used = s.memory_working_set_bytes;
            rows.push(serde_json::json!({
                "ID": if a.no_trunc { id.clone() } else { id.chars().take(12).collect() },
                "Container": id,
                "Name": name,
                "CPUPerc": format!("{cpu:.2}%"),
                "MemUsage": format!("{} / {}", binary_size(used), binary_size(limit)),
                "MemPerc": format!("{:.2}%", if limit == 0 { 0.0 } else { used as f64 / limit as f64 * 100.0 }),
                "NetIO": format!("{} / {}", output::human_size(s.net_rx_bytes as i64), output::human_size(s.net_tx_bytes as i64)),
                "BlockIO": format!("{} / {}", output::human_size(s.io_read_bytes as i64), output::human_size(s.io_write_bytes as i64)),
                "PIDs": s.pids.to_string(),
            }));
            before.insert(id.clone(), (s, now));
        }
        if !a.no_stream && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        output::print(&a.format, &STATS_COLUMNS, &rows)?;
        if a.no_stream {
            return Ok(());
        }
        std::io::stdout().flush()?;
        tokio::time::sleep(interval).await;
    }
}
