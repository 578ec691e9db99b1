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
        let v = serde_json::json!({
            "Id": c.id,
            "Name": st.name,
            "RestartCount": st.restart_count,
            "Image": c.image,
            "Created": st.created_unix,
            "State": {
                "Status": st.state,
                "Running": st.state == "running" || st.state == "paused",
                "Paused": st.state == "paused",
                "Health": molde_bundle::Bundle::new(&bundle).health().filter(|_| !st.health.is_empty()),
                "Pid": st.pid,
                "ExitCode": st.exit_code,
                "OOMKilled": st.oom_killed,
                "FinishedAt": st.finished_at,
                "Error": st.error,
            },
            "Path": st.command.first(),
            "Args": st.command.iter().skip(1).collect::<Vec<_>>(),
            "Config": {
                "Env": spec["process"]["env"],
                "WorkingDir": spec["process"]["cwd"],
                "User": spec["process"]["user"],
                "Hostname": spec["hostname"],
                "Tty": st.tty,
                "Labels": c.labels.iter().filter(|(k, _)| !k.starts_with("io.molde/")).collect::<std::collections::BTreeMap<_, _>>(),
            },
            "HostConfig": {"Resources": spec["linux"]["resources"], "ReadonlyRootfs": spec["root"]["readonly"], "PortBindings": st.ports, "RestartPolicy": {"Name": if st.restart_policy.is_empty() { "no" } else { st.restart_policy.split(':').next().unwrap_or("no") }, "MaximumRetryCount": st.restart_policy.split_once(':').and_then(|(_, n)| n.parse::<u32>().ok()).unwrap_or(0)}},
            "Mounts": spec["mounts"].as_array().map(|m| m.iter().filter(|x| x["type"] == "bind" && !x["destination"].as_str().unwrap_or("").starts_with("/etc/")).cloned().collect::<Vec<_>>()),
            "NetworkSettings": {
                "IPAddress": crate::network::address(&network),
                "Ports": network.ports,
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
            crate::lifecycle::cgroup_update(&self.cgroup(&ns, &r.id), &res)
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
