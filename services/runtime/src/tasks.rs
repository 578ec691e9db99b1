//! containerd.services.tasks.v1: running containers that containerd clients
//! (ctr, the Go and Rust clients) created through containers.v1.
//!
//! Create writes the bundle (the container record's spec, the rootfs mounts the
//! client resolved, the client's stdio FIFOs) and hands it to a `molde-shim`
//! (the one `molde run` uses) that creates the container and holds it; Start
//! orders the held container started; Wait, Kill, Get, List and Delete read
//! and act on what the shim leaves on disk.

use molde_common::errdefs::Error;
use molde_common::errdefs::OrLog;
use std::time::Duration;

use molde_api::containerd::services::tasks::v1 as api;
use molde_api::containerd::v1::types::{Process, Status as TaskStatus};
use molde_bundle::Bundle;
use molde_common::RequestContext;
use tonic::{Request, Response, Status};

use crate::service::RuntimeService;

fn ns<T>(req: &Request<T>) -> Result<String, Error> {
    Ok(RequestContext::of(req).map_err(Status::from)?.namespace)
}

fn unsupported(what: &str) -> Error {
    Error::Unimplemented(format!("tasks.v1 {what} is not supported by molde yet"))
}

fn ts(rfc3339: &str) -> Option<prost_types::Timestamp> {
    let t = parse_rfc3339(rfc3339)?;
    Some(prost_types::Timestamp {
        seconds: t.0,
        nanos: t.1,
    })
}

/// Seconds and nanoseconds of an RFC 3339 time (as the shim writes it).
fn parse_rfc3339(s: &str) -> Option<(i64, i32)> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}

/// Exec ids name files: letters, digits, `.`, `_`, `-`.
fn check_exec_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 76 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err(Error::InvalidArgument(format!(
            "exec id {id:?}: use letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

impl RuntimeService {
    /// Starts a recorded exec in a `molde-shim exec`, its stdio on the client's
    /// FIFOs; a thread records its exit status for Wait.
    fn start_exec(&self, ns: &str, id: &str, exec_id: &str) -> Result<u32, Error> {
        check_exec_id(exec_id)?;
        let bundle = self.bundle_dir(ns, id);
        let b = Bundle::new(&bundle);
        let dir = b.exec_dir();
        let rec = b
            .task_exec(exec_id)
            .map_err(Error::io(format!("reading exec {exec_id:?} of task {id:?}")))?
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id:?} of task {id:?}")))?;
        let pfile = b
            .write_exec(exec_id, &rec.process)
            .map_err(Error::io(format!("exec {exec_id}")))?;
        // Opened read-write, a FIFO never blocks the open on its other end.
        let open = |path: &str| -> Result<std::process::Stdio, Error> {
            if path.is_empty() {
                return Ok(std::process::Stdio::null());
            }
            std::fs::File::options()
                .read(true)
                .write(true)
                .open(path)
                .map(std::process::Stdio::from)
                .map_err(Error::io(format!("opening {path}")))
        };
        let mut child = std::process::Command::new(&self.shim)
            .arg("exec")
            .args(["--id", &format!("{ns}-{id}")])
            .arg("--bundle")
            .arg(&bundle)
            .arg("--state")
            .arg(self.state.join(".libcontainer"))
            .arg("--process")
            .arg(&pfile)
            .stdin(open(&rec.stdio.stdin)?)
            .stdout(open(&rec.stdio.stdout)?)
            .stderr(open(&rec.stdio.stderr)?)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.shim.display())))?;
        let pid = child.id();
        let exit = dir.join(format!("{exec_id}.exit"));
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(255);
            std::fs::write(&exit, code.to_string()).or_log("recording an exec's exit code");
            let _ = std::fs::remove_file(&pfile);
        });
        Ok(pid)
    }

    /// Starts the task's shim holding the created container; the init's pid.
    async fn create_held(&self, ns: &str, id: &str, bundle: &std::path::Path) -> Result<u32, Error> {
        self.spawn_task_shim(ns, id, bundle, true)?;
        let b = Bundle::new(bundle);
        match crate::bundle_wait::pid_or_error(&b, Duration::from_secs(60), Bundle::created_pid).await {
            Some(Ok(pid)) => Ok(pid as u32),
            Some(Err(msg)) => Err(Error::FailedPrecondition(format!("task {id}: {msg}"))),
            None => Err(Error::DeadlineExceeded(format!(
                "task {id}: not created within 60s"
            ))),
        }
    }

    /// The task of every container in `ns` that has one.
    fn tasks(&self, ns: &str) -> Result<Vec<Process>, Error> {
        let records = self
            .store
            .range(&molde_meta::keys::containers::prefix(ns))
            .map_err(Error::Meta)?;
        Ok(records
            .iter()
            .filter_map(|e| self.process(ns, e.key.rsplit('/').next()?).ok())
            .collect())
    }

    fn process(&self, ns: &str, id: &str) -> Result<Process, Error> {
        self.record(ns, id)?;
        let bundle = self.bundle_dir(ns, id);
        if !bundle.join("config.json").exists() {
            return Err(Error::NotFound(format!("task {id:?}")));
        }
        let o = self.observe(ns, id);
        let status = match o.state {
            "running" => TaskStatus::Running,
            "paused" => TaskStatus::Paused,
            "exited" => TaskStatus::Stopped,
            _ => TaskStatus::Created,
        };
        let stdio = Bundle::new(&bundle).stdio().ok().flatten().unwrap_or_default();
        let pid = match status {
            TaskStatus::Created => Bundle::new(&bundle).created_pid().unwrap_or(0),
            _ => o.pid,
        };
        Ok(Process {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: pid.max(0) as u32,
            status: status as i32,
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr,
            terminal: false,
            exit_status: o.exit_code.max(0) as u32,
            exited_at: ts(&o.finished_at),
        })
    }
}

