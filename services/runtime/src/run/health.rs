//! Health checks (`--health-cmd`, the image's HEALTHCHECK), as docker runs
//! them: molded runs the check in the container every interval (an exec
//! with the check's timeout); `retries` failures in a row make it
//! unhealthy, one success healthy; failures in the start period do not
//! count. The state is the bundle's `health.json` (shown by ps and
//! inspect); each change is a /containers/health event.

use std::collections::HashSet;

use super::*;

/// docker's defaults.
const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const RETRIES: u32 = 3;
/// Checks kept in health.json.
const LOG_KEPT: usize = 5;

/// The containers a check loop runs for.
#[derive(Default)]
pub(crate) struct Watching(std::sync::Mutex<HashSet<String>>);

fn duration(ns: i64, default: Duration) -> Duration {
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        default
    }
}

/// The image's HEALTHCHECK (docker's config field) as a HealthConfig.
pub(crate) fn from_image(config_raw: &[u8]) -> Option<api::HealthConfig> {
    let v: serde_json::Value = serde_json::from_slice(config_raw).ok()?;
    let h = v.get("config")?.get("Healthcheck")?;
    let test: Vec<String> = h
        .get("Test")?
        .as_array()?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let n = |k: &str| h.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
    Some(api::HealthConfig {
        test,
        interval_ns: n("Interval"),
        timeout_ns: n("Timeout"),
        start_period_ns: n("StartPeriod"),
        retries: n("Retries") as i32,
    })
}

/// The check a container runs, if any: the request's, else the image's
/// (unless --no-healthcheck, or a test of NONE).
pub(crate) fn effective(req: &api::RunRequest) -> Option<api::HealthConfig> {
    if req.no_healthcheck {
        return None;
    }
    let h = req.health.clone()?;
    match h.test.first().map(String::as_str) {
        Some("CMD") | Some("CMD-SHELL") if h.test.len() > 1 => Some(h),
        _ => None,
    }
}

impl RuntimeService {
    /// Runs the container's health checks while it runs (once per container).
    pub(crate) fn watch_health(&self, ns: &str, id: &str) {
        let Ok(c) = self.record(ns, id) else {
            return;
        };
        let Some(h) = effective(&run_request(&c)) else {
            return;
        };
        let key = format!("{ns}/{id}");
        if !self.health.0.lock().expect("health set").insert(key.clone()) {
            return;
        }
        let (me, ns, id) = (self.clone(), ns.to_string(), id.to_string());
        tokio::spawn(async move {
            me.health_loop(&ns, &id, &h).await;
            me.health.0.lock().expect("health set").remove(&key);
        });
    }

    async fn health_loop(&self, ns: &str, id: &str, h: &api::HealthConfig) {
        let interval = duration(h.interval_ns, INTERVAL);
        let timeout = duration(h.timeout_ns, TIMEOUT);
        let start_period = duration(h.start_period_ns, Duration::ZERO);
        let retries = if h.retries > 0 { h.retries as u32 } else { RETRIES };
        let args: Vec<String> = match h.test[0].as_str() {
            "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), h.test[1].clone()],
            _ => h.test[1..].to_vec(),
        };
        let b = Bundle::new(self.bundle_dir(ns, id));
        let mut health = b.health().unwrap_or_else(|| molde_bundle::Health {
            status: "starting".into(),
            ..Default::default()
        });
        let _ = b.write_health(&health);
        let began = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            match self.observe(ns, id).state {
                "running" => {}
                "paused" | "created" => continue,
                _ => return, // exited or removed: the next start watches again
            }
            if b.health().is_none() {
                return; // a new run cleared it; its own watcher takes over
            }
            let start = chrono::Utc::now();
            let (code, output) = self.probe(ns, id, &args, timeout).await;
            let check = molde_bundle::HealthCheck {
                start: start.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                end: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                exit_code: code,
                output,
            };
            let before = health.status.clone();
            if code == 0 {
                health.status = "healthy".into();
                health.failing_streak = 0;
            } else if began.elapsed() >= start_period || health.status != "starting" {
                health.failing_streak += 1;
                if health.failing_streak >= retries {
                    health.status = "unhealthy".into();
                }
            }
            health.log.push(check);
            if health.log.len() > LOG_KEPT {
                health.log.remove(0);
            }
            if let Err(e) = b.write_health(&health) {
                tracing::warn!(namespace = ns, container = id, error = %e, "health not recorded");
            }
            if health.status != before {
                tracing::info!(namespace = ns, container = id, status = %health.status, "container health");
                self.events.publish_as(
                    ns,
                    "/containers/health",
                    "molde.services.runtime.v1.HealthEvent",
                    api::HealthEvent {
                        container_id: id.to_string(),
                        status: health.status.clone(),
                    },
                );
            }
        }
    }

    /// Runs one check; its exit code (-1 when it timed out or could not
    /// run) and the start of its output.
    async fn probe(&self, ns: &str, id: &str, args: &[String], timeout: Duration) -> (i32, String) {
        let req = namespaced(
            ns,
            api::ExecRequest {
                id: id.to_string(),
                args: args.to_vec(),
                timeout_ms: timeout.as_millis() as u64,
                ..Default::default()
            },
        );
        let mut stream = match self.exec_rpc(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => return (-1, e.message().to_string()),
        };
        let mut output = Vec::new();
        use tokio_stream::StreamExt;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(api::RunEvent {
                    event: Some(Event::Output(o)),
                }) => {
                    if output.len() < 4096 {
                        output.extend_from_slice(&o.data);
                    }
                }
                Ok(api::RunEvent {
                    event: Some(Event::Exited(x)),
                }) => {
                    let code = if x.timed_out { -1 } else { x.status };
                    return (code, String::from_utf8_lossy(&output).into_owned());
                }
                Ok(_) => {}
                Err(e) => return (-1, e.message().to_string()),
            }
        }
        (-1, "the check ended without a status".into())
    }
}
