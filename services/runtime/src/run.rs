//! molde.services.runtime.v1 Run: image → container record → rootfs snapshot
//! → bundle → `molde-shim` → output streamed from the shim's log until exit.
//!
//! **Architecture invariant:** molded never forks containers itself: each
//! container is created by its own `molde-shim` process, started in its own
//! process group so it outlives molded.
//!
//! Bundle layout, `<state>/runtime/<ns>/<id>/`: `config.json` (the OCI spec),
//! `mounts.json` (the rootfs mounts from the snapshotter), and what the shim
//! writes: `init.pid`, `log.json`, `exit.json`, or `error` if it failed.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use molde_api::containerd::services::containers::v1::Container;
use molde_api::containerd::services::containers::v1::container::Runtime;
use molde_api::containerd::services::snapshots::v1::{
    PrepareSnapshotRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_api::molde::services::runtime::v1::{self as api, run_event::Event};
use molde_bundle::Bundle;
use molde_common::context::namespaced;
use molde_common::{RequestContext, now_nanos, timestamp};
use molde_meta::{Compare, Store, Txn, TxnOutcome};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::{containers, image, spec};

/// The runtime name container records carry.
pub const RUNTIME_NAME: &str = "io.molde.shim.v1";
/// containerd's type URL for a JSON runtime spec in an Any.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

#[derive(Clone)]
pub struct RuntimeService {
    pub(crate) store: Arc<dyn Store>,
    /// Reaches images.v1 and content.v1.
    pub(crate) content: Channel,
    pub(crate) snapshotter: Channel,
    /// `<state>/runtime`
    pub(crate) state: PathBuf,
    pub(crate) shim: PathBuf,
    pub(crate) volumes: PathBuf,
    pub(crate) cni: Arc<crate::network::Cni>,
    pub(crate) events: crate::events::Publisher,
}

type Tx = mpsc::Sender<Result<api::RunEvent, Status>>;

/// Forwards one output stream of an exec'd process as Output events.
async fn pump(mut from: Box<dyn tokio::io::AsyncRead + Send + Unpin>, stream: i32, tx: Tx) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || !send(
                &tx,
                Event::Output(api::Output {
                    stream,
                    data: buf[..n].to_vec(),
                }),
            )
            .await
        {
            return;
        }
    }
}

async fn send(tx: &Tx, e: Event) -> bool {
    tx.send(Ok(api::RunEvent { event: Some(e) })).await.is_ok()
}