#[tonic::async_trait]
impl api::tasks_server::Tasks for RuntimeService {
    async fn create(
        &self,
        req: Request<api::CreateTaskRequest>,
    ) -> Result<Response<api::CreateTaskResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let c = self.record(&ns, &r.container_id)?;
        // A CRI container's terminal is the shim's: it logs and relays it.
        if r.terminal && !r.stdout.starts_with("cri-log://") {
            return Err(unsupported("a terminal (-t)").into());
        }
        let bundle = self.bundle_dir(&ns, &r.container_id);
        if bundle.join("config.json").exists() {
            return Err(Error::AlreadyExists(format!("task {:?}", r.container_id)).into());
        }
        let spec = c.spec.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!("container {:?} has no spec", r.container_id))
        })?;
        // Under the systemd driver the limits systemd holds are its to write:
        // kept for the scope, left out of what libcontainer reads.
        let mut unit_limits = oci_spec::runtime::LinuxResources::default();
        let config = match c.labels.contains_key(crate::systemd::UNIT_LABEL) {
            true => {
                let mut s: oci_spec::runtime::Spec = serde_json::from_slice(&spec.value).map_err(|e| {
                    Error::InvalidArgument(format!("the OCI spec of {}: {e}", r.container_id))
                })?;
                if let Some(linux) = s.linux_mut()
                    && let Some(res) = linux.resources().clone()
                {
                    linux.set_resources(Some(crate::systemd::without_unit_limits(&res)));
                    unit_limits = res;
                }
                serde_json::to_vec(&s).map_err(|e| Error::Internal(format!("encoding the OCI spec: {e}")))?
            }
            false => spec.value.clone(),
        };
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(bundle.join("rootfs"))?;
            std::fs::write(bundle.join("config.json"), &config)?;
            molde_bundle::mount::write(&bundle, &molde_common::bundle_mounts(&r.rootfs))?;
            // `cri-log:///path`: the shim writes both streams to that file in
            // the kubelet's format (molde's CRI service asks for this).
            let stdio = match r.stdout.strip_prefix("cri-log://") {
                Some(path) => molde_bundle::Stdio {
                    cri_log: path.to_string(),
                    ..Default::default()
                },
                None => molde_bundle::Stdio {
                    stdin: if r.stdin.starts_with("molde-attach") {
                        String::new()
                    } else {
                        r.stdin.clone()
                    },
                    stdout: r.stdout.clone(),
                    stderr: r.stderr.clone(),
                    cri_log: String::new(),
                },
            };
            let b = Bundle::new(&bundle);
            match r.stdin.as_str() {
                molde_bundle::STDIN_ATTACH => b.set_interactive()?,
                molde_bundle::STDIN_ATTACH_ONCE => b.set_interactive_once()?,
                _ => {}
            }
            b.write_stdio(&stdio)
        };
        write().map_err(|e| Error::Internal(format!("task {}: writing its bundle: {e}", r.container_id)))?;
        // The shim creates the container now and holds it: Start is then one
        // write to its FIFO, as a runtime's start is after its create.
        let pid = match self.create_held(&ns, &r.container_id, &bundle).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&bundle);
                return Err(e.into());
            }
        };
        // The systemd cgroup driver: the held container's cgroup becomes a
        // transient scope of systemd's.
        if let Some(unit) = c.labels.get(crate::systemd::UNIT_LABEL) {
            let slice = c
                .labels
                .get(crate::systemd::SLICE_LABEL)
                .map_or("system.slice", String::as_str);
            if let Err(e) = crate::systemd::start_scope(unit, slice, pid, &unit_limits).await {
                self.abandon_held(&ns, &r.container_id).await;
                self.exited(&ns, &r.container_id);
                let _ = std::fs::remove_dir_all(&bundle);
                return Err(e.into());
            }
        }
        tracing::info!(namespace = %ns, container = %r.container_id, "task created");
        self.events.publish(
            &ns,
            "/tasks/create",
            "TaskCreate",
            molde_api::containerd::events::TaskCreate {
                container_id: r.container_id.clone(),
                bundle: bundle.display().to_string(),
                pid,
            },
        );
        Ok(Response::new(api::CreateTaskResponse {
            container_id: r.container_id,
            pid,
        }))
    }

    async fn start(&self, req: Request<api::StartRequest>) -> Result<Response<api::StartResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        if !r.exec_id.is_empty() {
            let pid = self.start_exec(&ns, &r.container_id, &r.exec_id)?;
            return Ok(Response::new(api::StartResponse { pid }));
        }
        let p = self.process(&ns, &r.container_id)?;
        if p.status != TaskStatus::Created as i32 {
            return Err(
                Error::FailedPrecondition(format!("task {:?} was already started", r.container_id)).into(),
            );
        }
        let bundle = self.bundle_dir(&ns, &r.container_id);
        let b = Bundle::new(&bundle);
        if b.created_pid().is_some() {
            let ordered = b
                .order_held(molde_bundle::HOLD_START)
                .map_err(|e| Error::Internal(format!("task {}: ordering its start: {e}", r.container_id)))?;
            if !ordered {
                return Err(Error::FailedPrecondition(format!(
                    "task {}: its shim is gone; delete the task and create it again",
                    r.container_id
                ))
                .into());
            }
        } else {
            // A task created by a molded from before holding shims.
            self.spawn_task_shim(&ns, &r.container_id, &bundle, false)?;
        }
        match crate::bundle_wait::pid_or_error(&b, Duration::from_secs(60), Bundle::init_pid).await {
            Some(Ok(pid)) => {
                let pid = pid as u32;
                self.started(&ns, &r.container_id, pid);
                Ok(Response::new(api::StartResponse { pid }))
            }
            Some(Err(msg)) => {
                Err(Error::FailedPrecondition(format!("task {}: {msg}", r.container_id)).into())
            }
            None => Err(
                Error::DeadlineExceeded(format!("task {}: not started within 60s", r.container_id)).into(),
            ),
        }
    }

    async fn delete(
        &self,
        req: Request<api::DeleteTaskRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        let ns = ns(&req)?;
        let id = req.into_inner().container_id;
        let p = self.process(&ns, &id)?;
        if p.status == TaskStatus::Running as i32 || p.status == TaskStatus::Paused as i32 {
            return Err(Error::FailedPrecondition(format!("task {id:?} is running: kill it first")).into());
        }
        self.abandon_held(&ns, &id).await;
        self.exited(&ns, &id);
        let _ = std::fs::remove_dir_all(self.bundle_dir(&ns, &id));
        self.release_scope(&ns, &id).await;
        self.events.publish(
            &ns,
            "/tasks/delete",
            "TaskDelete",
            molde_api::containerd::events::TaskDelete {
                container_id: id.clone(),
                pid: p.pid,
                exit_status: p.exit_status,
                exited_at: p.exited_at,
                id: id.clone(),
            },
        );
        Ok(Response::new(api::DeleteResponse {
            id,
            pid: p.pid,
            exit_status: p.exit_status,
            exited_at: p.exited_at,
        }))
    }

    async fn delete_process(
        &self,
        req: Request<api::DeleteProcessRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        check_exec_id(&r.exec_id)?;
        let dir = self.bundle_dir(&ns, &r.container_id).join("exec");
        let code = std::fs::read_to_string(dir.join(format!("{}.exit", r.exec_id)))
            .map_err(|_| Error::FailedPrecondition(format!("exec {:?} has not exited", r.exec_id)))?;
        let _ = std::fs::remove_file(dir.join(format!("{}.exit", r.exec_id)));
        Bundle::new(self.bundle_dir(&ns, &r.container_id)).remove_task_exec(&r.exec_id);
        Ok(Response::new(api::DeleteResponse {
            id: r.exec_id,
            pid: 0,
            exit_status: code.trim().parse().unwrap_or(255),
            exited_at: None,
        }))
    }

    async fn get(&self, req: Request<api::GetRequest>) -> Result<Response<api::GetResponse>, Status> {
        let ns = ns(&req)?;
        let process = self.process(&ns, &req.get_ref().container_id)?;
        Ok(Response::new(api::GetResponse {
            process: Some(process),
        }))
    }

    async fn list(
        &self,
        req: Request<api::ListTasksRequest>,
    ) -> Result<Response<api::ListTasksResponse>, Status> {
        let ns = ns(&req)?;
        Ok(Response::new(api::ListTasksResponse {
            tasks: self.tasks(&ns)?,
        }))
    }

    async fn kill(&self, req: Request<api::KillRequest>) -> Result<Response<()>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let sig = nix::sys::signal::Signal::try_from(r.signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("signal {}", r.signal)))?;
        RuntimeService::kill(self, &ns, &r.container_id, sig)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<api::ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        if r.terminal {
            return Err(unsupported("a terminal for exec (-t)").into());
        }
        let p = self.process(&ns, &r.container_id)?;
        if p.status != TaskStatus::Running as i32 {
            return Err(
                Error::FailedPrecondition(format!("task {:?} is not running", r.container_id)).into(),
            );
        }
        check_exec_id(&r.exec_id)?;
        let spec: oci_spec::runtime::Process = r
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec needs a process spec".into()))
            .and_then(|s| {
                serde_json::from_slice(&s.value)
                    .map_err(|e| Error::InvalidArgument(format!("exec {}: its process spec: {e}", r.exec_id)))
            })?;
        let rec = molde_bundle::TaskExec {
            process: molde_bundle::ExecProcess::from(&spec),
            stdio: molde_bundle::Stdio {
                stdin: r.stdin.clone(),
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                cri_log: String::new(),
            },
        };
        Bundle::new(self.bundle_dir(&ns, &r.container_id))
            .write_task_exec(&r.exec_id, &rec)
            .map_err(|e| Error::Internal(format!("exec {}: {e}", r.exec_id)))?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, _req: Request<api::ResizePtyRequest>) -> Result<Response<()>, Status> {
        Err(unsupported("terminals").into())
    }

    async fn close_io(&self, _req: Request<api::CloseIoRequest>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<api::PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = ns(&req)?;
        RuntimeService::pause(self, &ns, &req.get_ref().container_id, true)?;
        self.events.publish(
            &ns,
            "/tasks/paused",
            "TaskPaused",
            molde_api::containerd::events::TaskPaused {
                container_id: req.get_ref().container_id.clone(),
            },
        );
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<api::ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = ns(&req)?;
        RuntimeService::pause(self, &ns, &req.get_ref().container_id, false)?;
        self.events.publish(
            &ns,
            "/tasks/resumed",
            "TaskResumed",
            molde_api::containerd::events::TaskResumed {
                container_id: req.get_ref().container_id.clone(),
            },
        );
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<api::ListPidsRequest>,
    ) -> Result<Response<api::ListPidsResponse>, Status> {
        let ns = ns(&req)?;
        let id = &req.get_ref().container_id;
        let cg = crate::lifecycle::cgroup_of(&self.bundle_dir(&ns, id)).unwrap_or_default();
        let processes = crate::lifecycle::cgroup_pids(&cg)
            .into_iter()
            .map(|pid| molde_api::containerd::v1::types::ProcessInfo {
                pid: pid as u32,
                info: None,
            })
            .collect();
        Ok(Response::new(api::ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<api::CheckpointTaskRequest>,
    ) -> Result<Response<api::CheckpointTaskResponse>, Status> {
        Err(unsupported("checkpoint").into())
    }

    async fn update(&self, _req: Request<api::UpdateTaskRequest>) -> Result<Response<()>, Status> {
        Err(unsupported("update").into())
    }

    /// Each live task's cgroup counters (containerd's cgroups metrics), for
    /// the tasks the filters select (`id==…`, `status==running`, `pid==…`).
    async fn metrics(
        &self,
        req: Request<api::MetricsRequest>,
    ) -> Result<Response<api::MetricsResponse>, Status> {
        let ns = ns(&req)?;
        let filter = molde_meta::filter::Filter::parse_all(&req.get_ref().filters)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut metrics = Vec::new();
        for p in self.tasks(&ns)? {
            if p.status == TaskStatus::Stopped as i32 || !filter.matches(&TaskFields(&p)) {
                continue;
            }
            let id = p.container_id;
            let Some(cg) = crate::lifecycle::cgroup_of(&self.bundle_dir(&ns, &id)) else {
                continue;
            };
            let now = std::time::SystemTime::now();
            metrics.push(molde_api::containerd::types::Metric {
                timestamp: Some(prost_types::Timestamp::from(now)),
                id,
                data: Some(crate::task_metrics::of(&molde_bundle::cgroup::Cgroup::new(&cg))),
            });
        }
        Ok(Response::new(api::MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<api::WaitRequest>) -> Result<Response<api::WaitResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        if !r.exec_id.is_empty() {
            check_exec_id(&r.exec_id)?;
            let exit = self
                .bundle_dir(&ns, &r.container_id)
                .join("exec")
                .join(format!("{}.exit", r.exec_id));
            loop {
                if let Ok(code) = std::fs::read_to_string(&exit) {
                    return Ok(Response::new(api::WaitResponse {
                        exit_status: code.trim().parse().unwrap_or(255),
                        exited_at: None,
                    }));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let id = r.container_id;
        self.process(&ns, &id)?;
        loop {
            let o = self.observe(&ns, &id);
            if o.state == "exited" {
                self.exited(&ns, &id);
                return Ok(Response::new(api::WaitResponse {
                    exit_status: o.exit_code.max(0) as u32,
                    exited_at: ts(&o.finished_at),
                }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A task's fields as containerd's task filters name them.
struct TaskFields<'a>(&'a Process);

impl molde_meta::filter::Fields for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let p = self.0;
        match path.first()?.as_str() {
            "id" | "container_id" => Some(p.container_id.clone()),
            "pid" => Some(p.pid.to_string()),
            "status" => TaskStatus::try_from(p.status)
                .ok()
                .map(|s| s.as_str_name().to_lowercase()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shim_times_convert() {
        assert_eq!(
            super::parse_rfc3339("1970-01-01T00:00:01.5Z"),
            Some((1, 500_000_000))
        );
        assert_eq!(
            super::parse_rfc3339("2000-03-01T00:00:00Z").map(|t| t.0),
            Some(951_868_800)
        );
    }
}
