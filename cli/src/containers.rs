//! `molde ps | logs | kill | stop | wait | rm`: containers the daemon's shims run.

use std::io::Write;

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};
use crate::output::{self, Format};

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

fn state(c: &api::ContainerStatus) -> String {
    let health = if c.health.is_empty() {
        String::new()
    } else if c.health == "starting" {
        " (health: starting)".to_string()
    } else {
        format!(" ({})", c.health)
    };
    match c.state.as_str() {
        "running" => format!("Up{health}"),
        "paused" => "Up (Paused)".into(),
        "created" => "Created".into(),
        "exited" if c.oom_killed => format!("Exited ({}) OOMKilled", c.exit_code),
        "exited" => format!("Exited ({})", c.exit_code),
        other => other.to_string(),
    }
}

pub async fn ps(d: &Daemon, all: bool, quiet: bool, format: Format) -> Result<()> {
    let list = client(d)
        .list(d.request(api::ListRequest { all }))
        .await
        .map_err(status("listing containers"))?
        .into_inner()
        .containers;
    if quiet {
        for c in &list {
            println!("{}", c.id);
        }
        return Ok(());
    }
    match format {
        Format::Json => {
            let v: Vec<_> = list
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "id": c.id, "image": c.image, "command": c.command, "created": c.created_unix,
                        "state": c.state, "exitCode": c.exit_code, "oomKilled": c.oom_killed, "pid": c.pid,
                        "finishedAt": c.finished_at, "error": c.error, "name": c.name, "ports": c.ports, "health": c.health,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let mut cmd = c.command.join(" ");
                    if cmd.chars().count() > 30 {
                        cmd = cmd.chars().take(29).collect::<String>() + "…";
                    }
                    vec![
                        c.id.chars().take(12).collect(),
                        c.image.clone(),
                        format!("\"{cmd}\""),
                        output::age(Some(&prost_types::Timestamp {
                            seconds: c.created_unix,
                            nanos: 0,
                        })),
                        state(c),
                        c.ports
                            .iter()
                            .filter_map(|p| crate::lifecycle::port_line(p))
                            .map(|(container, host)| format!("{host}->{container}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        c.name.clone(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "NAMES",
                ],
                &rows,
            );
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

pub async fn stats(d: &Daemon, ids: Vec<String>) -> Result<()> {
    let mut rows = Vec::new();
    for id in ids {
        let s = client(d)
            .stats(d.request(api::StatsRequest { id: id.clone() }))
            .await
            .map_err(status(format!("stats of {id}")))?
            .into_inner();
        let limit = if s.memory_limit_bytes == 0 {
            "-".to_string()
        } else {
            output::human_size(s.memory_limit_bytes as i64)
        };
        rows.push(vec![
            id,
            output::human_size(s.memory_bytes as i64),
            limit,
            format!("{:.2}s", s.cpu_usage_ns as f64 / 1e9),
            s.pids.to_string(),
        ]);
    }
    output::table(
        &["CONTAINER", "MEM USAGE", "MEM LIMIT", "CPU TIME", "PIDS"],
        &rows,
    );
    Ok(())
}
