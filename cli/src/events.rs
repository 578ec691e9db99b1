//! `molde events`: what happens to containers, images, networks and volumes,
//! as docker prints it, from containerd's events.v1 (`ctr events` reads the
//! same stream). `--since` replays what molded kept; `--until` ends it.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use molde_api::containerd::events as ev;
use molde_api::containerd::services::events::v1::{Envelope, SubscribeRequest, events_client::EventsClient};
use prost::Message;

use crate::daemon::{Daemon, status};

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Events from this time on: RFC 3339, Unix seconds, or a duration ago (10m, 1h)
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (same forms; a time to come waits for it)
    #[arg(long)]
    until: Option<String>,
    /// type=container|image|network|volume, event=ACTION, container=, image=,
    /// network=, volume= (repeatable: the same key ORs, different keys AND)
    #[arg(short, long)]
    filter: Vec<String>,
    /// table, json (one object per line), or a template: '{{.Type}} {{.Action}} {{.Actor.ID}}'
    #[arg(long, default_value = "table")]
    format: crate::output::Format,
}

/// An event as docker shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    pub time_nanos: i128,
    pub kind: String,
    pub action: String,
    pub actor: String,
    pub attributes: BTreeMap<String, String>,
}

/// `2026-12-04T05:00:00Z`, `1764824400`, `10m`: Unix nanoseconds.
pub fn parse_time(s: &str, now_nanos: i128) -> Result<i128> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_nanos_opt().unwrap_or(0) as i128);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e9) as i128);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i128 = num
        .parse()
        .map_err(|_| anyhow!("{s:?}: give an RFC 3339 time, Unix seconds or a duration such as 10m"))?;
    let unit_nanos: i128 = match unit {
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return Err(anyhow!("{s:?}: a duration's unit is s, m, h or d")),
    };
    Ok(now_nanos - n * unit_nanos)
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The envelope as docker names it; None for topics users do not see.
pub fn show(e: &Envelope) -> Option<Shown> {
    let any = e.event.as_ref()?;
    let time_nanos = e
        .timestamp
        .as_ref()
        .map_or(0, |t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128);
    let mut attributes = BTreeMap::new();
    let (kind, action, actor) = match e.topic.as_str() {
        "/containers/create" => {
            let m = ev::ContainerCreate::decode(any.value.as_slice()).ok()?;
            attributes.insert("image".into(), m.image);
            ("container", "create", m.id)
        }
        "/containers/delete" => (
            "container",
            "destroy",
            ev::ContainerDelete::decode(any.value.as_slice()).ok()?.id,
        ),
        "/tasks/start" => (
            "container",
            "start",
            ev::TaskStart::decode(any.value.as_slice()).ok()?.container_id,
        ),
        "/tasks/exit" => {
            let m = ev::TaskExit::decode(any.value.as_slice()).ok()?;
            attributes.insert("exitCode".into(), m.exit_status.to_string());
            ("container", "die", m.container_id)
        }
        "/tasks/oom" => (
            "container",
            "oom",
            ev::TaskOom::decode(any.value.as_slice()).ok()?.container_id,
        ),
        "/tasks/paused" => (
            "container",
            "pause",
            ev::TaskPaused::decode(any.value.as_slice()).ok()?.container_id,
        ),
        "/tasks/resumed" => (
            "container",
            "unpause",
            ev::TaskResumed::decode(any.value.as_slice()).ok()?.container_id,
        ),
        "/images/create" | "/images/update" => (
            "image",
            "tag",
            ev::ImageCreate::decode(any.value.as_slice()).ok()?.name,
        ),
        "/images/delete" => (
            "image",
            "delete",
            ev::ImageDelete::decode(any.value.as_slice()).ok()?.name,
        ),
        "/images/pull" | "/images/push" => {
            use molde_api::molde::services::transfer::v1::ImageTransferred;
            let action = if e.topic.ends_with("pull") { "pull" } else { "push" };
            (
                "image",
                action,
                ImageTransferred::decode(any.value.as_slice()).ok()?.name,
            )
        }
        "/containers/health" => {
            use molde_api::molde::services::runtime::v1::HealthEvent;
            let m = HealthEvent::decode(any.value.as_slice()).ok()?;
            let action = format!("health_status: {}", m.status);
            return Some(Shown {
                time_nanos,
                kind: "container".into(),
                action,
                actor: m.container_id,
                attributes,
            });
        }
        "/networks/create" | "/networks/delete" => {
            use molde_api::molde::services::runtime::v1::NetworkEvent;
            let m = NetworkEvent::decode(any.value.as_slice()).ok()?;
            let action = if e.topic.ends_with("create") {
                "create"
            } else {
                "destroy"
            };
            if !m.id.is_empty() {
                attributes.insert("id".into(), m.id);
            }
            ("network", action, m.name)
        }
        "/networks/connect" | "/networks/disconnect" => {
            use molde_api::molde::services::runtime::v1::NetworkEvent;
            let m = NetworkEvent::decode(any.value.as_slice()).ok()?;
            let action = if e.topic.ends_with("/disconnect") {
                "disconnect"
            } else {
                "connect"
            };
            attributes.insert("container".into(), m.id);
            attributes.insert("name".into(), m.name.clone());
            ("network", action, m.name)
        }
        "/volumes/create" | "/volumes/delete" => {
            use molde_api::molde::services::runtime::v1::VolumeEvent;
            let action = if e.topic.ends_with("create") {
                "create"
            } else {
                "destroy"
            };
            (
                "volume",
                action,
                VolumeEvent::decode(any.value.as_slice()).ok()?.name,
            )
        }
        _ => return None,
    };
    Some(Shown {
        time_nanos,
        kind: kind.into(),
        action: action.into(),
        actor,
        attributes,
    })
}

