//! Looking at containers: logs, inspect, top, stats.

use super::*;

impl RuntimeService {
    pub(super) async fn logs_rpc(
        &self,
        req: Request<api::LogsRequest>,
    ) -> Result<Response<ReceiverStream<Result<api::LogRecord, Status>>>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        self.record(&ns, &r.id)?;
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            let (mut records, mut offset) = me.read_log(&ns, &r.id, 0);
            if r.tail > 0 && records.len() > r.tail as usize {
                records.drain(..records.len() - r.tail as usize);
            }
            loop {
                for rec in records.drain(..) {
                    if tx.send(Ok(rec)).await.is_err() {
                        return;
                    }
                }
                if !r.follow || me.observe(&ns, &r.id).state == "exited" {
                    // One last read: what was written before the exit.
                    let (rest, _) = me.read_log(&ns, &r.id, offset);
                    for rec in rest {
                        if tx.send(Ok(rec)).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let (more, next) = me.read_log(&ns, &r.id, offset);
                records = more;
                offset = next;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    pub(super) async fn inspect_rpc(
        &self,
        req: Request<api::InspectRequest>,
    ) -> Result<Response<api::InspectResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = &req.get_ref().id;
        let c = self.record(&ns, id)?;
        let st = self.status(&ns, &c);
        let bundle = self.bundle_dir(&ns, id);
        let spec: serde_json::Value = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        let network = molde_bundle::Bundle::new(&bundle)
            .network_record()
            .ok()
            .flatten()
            .unwrap_or_default();
        let req = crate::run::run_request(&c);
        let rfc3339 = |secs: i64| {
            chrono::DateTime::from_timestamp(secs, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let never = "0001-01-01T00:00:00Z";
        let or_never = |s: &str| {
            if s.is_empty() {
                never.to_string()
            } else {
                s.to_string()
            }
        };
        let network_name = if network.network.is_empty() {
            if req.network.is_empty() {
                "bridge".to_string()
            } else {
                req.network.clone()
            }
        } else {
            network.network.clone()
        };
        let ip = crate::network::address(&network);
        let mut networks = if network_name == "none" || network_name == "host" {
            serde_json::json!({ network_name.clone(): {} })
        } else {
            serde_json::json!({ network_name.clone(): {
                "IPAddress": ip.clone().unwrap_or_default(),
                "Aliases": network.names,
                "NetworkID": network.network,
            }})
        };
        for c in &network.connected {
            networks[c.network.as_str()] = serde_json::json!({
                "IPAddress": c.result.first_ip().unwrap_or_default(),
                "Aliases": c.names,
                "NetworkID": c.network,
                "Interface": c.ifname,
            });
        }
        // Connected while stopped: on it from the next start.
        for c in &req.connections {
            if networks.get(c.network.as_str()).is_none() {
                networks[c.network.as_str()] =
                    serde_json::json!({"IPAddress": "", "Aliases": c.aliases, "NetworkID": c.network});
            }
        }
        let v = serde_json::json!({
            "Id": c.id,
            "Name": format!("/{}", if st.name.is_empty() { &c.id } else { &st.name }),
            "RestartCount": st.restart_count,
            "Image": c.image,
            "Created": rfc3339(st.created_unix),
            "State": {
                "Status": st.state,
                "Running": st.state == "running" || st.state == "paused",
                "Paused": st.state == "paused",
                "Restarting": st.state == "restarting",
                "Dead": false,
                "Health": molde_bundle::Bundle::new(&bundle).health().filter(|_| !st.health.is_empty()),
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "OOMKilled": st.oom_killed,
                "StartedAt": or_never(&st.started_at),
                "FinishedAt": or_never(&st.finished_at),
                "Error": st.error,
            },
            "Path": st.command.first(),
            "Args": st.command.iter().skip(1).collect::<Vec<_>>(),
            "Config": {
                "Image": c.image,
                "Cmd": st.command,
                "Env": spec["process"]["env"],
                "WorkingDir": spec["process"]["cwd"],
                "User": req.user,
                "Hostname": spec["hostname"],
                "Tty": st.tty,
                "OpenStdin": req.interactive,
                "Labels": st.labels.iter().collect::<std::collections::BTreeMap<_, _>>(),
                "StopSignal": if req.stop_signal.is_empty() { serde_json::Value::Null } else { req.stop_signal.clone().into() },
            },
            "HostConfig": {
                "NetworkMode": network_name,
                "Binds": req.volumes,
                "Resources": spec["linux"]["resources"],
                "ReadonlyRootfs": spec["root"]["readonly"],
                "PortBindings": st.ports,
                "Privileged": req.privileged,
                "CapAdd": req.cap_add,
                "CapDrop": req.cap_drop,
                "Init": req.init,
                "RestartPolicy": {
                    "Name": if st.restart_policy.is_empty() { "no" } else { st.restart_policy.split(':').next().unwrap_or("no") },
                    "MaximumRetryCount": st.restart_policy.split_once(':').and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(0),
                },
            },
            "Mounts": docker_mounts(&spec),
            "NetworkSettings": {
                "IPAddress": ip,
                "Ports": network.ports,
                "Networks": networks,
            },
            "SnapshotKey": c.snapshot_key,
            "BundlePath": bundle,
        });
        Ok(Response::new(api::InspectResponse {
            json: serde_json::to_string_pretty(&v).unwrap_or_default(),
        }))
    }

    pub(super) async fn top_rpc(
        &self,
        req: Request<api::TopRequest>,
    ) -> Result<Response<api::TopResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = &req.get_ref().id;
        self.running(&ns, id)?;
        let mut processes = Vec::new();
        for pid in crate::lifecycle::cgroup_pids(&self.cgroup(&ns, id)) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        l.strip_prefix("Uid:")
                            .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
                    })
                })
                .unwrap_or_default();
            processes.push(api::Process {
                pid,
                user: uid,
                command,
            });
        }
        Ok(Response::new(api::TopResponse { processes }))
    }

    pub(super) async fn stats_rpc(
        &self,
        req: Request<api::StatsRequest>,
    ) -> Result<Response<api::StatsResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = &req.get_ref().id;
        self.running(&ns, id)?;
        let s = molde_bundle::cgroup::Cgroup::new(&self.cgroup(&ns, id)).stats();
        let pid = self.observe(&ns, id).pid;
        let (net_rx_bytes, net_tx_bytes) = if pid > 0 { net_bytes(pid) } else { (0, 0) };
        Ok(Response::new(api::StatsResponse {
            memory_bytes: s.memory_usage_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            cpu_usage_ns: s.cpu_usage_ns,
            pids: s.pids,
            memory_working_set_bytes: s.memory_working_set_bytes,
            memory_rss_bytes: s.memory_rss_bytes,
            memory_page_faults: s.memory_page_faults,
            memory_major_page_faults: s.memory_major_page_faults,
            swap_bytes: s.swap_usage_bytes,
            io_read_bytes: s.io_read_bytes,
            io_write_bytes: s.io_write_bytes,
            hugetlb_bytes: s.hugetlb.into_iter().collect(),
            net_rx_bytes,
            net_tx_bytes,
        }))
    }

    /// The cgroup a container runs in: its spec's (a pod's container's is
    /// under the pod's parent), else molde's own layout.
    pub(crate) fn cgroup(&self, ns: &str, id: &str) -> String {
        crate::lifecycle::cgroup_of(&self.bundle_dir(ns, id))
            .unwrap_or_else(|| crate::spec::cgroup_path(ns, id))
    }

    pub(super) async fn update_rpc(
        &self,
        req: Request<api::UpdateRequest>,
    ) -> Result<Response<api::UpdateResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        let mut record = self.record(&ns, &r.id)?;
        let res: oci_spec::runtime::LinuxResources = serde_json::from_str(&r.resources_json)
            .map_err(|e| Error::InvalidArgument(format!("resources of {}: {e}", r.id)))?;
        if matches!(self.observe(&ns, &r.id).state, "running" | "paused") {
            // Under the systemd driver, systemd sets the limits it holds.
            let rest = match record.labels.get(crate::systemd::UNIT_LABEL) {
                Some(unit) => {
                    crate::systemd::update_scope(unit, &res).await?;
                    crate::systemd::without_unit_limits(&res)
                }
                None => res.clone(),
            };
            crate::lifecycle::cgroup_update(&self.cgroup(&ns, &r.id), &rest)
                .map_err(|e| e.context(format!("container {}", r.id)))?;
        }
        // Kept with the container, so its next start has them too.
        if let Some(any) = record.spec.as_mut()
            && let Ok(mut spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(&any.value)
        {
            if let Some(linux) = spec.linux_mut() {
                let mut merged = linux.resources().clone().unwrap_or_default();
                crate::spec::merge_resources(&mut merged, &res);
                linux.set_resources(Some(merged));
            }
            any.value = serde_json::to_vec_pretty(&spec)
                .map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?;
            self.store
                .txn(molde_meta::Txn::new().put(crate::containers::key(&ns, &r.id), record.encode_to_vec()))
                .map_err(Error::from)?;
        }
        tracing::info!(namespace = %ns, container = %r.id, "resources updated");
        Ok(Response::new(api::UpdateResponse {}))
    }
}