impl RuntimeService {
    pub(crate) fn bundle_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.bundle(ns, id)
    }

    fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state.join(ns).join(id)
    }

    /// Everything up to a running shim. On failure, what was made is undone.
    async fn start(&self, ns: &str, req: &api::RunRequest) -> Result<(String, PathBuf), Status> {
        let id = if req.name.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            req.name.clone()
        };
        containers::check_id(&id)?;
        spec::check_limits(req, host_cpus())?;
        spec::check_controllers(req, std::path::Path::new("/sys/fs/cgroup"))?;
        let key = containers::key(ns, &id);
        if self
            .store
            .get(&key)
            .map_err(|e| Status::internal(e.to_string()))?
            .is_some()
        {
            return Err(Status::already_exists(format!(
                "container name {id:?} is already in use"
            )));
        }
        let img = if req.rootfs_parent_set {
            image::Image {
                process: Default::default(),
                top: req.rootfs_parent.clone(),
            }
        } else {
            image::resolve(&self.content, ns, &req.image).await?
        };
        let mounts = SnapshotsClient::new(self.snapshotter.clone())
            .prepare(namespaced(
                ns,
                PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.clone(),
                    parent: img.top.clone(),
                    labels: Default::default(),
                },
            ))
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!("container {id}: preparing its rootfs: {}", s.message()),
                )
            })?
            .into_inner()
            .mounts;
        let undo_snapshot = || async {
            let _ = SnapshotsClient::new(self.snapshotter.clone())
                .remove(namespaced(
                    ns,
                    RemoveSnapshotRequest {
                        snapshotter: "overlayfs".into(),
                        key: id.clone(),
                    },
                ))
                .await;
        };
        // The image's layers, top first, as the snapshotter presents them.
        let layers: Vec<PathBuf> = mounts
            .iter()
            .flat_map(|m| {
                m.options
                    .iter()
                    .filter_map(|o| o.strip_prefix("lowerdir="))
                    .flat_map(|l| l.split(':').map(PathBuf::from).collect::<Vec<_>>())
                    .chain((m.r#type == "bind").then(|| PathBuf::from(&m.source)))
                    .collect::<Vec<_>>()
            })
            .collect();
        let user = if req.user.is_empty() {
            img.process.user.clone()
        } else {
            req.user.clone()
        };
        let spec = match crate::user::resolve(&user, &layers)
            .and_then(|who| spec::build(ns, &id, &img.process, req, &who, &self.volumes))
        {
            Ok(s) => s,
            Err(e) => {
                undo_snapshot().await;
                return Err(Status::new(e.code(), format!("container {id}: {}", e.message())));
            }
        };
        let bundle = self.bundle(ns, &id);
        let mut spec = spec;
        if req.network.is_empty() || req.network == "bridge" {
            let ports = match req
                .ports
                .iter()
                .map(|p| crate::network::parse_port(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p,
                Err(e) => {
                    undo_snapshot().await;
                    return Err(e);
                }
            };
            // Unique per container instance: addresses an earlier container of the
            // same name left allocated (a crash) can never clash with this one.
            let key = format!("{ns}-{id}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            let (netns, mut saved) = match self.cni.setup(&key, &ports).await {
                Ok(x) => x,
                Err(e) => {
                    undo_snapshot().await;
                    return Err(Status::new(
                        e.code(),
                        format!("container {id}: network: {}", e.message()),
                    ));
                }
            };
            saved["key"] = serde_json::json!(key);
            let _ = std::fs::create_dir_all(&bundle);
            let _ = std::fs::write(
                bundle.join("network.json"),
                serde_json::to_vec(&saved).unwrap_or_default(),
            );
            if let Some(nss) = spec
                .linux_mut()
                .as_mut()
                .and_then(|l| l.namespaces_mut().as_mut())
            {
                for n in nss.iter_mut() {
                    if n.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        n.set_path(Some(netns.clone()));
                    }
                }
            }
            tracing::info!(container = %id, address = ?crate::network::address(&saved), "network attached");
        } else if !req.ports.is_empty() {
            undo_snapshot().await;
            return Err(Status::invalid_argument(format!(
                "container {id}: -p needs the bridge network"
            )));
        }
        // /etc/hosts, /etc/hostname and /etc/resolv.conf, written per container.
        let address = std::fs::read(bundle.join("network.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
            .and_then(|v| crate::network::address(&v));
        if let Err(e) = spec::add_etc_files(&mut spec, &bundle, address.as_deref(), req.network == "host") {
            self.remove(ns, &id).await;
            return Err(Status::internal(format!("container {id}: {e}")));
        }
        if req.tty
            && let Some(p) = spec.process_mut()
        {
            p.set_terminal(Some(true));
        }
        if req.interactive {
            let _ = std::fs::create_dir_all(&bundle);
            let _ = Bundle::new(&bundle).set_interactive();
        }
        let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| Status::internal(e.to_string()))?;
        let written = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(bundle.join("rootfs"))?;
            std::fs::write(bundle.join("config.json"), &spec_json)?;
            molde_bundle::mount::write(&bundle, &molde_common::bundle_mounts(&mounts))
        })();
        if let Err(e) = written {
            undo_snapshot().await;
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(Status::internal(format!(
                "container {id}: writing its bundle: {e}"
            )));
        }
        let now = timestamp(now_nanos());
        let record = Container {
            id: id.clone(),
            image: req.image.clone(),
            runtime: Some(Runtime {
                name: RUNTIME_NAME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: spec_json,
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.clone(),
            created_at: Some(now),
            updated_at: Some(now),
            ..Default::default()
        };
        let out = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(key.clone()))
                    .put(key, record.encode_to_vec()),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        if out == TxnOutcome::CompareFailed {
            undo_snapshot().await;
            let _ = std::fs::remove_dir_all(&bundle);
            return Err(Status::already_exists(format!(
                "container name {id:?} is already in use"
            )));
        }
        if let Err(e) = self.spawn_shim(ns, &id, &bundle) {
            self.remove(ns, &id).await;
            return Err(e);
        }
        tracing::info!(namespace = ns, container = %id, image = %req.image, "container started");
        self.events.publish(
            ns,
            "/containers/create",
            "ContainerCreate",
            molde_api::containerd::events::ContainerCreate {
                id: id.clone(),
                image: req.image.clone(),
                runtime: Some(molde_api::containerd::events::container_create::Runtime {
                    name: RUNTIME_NAME.into(),
                }),
            },
        );
        Ok((id, bundle))
    }

    pub(crate) fn spawn_task_shim(&self, ns: &str, id: &str, bundle: &Path) -> Result<(), Status> {
        self.spawn_shim(ns, id, bundle)
    }

    fn spawn_shim(&self, ns: &str, id: &str, bundle: &Path) -> Result<(), Status> {
        use std::os::unix::process::CommandExt;
        let log =
            std::fs::File::create(bundle.join("shim.log")).map_err(|e| Status::internal(e.to_string()))?;
        let mut child = std::process::Command::new(&self.shim)
            .arg("start")
            .args(["--id", &format!("{ns}-{id}")])
            .arg("--bundle")
            .arg(bundle)
            .arg("--state")
            .arg(self.state.join(".libcontainer"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| Status::internal(e.to_string()))?)
            .stderr(log)
            // Its own process group: signals meant for molded do not reach it.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Status::internal(format!("container {id}: starting {}: {e}", self.shim.display()))
            })?;
        // Reap the shim when it ends; it reports through its files.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }

    /// Publishes /tasks/exit for a container whose shim recorded its exit,
    /// once: whoever sees the exit first (a waiter, a delete, the watcher).
    pub(crate) fn exited(&self, ns: &str, id: &str) {
        let b = Bundle::new(self.bundle(ns, id));
        let Some(exit) = b.exit() else {
            return;
        };
        if !b.mark_exit_published() {
            return;
        }
        let pid = b.init_pid().unwrap_or(0) as u32;
        self.events.publish(
            ns,
            "/tasks/exit",
            "TaskExit",
            molde_api::containerd::events::TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: exit.status as u32,
                exited_at: None,
            },
        );
    }

    /// Publishes /tasks/start once the shim reports the container's pid.
    pub(crate) fn started(&self, ns: &str, id: &str, pid: u32) {
        self.events.publish(
            ns,
            "/tasks/start",
            "TaskStart",
            molde_api::containerd::events::TaskStart {
                container_id: id.into(),
                pid,
            },
        );
    }

    /// CNI teardown of a container's network, once.
    pub(crate) async fn release_network(&self, ns: &str, id: &str) {
        let path = self.bundle(ns, id).join("network.json");
        if let Ok(raw) = std::fs::read(&path) {
            let saved: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
            let key = saved["key"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{ns}-{id}"));
            self.cni.teardown(&key, &saved).await;
            let _ = std::fs::rename(&path, path.with_extension("json.released"));
        }
    }

    /// Removes a container's snapshot, record and bundle.
    pub(crate) async fn remove(&self, ns: &str, id: &str) {
        self.release_network(ns, id).await;
        let _ = SnapshotsClient::new(self.snapshotter.clone())
            .remove(namespaced(
                ns,
                RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.into(),
                },
            ))
            .await;
        let _ = self.store.txn(Txn::new().delete(containers::key(ns, id)));
        let _ = std::fs::remove_dir_all(self.bundle(ns, id));
    }

    /// Streams the container's log to `tx` until the shim reports its exit.
    async fn follow(&self, bundle: &Path, tx: &Tx) -> Result<(i32, bool), Status> {
        let b = Bundle::new(bundle);
        let log = b.log();
        let mut offset = 0u64;
        let mut carry = String::new();
        loop {
            let exited = b.exit();
            if let Ok(mut f) = std::fs::File::open(&log) {
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| Status::internal(e.to_string()))?;
                let mut r = BufReader::new(f);
                let mut line = String::new();
                while r
                    .read_line(&mut line)
                    .map_err(|e| Status::internal(e.to_string()))?
                    > 0
                {
                    offset += line.len() as u64;
                    if !line.ends_with('\n') {
                        carry.push_str(&line);
                        line.clear();
                        continue;
                    }
                    let full = std::mem::take(&mut carry) + &line;
                    line.clear();
                    if let Ok(rec) = serde_json::from_str::<molde_bundle::LogRecord>(&full) {
                        let stream = if rec.stream == "stderr" { 2 } else { 1 };
                        let data = rec.log.into_bytes();
                        if !send(tx, Event::Output(api::Output { stream, data })).await {
                            return Ok((0, false));
                        }
                    }
                }
            }
            if let Some(exit) = exited {
                return Ok((exit.status, exit.oom_killed));
            }
            if let Some(msg) = b.error() {
                return Err(Status::failed_precondition(msg));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tonic::async_trait]
impl api::runtime_server::Runtime for RuntimeService {
    type RunStream = ReceiverStream<Result<api::RunEvent, Status>>;

    async fn run(&self, req: Request<api::RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        if r.image.is_empty() && !r.rootfs_parent_set {
            return Err(Status::invalid_argument("run needs an image"));
        }
        let (id, bundle) = self.start(&ns, &r).await?;
        // Report back once the shim started the container, or why it could not.
        let started = tokio::time::Instant::now();
        let b = Bundle::new(&bundle);
        loop {
            if let Some(pid) = b.init_pid() {
                self.started(&ns, &id, pid as u32);
                break;
            }
            if b.exit().is_some() {
                break;
            }
            if let Some(msg) = b.error() {
                if r.rm {
                    self.remove(&ns, &id).await;
                }
                return Err(Status::failed_precondition(format!("container {id}: {msg}")));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(Status::deadline_exceeded(format!(
                    "container {id}: its shim did not start it within 60s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            send(&tx, Event::Started(api::Started { id: id.clone() })).await;
            if r.detach {
                return;
            }
            let result = me.follow(&bundle, &tx).await;
            me.exited(&ns, &id);
            if r.rm {
                me.remove(&ns, &id).await;
            }
            match result {
                Ok((status, oom_killed)) => {
                    tracing::info!(namespace = %ns, container = %id, status, oom_killed, "container exited");
                    send(&tx, Event::Exited(api::Exited { status, oom_killed })).await;
                }
                Err(s) => {
                    let _ = tx
                        .send(Err(Status::new(
                            s.code(),
                            format!("container {id}: {}", s.message()),
                        )))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list(&self, req: Request<api::ListRequest>) -> Result<Response<api::ListResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let containers = self.list(&ns, req.get_ref().all)?;
        Ok(Response::new(api::ListResponse { containers }))
    }

    type LogsStream = ReceiverStream<Result<api::LogRecord, Status>>;

    async fn logs(&self, req: Request<api::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
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

    async fn kill(&self, req: Request<api::KillRequest>) -> Result<Response<api::KillResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        let sig = crate::lifecycle::parse_signal(&r.signal)?;
        RuntimeService::kill(self, &ns, &r.id, sig)?;
        Ok(Response::new(api::KillResponse {}))
    }

    async fn stop(&self, req: Request<api::StopRequest>) -> Result<Response<api::StopResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        let o = RuntimeService::stop(self, &ns, &r.id, Duration::from_secs(r.timeout as u64)).await?;
        Ok(Response::new(api::StopResponse {
            exit_code: o.exit_code,
        }))
    }

    async fn wait(&self, req: Request<api::WaitRequest>) -> Result<Response<api::Exited>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let o = RuntimeService::wait(self, &ns, &req.get_ref().id, None)
            .await?
            .unwrap_or_default();
        Ok(Response::new(api::Exited {
            status: o.exit_code,
            oom_killed: o.oom_killed,
        }))
    }

    async fn inspect(
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
        let network: serde_json::Value = std::fs::read(bundle.join("network.json"))
            .ok()
            .and_then(|r| serde_json::from_slice(&r).ok())
            .unwrap_or_default();
        let v = serde_json::json!({
            "Id": c.id,
            "Image": c.image,
            "Created": st.created_unix,
            "State": {
                "Status": st.state,
                "Running": st.state == "running",
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
            },
            "HostConfig": {"Resources": spec["linux"]["resources"], "ReadonlyRootfs": spec["root"]["readonly"]},
            "Mounts": spec["mounts"].as_array().map(|m| m.iter().filter(|x| x["type"] == "bind" && !x["destination"].as_str().unwrap_or("").starts_with("/etc/")).cloned().collect::<Vec<_>>()),
            "NetworkSettings": {
                "IPAddress": crate::network::address(&network),
                "Ports": network["ports"],
            },
            "SnapshotKey": c.snapshot_key,
            "BundlePath": bundle,
        });
        Ok(Response::new(api::InspectResponse {
            json: serde_json::to_string_pretty(&v).unwrap_or_default(),
        }))
    }

    async fn top(&self, req: Request<api::TopRequest>) -> Result<Response<api::TopResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = &req.get_ref().id;
        self.record(&ns, id)?;
        if self.observe(&ns, id).state != "running" {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        let mut processes = Vec::new();
        for pid in crate::lifecycle::cgroup_pids(&crate::spec::cgroup_path(&ns, id)) {
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

    async fn stats(&self, req: Request<api::StatsRequest>) -> Result<Response<api::StatsResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = &req.get_ref().id;
        self.record(&ns, id)?;
        if self.observe(&ns, id).state != "running" {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        let (memory_bytes, memory_limit_bytes, cpu_usage_ns, pids) =
            crate::lifecycle::cgroup_stats(&crate::spec::cgroup_path(&ns, id));
        Ok(Response::new(api::StatsResponse {
            memory_bytes,
            memory_limit_bytes,
            cpu_usage_ns,
            pids,
        }))
    }

    type AttachStream = ReceiverStream<Result<api::AttachOutput, Status>>;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<api::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("attach needs a first message naming the container"))?;
        let id = first.id.clone();
        self.record(&ns, &id)?;
        if self.observe(&ns, &id).state != "running" {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        let sock = if first.exec_id.is_empty() {
            Bundle::new(self.bundle_dir(&ns, &id)).attach_socket()
        } else if first.exec_id.len() == 32 && first.exec_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Bundle::new(self.bundle_dir(&ns, &id)).exec_socket(&first.exec_id)
        } else {
            return Err(Status::invalid_argument(format!(
                "exec id {:?} is not one this daemon gave out",
                first.exec_id
            )));
        };
        let conn = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
            Status::unavailable(format!(
                "container {id}: its shim does not answer on {}: {e}",
                sock.display()
            ))
        })?;
        let (mut rd, mut wr) = conn.into_split();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .send(Ok(api::AttachOutput {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut msg = Some(first);
            while let Some(m) = msg.take() {
                let mut frame = Vec::new();
                if m.rows > 0 && m.cols > 0 {
                    frame.push(1u8);
                    frame.extend_from_slice(&(m.rows as u16).to_be_bytes());
                    frame.extend_from_slice(&(m.cols as u16).to_be_bytes());
                }
                if !m.data.is_empty() {
                    frame.push(0u8);
                    frame.extend_from_slice(&(m.data.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&m.data);
                }
                if m.close_stdin {
                    frame.push(2u8);
                }
                if !frame.is_empty() && wr.write_all(&frame).await.is_err() {
                    break;
                }
                msg = inbound.message().await.ok().flatten();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type ExecStream = ReceiverStream<Result<api::RunEvent, Status>>;

    async fn exec(&self, req: Request<api::ExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        if r.args.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        let c = self.record(&ns, &r.id)?;
        if self.observe(&ns, &r.id).state != "running" {
            return Err(Status::failed_precondition(format!(
                "container {:?} is not running",
                r.id
            )));
        }
        // The container's own process, as stored in its spec.
        let base: oci_spec::runtime::Process = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<oci_spec::runtime::Spec>(&s.value).ok())
            .and_then(|s| s.process().clone())
            .unwrap_or_default();
        let bundle = self.bundle_dir(&ns, &r.id);
        let b = Bundle::new(&bundle);
        let mut process = molde_bundle::ExecProcess::from(&base);
        process.args = r.args.clone();
        process.env = spec::merge_env(&process.env, &r.env);
        // The image's user without the container's extra groups, or the one asked for.
        process.additional_gids = Vec::new();
        if !r.user.is_empty() {
            let who = crate::user::resolve(&r.user, &[b.rootfs()])
                .map_err(|e| Status::new(e.code(), format!("container {}: {}", r.id, e.message())))?;
            process.uid = Some(who.uid);
            process.gid = Some(who.gid);
            process.additional_gids = who.additional_gids;
        }
        if !r.workdir.is_empty() {
            process.cwd = Some(r.workdir.clone());
        }
        let exec_id = uuid::Uuid::new_v4().simple().to_string();
        let pfile = b
            .write_exec(&exec_id, &process)
            .map_err(|e| Status::internal(format!("container {}: writing the exec: {e}", r.id)))?;
        let sock = b.exec_socket(&exec_id);
        let attached = r.interactive || r.tty;
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.arg("exec")
            .args(["--id", &format!("{ns}-{}", r.id)])
            .arg("--bundle")
            .arg(&bundle)
            .arg("--state")
            .arg(self.state.join(".libcontainer"))
            .arg("--process")
            .arg(&pfile);
        if attached {
            cmd.arg("--attach").arg(&sock);
        }
        if r.tty {
            cmd.arg("--tty");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Status::internal(format!("starting {}: {e}", self.shim.display())))?;
        let (tx, rx) = mpsc::channel(64);
        if attached {
            // The client attaches (Attach with this exec id) once the shim listens.
            let mut waited = 0;
            while !sock.exists() && waited < 1000 && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            if sock.exists() {
                send(&tx, Event::Started(api::Started { id: exec_id.clone() })).await;
            }
        }
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let a = tokio::spawn(pump(Box::new(out), 1, tx.clone()));
        let b = tokio::spawn(pump(Box::new(err), 2, tx.clone()));
        tokio::spawn(async move {
            let status = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(255);
            let _ = a.await;
            let _ = b.await;
            let _ = std::fs::remove_file(&pfile);
            let _ = std::fs::remove_file(pfile.with_extension("process.json"));
            let _ = std::fs::remove_file(&sock);
            send(
                &tx,
                Event::Exited(api::Exited {
                    status,
                    oom_killed: false,
                }),
            )
            .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn remove(
        &self,
        req: Request<api::RemoveRequest>,
    ) -> Result<Response<api::RemoveResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        self.remove_container(&ns, &r.id, r.force).await?;
        Ok(Response::new(api::RemoveResponse {}))
    }
}

/// Publishes /tasks/exit for every container whose shim recorded an exit since
/// the last look (a marker file keeps it to once per exit, across restarts).
pub(crate) async fn watch_exits(rt: RuntimeService) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(namespaces) = std::fs::read_dir(&rt.state) else {
            continue;
        };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            if ns_name.starts_with('.') {
                continue;
            }
            let Ok(bundles) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for b in bundles.flatten() {
                let dir = Bundle::new(b.path());
                if dir.exit().is_none() || dir.exit_published() {
                    continue;
                }
                let id = b.file_name().to_string_lossy().into_owned();
                rt.exited(&ns_name, &id);
                // A container that ended on its own gives back its network too.
                rt.release_network(&ns_name, &id).await;
            }
        }
    }
}

/// CPUs online on this host.
fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