/// Whether `s` passes docker's filters: values of one key OR, keys AND.
pub fn matches(s: &Shown, filters: &[(String, String)]) -> bool {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in filters {
        by_key.entry(k.as_str()).or_default().push(v.as_str());
    }
    by_key.iter().all(|(k, vs)| match *k {
        "type" => vs.contains(&s.kind.as_str()),
        // `health_status` matches `health_status: healthy` too.
        "event" => vs
            .iter()
            .any(|v| s.action == *v || s.action.strip_prefix(v).is_some_and(|r| r.starts_with(':'))),
        kind @ ("container" | "image" | "network" | "volume") => {
            s.kind == kind
                && vs
                    .iter()
                    .any(|v| s.actor == *v || s.actor.starts_with(v) && kind == "container")
        }
        _ => false,
    })
}

fn parse_filters(filters: &[String]) -> Result<Vec<(String, String)>> {
    filters
        .iter()
        .flat_map(|f| f.split(','))
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("--filter {f:?}: expected KEY=VALUE"))?;
            if !matches!(k, "type" | "event" | "container" | "image" | "network" | "volume") {
                return Err(anyhow!(
                    "--filter {f:?}: filters are type, event, container, image, network and volume"
                ));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

pub async fn events(d: &Daemon, a: EventsArgs) -> Result<()> {
    let now = now_nanos();
    let since = a.since.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let until = a.until.as_deref().map(|s| parse_time(s, now)).transpose()?;
    let filters = parse_filters(&a.filter)?;
    let mut req = d.request(SubscribeRequest {
        filters: vec![format!("namespace=={}", d.namespace)],
    });
    if let Some(s) = since {
        req.metadata_mut().insert(
            molde_api::EVENTS_SINCE_HEADER,
            s.to_string().parse().expect("digits are a header value"),
        );
    }
    let mut stream = EventsClient::new(d.channel.clone())
        .subscribe(req)
        .await
        .map_err(status("subscribing to events"))?
        .into_inner();
    let deadline = until.map(|u| {
        let wait = (u - now_nanos()).max(0) as u64;
        tokio::time::Instant::now() + std::time::Duration::from_nanos(wait)
    });
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.message()).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            None => stream.message().await,
        };
        let Some(env) = next.map_err(|s| anyhow!("events: {}", s.message()))? else {
            return Ok(());
        };
        let Some(shown) = show(&env) else {
            continue;
        };
        if until.is_some_and(|u| shown.time_nanos > u) {
            return Ok(());
        }
        if !matches(&shown, &filters) {
            continue;
        }
        let time = chrono::DateTime::from_timestamp_nanos(shown.time_nanos as i64)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let json = serde_json::json!({
            "time": time, "timeNano": shown.time_nanos.to_string(), "Type": shown.kind, "Action": shown.action,
            "Actor": {"ID": shown.actor, "Attributes": shown.attributes},
            "Scope": "local", "id": shown.actor, "status": shown.action,
        });
        match &a.format {
            crate::output::Format::Json => println!("{json}"),
            crate::output::Format::Template(t) => println!("{}", t.render(&json)?),
            crate::output::Format::Table => {
                let attrs = shown
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let attrs = if attrs.is_empty() {
                    String::new()
                } else {
                    format!(" ({attrs})")
                };
                println!("{time} {} {} {}{attrs}", shown.kind, shown.action, shown.actor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_docker_takes_them() {
        let now = 1_000_000_000_000_000_000i128;
        assert_eq!(parse_time("10m", now).unwrap(), now - 600_000_000_000);
        assert_eq!(parse_time("1700000000", now).unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            parse_time("2026-12-04T05:00:00Z", now).unwrap(),
            1_796_360_400_000_000_000
        );
        assert!(parse_time("soon", now).is_err());
    }

    #[test]
    fn filters_or_within_a_key_and_across_keys() {
        let die = Shown {
            time_nanos: 0,
            kind: "container".into(),
            action: "die".into(),
            actor: "web".into(),
            attributes: BTreeMap::new(),
        };
        let f = |s: &[&str]| parse_filters(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(matches(&die, &f(&["type=container", "event=start,event=die"])));
        assert!(!matches(&die, &f(&["type=image"])));
        assert!(matches(&die, &f(&["container=web"])));
        assert!(!matches(&die, &f(&["container=db"])));
        assert!(!matches(&die, &f(&["event=die", "type=volume"])));
        assert!(parse_filters(&["colour=red".to_string()]).is_err());
    }
}