/// Bytes received and sent on the interfaces of `pid`'s network namespace,
/// loopback left out, from its `/proc/<pid>/net/dev`.
fn net_bytes(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (iface, counters) = l.split_once(':')?;
            if iface.trim() == "lo" {
                return None;
            }
            let f: Vec<u64> = counters
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(r, t), (a, b)| (r + a, t + b))
}

/// The spec's user-given mounts as docker's inspect shows them: binds and
/// volumes (a bind of `<volumes>/NAME/_data`), tmpfs; the files molde
/// bind-mounts itself (/etc/hosts, resolv.conf, hostname) left out.
fn docker_mounts(spec: &serde_json::Value) -> Vec<serde_json::Value> {
    let Some(mounts) = spec["mounts"].as_array() else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter_map(|m| {
            let dst = m["destination"].as_str()?;
            let src = m["source"].as_str().unwrap_or("");
            let options: Vec<&str> = m["options"].as_array().map(|o| o.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
            let rw = !options.contains(&"ro");
            match m["type"].as_str()? {
                "bind" if dst.starts_with("/etc/") || dst == "/sbin/molde-init" => None,
                "bind" => {
                    let path = std::path::Path::new(src);
                    let volume = (path.file_name()? == "_data")
                        .then(|| path.parent()?.file_name()?.to_str())
                        .flatten();
                    Some(match volume {
                        Some(name) => serde_json::json!({
                            "Type": "volume", "Name": name, "Source": src, "Destination": dst,
                            "Driver": "local", "Mode": if rw { "z" } else { "ro" }, "RW": rw, "Propagation": "",
                        }),
                        None => serde_json::json!({
                            "Type": "bind", "Source": src, "Destination": dst,
                            "Mode": if rw { "" } else { "ro" }, "RW": rw, "Propagation": "rprivate",
                        }),
                    })
                }
                "tmpfs" if !matches!(dst, "/dev" | "/run" | "/dev/shm" | "/tmp") || options.iter().any(|o| o.starts_with("size=")) => {
                    Some(serde_json::json!({"Type": "tmpfs", "Source": "", "Destination": dst, "Mode": "", "RW": rw, "Propagation": ""}))
                }
                _ => None,
            }
        })
        .collect()
}
