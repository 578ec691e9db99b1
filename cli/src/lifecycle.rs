//! `molde start | restart | pause | unpause | rename | update | port`: a
//! container's life after `create` or `run`, one runtime.v1 call each.

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

/// Starts a created or stopped container in the background, naming `what`
/// (a reference or a name) in the error.
pub async fn start_detached(d: &Daemon, id: &str, what: &str) -> Result<()> {
    client(d)
        .start(d.request(api::StartRequest {
            id: id.into(),
            attachable: false,
        }))
        .await
        .map_err(status(format!("starting {what}")))?;
    Ok(())
}

/// The status `molde ps` and `inspect` give for a reference, if any.
async fn status_of(d: &Daemon, reference: &str) -> Result<api::ContainerStatus> {
    let json = client(d)
        .inspect(d.request(api::InspectRequest { id: reference.into() }))
        .await
        .map_err(status(format!("container {reference}")))?
        .into_inner()
        .json;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    Ok(api::ContainerStatus {
        id: v["Id"].as_str().unwrap_or_default().into(),
        tty: v["Config"]["Tty"].as_bool().unwrap_or(false),
        state: v["State"]["Status"].as_str().unwrap_or_default().into(),
        ports: v["HostConfig"]["PortBindings"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        ..Default::default()
    })
}

/// `molde start [-a] [-i] CONTAINER...`; with `-a`, the exit status of the
/// (one) container attached to.
pub async fn start(d: &Daemon, ids: Vec<String>, attach: bool, interactive: bool, keys: &str) -> Result<i32> {
    if (attach || interactive) && ids.len() > 1 {
        anyhow::bail!("start -a and -i take one container");
    }
    let keys = crate::attach::DetachKeys::parse(keys)?;
    for reference in ids {
        if !(attach || interactive) {
            start_detached(d, &reference, &reference).await?;
            println!("{reference}");
            continue;
        }
        let how = crate::attach::How {
            stdin: interactive,
            tty: status_of(d, &reference).await?.tty,
            keys: keys.clone(),
            sig_proxy: true,
        };
        return attach_and_start(d, &reference, how).await;
    }
    Ok(0)
}

/// Starts a container with a client attached from its first output on:
/// its process is created and held, the attach connects, then it starts.
/// Returns its exit status (0 when the user detached).
pub async fn attach_and_start(d: &Daemon, reference: &str, how: crate::attach::How) -> Result<i32> {
    let start = |attachable| {
        let mut c = client(d);
        let req = d.request(api::StartRequest {
            id: reference.into(),
            attachable,
        });
        async move { c.start(req).await }
    };
    let id = start(true)
        .await
        .map_err(crate::run::failed(format!("starting {reference}")))?
        .into_inner()
        .id;
    let attached = crate::attach::connect(d, &id, "").await?;
    start(false)
        .await
        .map_err(crate::run::failed(format!("starting {reference}")))?;
    if attached.relay(d, &id, how, "").await? == crate::attach::Ended::Detached {
        return Ok(0);
    }
    Ok(client(d)
        .wait(d.request(api::WaitRequest { id: id.clone() }))
        .await
        .map_err(status(format!("waiting for {reference}")))?
        .into_inner()
        .status)
}

/// `molde attach CONTAINER`: raw mode only when it has a terminal.
pub async fn attach(d: &Daemon, reference: &str, stdin: bool, keys: &str, sig_proxy: bool) -> Result<()> {
    let keys = crate::attach::DetachKeys::parse(keys)?;
    let st = status_of(d, reference).await?;
    if st.state != "running" {
        anyhow::bail!(
            "container {reference} is {}: only a running container can be attached to",
            st.state
        );
    }
    let how = crate::attach::How {
        stdin,
        tty: st.tty,
        keys,
        sig_proxy,
    };
    crate::attach::attach(d, &st.id, how, "").await?;
    Ok(())
}

/// `molde restart [-t SECONDS] CONTAINER...`: stop (if running), start.
pub async fn restart(d: &Daemon, ids: Vec<String>, time: Option<u32>) -> Result<()> {
    for reference in ids {
        client(d)
            .stop(d.request(api::StopRequest {
                id: reference.clone(),
                timeout: time.unwrap_or(0),
                signal: String::new(),
                container_timeout: time.is_none(),
            }))
            .await
            .map_err(status(format!("stopping {reference}")))?;
        start_detached(d, &reference, &reference).await?;
        println!("{reference}");
    }
    Ok(())
}

/// `molde pause` (`frozen`) and `molde unpause`.
pub async fn pause(d: &Daemon, ids: Vec<String>, frozen: bool) -> Result<()> {
    for reference in ids {
        let req = d.request(api::PauseRequest {
            id: reference.clone(),
        });
        if frozen {
            client(d).pause(req).await
        } else {
            client(d).unpause(req).await
        }
        .map_err(status(format!(
            "{} {reference}",
            if frozen { "pausing" } else { "unpausing" }
        )))?;
        println!("{reference}");
    }
    Ok(())
}

pub async fn rename(d: &Daemon, reference: &str, name: &str) -> Result<()> {
    client(d)
        .rename(d.request(api::RenameRequest {
            id: reference.into(),
            name: name.into(),
        }))
        .await
        .map_err(status(format!("renaming {reference}")))?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// CPUs, e.g. 0.5
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory limit, e.g. 32m, 1g
    #[arg(short, long)]
    memory: Option<String>,
    /// Maximum number of processes (-1: none)
    #[arg(long)]
    pids_limit: Option<i64>,
    #[arg(required = true)]
    ids: Vec<String>,
}

/// `molde update`: new limits for running or stopped containers; they
/// last across restarts.
pub async fn update(d: &Daemon, a: UpdateArgs) -> Result<()> {
    let mut res = serde_json::Map::new();
    if let Some(m) = &a.memory {
        res.insert(
            "memory".into(),
            serde_json::json!({ "limit": crate::run::parse_bytes(m)? }),
        );
    }
    if let Some(c) = a.cpus {
        if c <= 0.0 || !c.is_finite() {
            anyhow::bail!("--cpus {c}: must be a positive number");
        }
        let period = 100_000u64;
        res.insert(
            "cpu".into(),
            serde_json::json!({ "quota": (c * period as f64) as i64, "period": period }),
        );
    }
    if let Some(p) = a.pids_limit {
        if p == 0 || p < -1 {
            anyhow::bail!("--pids-limit {p}: give a positive number, or -1 for no limit");
        }
        res.insert("pids".into(), serde_json::json!({ "limit": p }));
    }
    if res.is_empty() {
        anyhow::bail!("give at least one of --cpus, --memory, --pids-limit");
    }
    let resources_json = serde_json::Value::Object(res).to_string();
    for reference in a.ids {
        client(d)
            .update(d.request(api::UpdateRequest {
                id: reference.clone(),
                resources_json: resources_json.clone(),
            }))
            .await
            .map_err(status(format!("updating {reference}")))?;
        println!("{reference}");
    }
    Ok(())
}

/// One published port as `molde port` prints it: `80/tcp -> 0.0.0.0:8080`.
pub fn port_line(spec: &str) -> Option<(String, String)> {
    let (spec, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [h, c] => ("0.0.0.0", *h, *c),
        [ip, h, c] => (if ip.is_empty() { "0.0.0.0" } else { ip }, *h, *c),
        _ => return None,
    };
    Some((format!("{container}/{proto}"), format!("{ip}:{host}")))
}

/// `molde port CONTAINER [PRIVATE_PORT[/PROTO]]`
pub async fn port(d: &Daemon, reference: &str, private: Option<&str>) -> Result<()> {
    let st = status_of(d, reference).await?;
    let want = private.map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut found = false;
    for (container, host) in st.ports.iter().filter_map(|p| port_line(p)) {
        match &want {
            Some(w) if *w == container => println!("{host}"),
            Some(_) => continue,
            None => println!("{container} -> {host}"),
        }
        found = true;
    }
    if let (Some(w), false) = (&want, found) {
        return Err(anyhow!("no public port {w} published for {reference}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::port_line;

    #[test]
    fn ports_print_as_docker_prints_them() {
        assert_eq!(
            port_line("8080:80"),
            Some(("80/tcp".into(), "0.0.0.0:8080".into()))
        );
        assert_eq!(
            port_line("127.0.0.1:5353:53/udp"),
            Some(("53/udp".into(), "127.0.0.1:5353".into()))
        );
        assert_eq!(port_line("nonsense"), None);
    }
}
