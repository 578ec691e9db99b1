//! molde.services.runtime.v1 Run: image → container record → rootfs snapshot
//! → bundle → `molde-shim` → output streamed from the shim's log until exit.
//!
//! **Architecture invariant:** molded never forks containers itself: each
//! container is created by its own `molde-shim` process, started in its own
//! process group so it outlives molded.
//!
//! Bundle layout, `<state>/runtime/<ns>/<id>/`: `config.json` (the OCI spec),
//! `mounts.json` (the rootfs mounts from the snapshotter), and what the shim
//! writes: `init.pid`, `log.json`, `exit.json`, or `error` if it failed (all
//! typed in `molde-bundle`).
//!
//! This file is the service and its RPC table; each RPC with a body of some
//! size has a file under `run/`: `start` (a container up to a running shim,
//! and following its log), `run_rpc`, `exec`, `attach`, `inspect` (logs,
//! inspect, top, stats).

mod attach;
mod copy_in;
mod exec;
mod export;
mod health;
mod inspect;
mod network_rpc;
mod policy;
mod run_rpc;
mod start;
mod volume;

pub(crate) use health::{Watching, from_image as image_health};
pub(crate) use start::{NAME_LABEL, RUN_REQUEST, run_request, set_run_request};

use molde_common::errdefs::Error;
use molde_common::errdefs::OrLog;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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
use molde_meta::{Compare, Txn, TxnOutcome};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::service::{RUNTIME_NAME, RuntimeService};
use crate::{containers, image, spec};

/// containerd's type URL for a JSON runtime spec in an Any.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

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
    /// A shim for a containerd task: with `hold`, it creates the container
    /// and waits for the task's start (see `Bundle::order_held`).
    pub(crate) fn spawn_task_shim(&self, ns: &str, id: &str, bundle: &Path, hold: bool) -> Result<(), Error> {
        self.spawn_shim(ns, id, bundle, hold)
    }

    /// Ends the hold of a created, never started container: its shim kills
    /// the init and records the exit. Waits (bounded) for that record.
    pub(crate) async fn abandon_held(&self, ns: &str, id: &str) {
        let b = Bundle::new(self.bundle_dir(ns, id));
        if b.created_pid().is_none() || b.init_pid().is_some() || b.exit().is_some() {
            return;
        }
        match b.order_held(molde_bundle::HOLD_ABANDON) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(
                    namespace = ns,
                    container = id,
                    "giving up a created container: {e}"
                );
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.exit().is_none() && b.shim_alive() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Publishes /tasks/exit for a container whose shim recorded its exit,
    /// once: whoever sees the exit first (a waiter, a delete, the watcher).
    pub(crate) fn exited(&self, ns: &str, id: &str) {
        let b = Bundle::new(self.bundle_dir(ns, id));
        let Some(exit) = b.exit() else {
            return;
        };
        if !b.mark_exit_published() {
            return;
        }
        self.consider_restart(ns, id, exit.status, false);
        if exit.oom_killed {
            self.events.publish(
                ns,
                "/tasks/oom",
                "TaskOOM",
                molde_api::containerd::events::TaskOom {
                    container_id: id.to_string(),
                },
            );
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

    fn publish_volume(&self, ns: &str, topic: &str, name: &str) {
        self.events.publish_as(
            ns,
            topic,
            "molde.services.runtime.v1.VolumeEvent",
            api::VolumeEvent { name: name.into() },
        );
    }

    fn publish_network(&self, ns: &str, topic: &str, name: &str, id: &str) {
        self.events.publish_as(
            ns,
            topic,
            "molde.services.runtime.v1.NetworkEvent",
            api::NetworkEvent {
                name: name.into(),
                id: id.into(),
            },
        );
    }

    /// The mounts of a container's rootfs snapshot, as the snapshotter gives them.
    pub(crate) async fn snapshot_mounts(
        &self,
        ns: &str,
        id: &str,
    ) -> Result<Vec<molde_api::containerd::types::Mount>, Error> {
        Ok(SnapshotsClient::new(self.snapshotter.clone())
            .mounts(namespaced(
                ns,
                molde_api::containerd::services::snapshots::v1::MountsRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.to_string(),
                },
            ))
            .await
            .map_err(Error::upstream(format!("container {id}: its rootfs")))?
            .into_inner()
            .mounts)
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

    /// The host ports of the containers a restarted molded finds, taken
    /// again (a port taken meanwhile is logged: its DNAT rules still point
    /// at the container).
    pub(crate) fn hold_published_ports(&self) {
        let Ok(namespaces) = std::fs::read_dir(&self.state) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(containers) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for c in containers.flatten() {
                let Ok(Some(saved)) = molde_bundle::Bundle::new(c.path()).network_record() else {
                    continue;
                };
                let ports = saved.ports;
                if ports.is_empty() {
                    continue;
                }
                let owner = format!(
                    "{}/{}",
                    ns.file_name().to_string_lossy(),
                    c.file_name().to_string_lossy()
                );
                if let Err(e) = self.ports.reserve(&owner, &ports) {
                    tracing::warn!(container = %owner, error = %e, "a published port could not be held again");
                }
            }
        }
    }

    /// CNI teardown of a container's network, once.
    pub(crate) async fn release_network(&self, ns: &str, id: &str) {
        self.ports.release(&format!("{ns}/{id}"));
        let bundle = molde_bundle::Bundle::new(self.bundle_dir(ns, id));
        match bundle.network_record() {
            Ok(Some(mut saved)) => {
                if saved.key.is_empty() {
                    saved.key = format!("{ns}-{id}");
                }
                self.cni.teardown(&saved).await;
                bundle
                    .release_network_record()
                    .or_log("releasing a container's network record");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "a network record could not be read"),
        }
    }

    /// Removes a container's snapshot, record and bundle.
    pub(crate) async fn remove(&self, ns: &str, id: &str) {
        self.release_network(ns, id).await;
        SnapshotsClient::new(self.snapshotter.clone())
            .remove(namespaced(
                ns,
                RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: id.into(),
                },
            ))
            .await
            .or_log("removing a container's snapshot");
        self.store
            .txn(Txn::new().delete(containers::key(ns, id)))
            .or_log("removing a container's record");
        let _ = std::fs::remove_dir_all(self.bundle_dir(ns, id));
        self.events.publish(
            ns,
            "/containers/delete",
            "ContainerDelete",
            molde_api::containerd::events::ContainerDelete { id: id.to_string() },
        );
    }
}

/// Requests that name a container: their reference (a name, an id or an
/// id's unique beginning) is resolved to the id before the work starts.
trait NamesContainer {
    fn reference(&mut self) -> &mut String;
}

macro_rules! names_container {
    ($($t:ty),*) => {
        $(impl NamesContainer for $t {
            fn reference(&mut self) -> &mut String {
                &mut self.id
            }
        })*
    };
}

names_container!(
    api::LogsRequest,
    api::KillRequest,
    api::StopRequest,
    api::WaitRequest,
    api::InspectRequest,
    api::TopRequest,
    api::StatsRequest,
    api::ReopenLogRequest,
    api::UpdateRequest,
    api::ExecRequest,
    api::StartRequest,
    api::PauseRequest,
    api::RenameRequest,
    api::ExportRequest,
    api::ChangesRequest
);

impl RuntimeService {
    fn resolved<T: NamesContainer>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = self.resolve(&ns, req.get_mut().reference())?;
        *req.get_mut().reference() = id;
        Ok(req)
    }
}

#[tonic::async_trait]
impl api::runtime_server::Runtime for RuntimeService {
    type RunStream = ReceiverStream<Result<api::RunEvent, Status>>;

    async fn run(&self, req: Request<api::RunRequest>) -> Result<Response<Self::RunStream>, Status> {
        self.run_rpc(req).await
    }

    async fn list(&self, req: Request<api::ListRequest>) -> Result<Response<api::ListResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        let containers = match r.ids.is_empty() {
            true => self.list(&ns, r.all)?,
            false => self.list_only(&ns, r.all, &r.ids)?,
        };
        Ok(Response::new(api::ListResponse { containers }))
    }

    type LogsStream = ReceiverStream<Result<api::LogRecord, Status>>;

    async fn logs(&self, req: Request<api::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = self.resolved(req)?;
        self.logs_rpc(req).await
    }

    async fn kill(&self, req: Request<api::KillRequest>) -> Result<Response<api::KillResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        let sig = crate::lifecycle::parse_signal(&r.signal)?;
        self.set_stopped_by_user(&ns, &r.id, true)?;
        RuntimeService::kill(self, &ns, &r.id, sig)?;
        Ok(Response::new(api::KillResponse {}))
    }

    async fn stop(&self, req: Request<api::StopRequest>) -> Result<Response<api::StopResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        // The container's own stop signal and timeout (run --stop-signal,
        // the image's StopSignal; run --stop-timeout) unless the caller says.
        let kept = run_request(&self.record(&ns, &r.id)?);
        let signal = match (r.signal.as_str(), kept.stop_signal.as_str()) {
            ("", "") => nix::sys::signal::Signal::SIGTERM,
            ("", own) => crate::lifecycle::parse_signal(own)?,
            (asked, _) => crate::lifecycle::parse_signal(asked)?,
        };
        let timeout = match (r.container_timeout, kept.stop_timeout) {
            (true, t) if t > 0 => t as u64,
            (true, _) => 10,
            (false, _) => r.timeout as u64,
        };
        self.set_stopped_by_user(&ns, &r.id, true)?;
        let o = RuntimeService::stop_with(self, &ns, &r.id, Duration::from_secs(timeout), signal).await?;
        Ok(Response::new(api::StopResponse {
            exit_code: o.exit_code,
        }))
    }

    async fn wait(&self, req: Request<api::WaitRequest>) -> Result<Response<api::Exited>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let o = RuntimeService::wait(self, &ns, &req.get_ref().id, None)
            .await?
            .unwrap_or_default();
        Ok(Response::new(api::Exited {
            status: o.exit_code,
            oom_killed: o.oom_killed,
            timed_out: false,
        }))
    }

    async fn inspect(
        &self,
        req: Request<api::InspectRequest>,
    ) -> Result<Response<api::InspectResponse>, Status> {
        let req = self.resolved(req)?;
        self.inspect_rpc(req).await
    }

    async fn top(&self, req: Request<api::TopRequest>) -> Result<Response<api::TopResponse>, Status> {
        let req = self.resolved(req)?;
        self.top_rpc(req).await
    }

    async fn stats(&self, req: Request<api::StatsRequest>) -> Result<Response<api::StatsResponse>, Status> {
        let req = self.resolved(req)?;
        self.stats_rpc(req).await
    }

    type AttachStream = ReceiverStream<Result<api::AttachOutput, Status>>;

    async fn attach(
        &self,
        req: Request<tonic::Streaming<api::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.attach_rpc(req).await
    }

    async fn reopen_log(
        &self,
        req: Request<api::ReopenLogRequest>,
    ) -> Result<Response<api::ReopenLogResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        self.reopen_log(&ns, &req.get_ref().id).await?;
        Ok(Response::new(api::ReopenLogResponse {}))
    }

    async fn update(
        &self,
        req: Request<api::UpdateRequest>,
    ) -> Result<Response<api::UpdateResponse>, Status> {
        let req = self.resolved(req)?;
        self.update_rpc(req).await
    }

    async fn start(&self, req: Request<api::StartRequest>) -> Result<Response<api::StartResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        let id = r.id;
        // The user's start: the restart policy applies again, counting anew.
        self.set_stopped_by_user(&ns, &id, false)?;
        let b = Bundle::new(self.bundle_dir(&ns, &id));
        if b.restart_count() > 0 {
            b.set_restart_count(0)
                .map_err(Error::io(format!("container {id}: resetting its restart count")))?;
        }
        let held = b.created_pid().is_some() && b.init_pid().is_none() && b.shim_alive();
        if held {
            if r.attachable {
                return Ok(Response::new(api::StartResponse { id }));
            }
            if !b
                .order_held(molde_bundle::HOLD_START)
                .map_err(Error::io(format!("container {id}: ordering its start")))?
            {
                return Err(
                    Error::FailedPrecondition(format!("container {id:?}: its shim went away")).into(),
                );
            }
            self.await_started(&ns, &id).await.map_err(start_failed)?;
            return Ok(Response::new(api::StartResponse { id }));
        }
        match self.observe(&ns, &id).state {
            // docker: starting a running container is not an error.
            "running" => return Ok(Response::new(api::StartResponse { id })),
            "paused" => {
                return Err(Error::FailedPrecondition(format!(
                    "container {id:?} is paused: unpause it instead"
                ))
                .into());
            }
            _ => {}
        }
        self.launch(&ns, &id, r.attachable).await.map_err(start_failed)?;
        if !r.attachable {
            self.await_started(&ns, &id).await.map_err(start_failed)?;
        }
        Ok(Response::new(api::StartResponse { id }))
    }

    async fn pause(&self, req: Request<api::PauseRequest>) -> Result<Response<api::PauseResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        RuntimeService::pause(self, &ns, &req.get_ref().id, true)?;
        Ok(Response::new(api::PauseResponse {}))
    }

    async fn unpause(&self, req: Request<api::PauseRequest>) -> Result<Response<api::PauseResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        RuntimeService::pause(self, &ns, &req.get_ref().id, false)?;
        Ok(Response::new(api::PauseResponse {}))
    }

    async fn rename(
        &self,
        req: Request<api::RenameRequest>,
    ) -> Result<Response<api::RenameResponse>, Status> {
        let req = self.resolved(req)?;
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        RuntimeService::rename(self, &ns, &r.id, &r.name)?;
        Ok(Response::new(api::RenameResponse {}))
    }

    async fn create_volume(
        &self,
        req: Request<api::CreateVolumeRequest>,
    ) -> Result<Response<api::Volume>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let v = RuntimeService::create_volume(self, req.into_inner())?;
        self.publish_volume(&ns, "/volumes/create", &v.name);
        Ok(Response::new(v))
    }

    async fn inspect_volume(
        &self,
        req: Request<api::InspectVolumeRequest>,
    ) -> Result<Response<api::Volume>, Status> {
        Ok(Response::new(RuntimeService::inspect_volume(
            self,
            &req.get_ref().name,
        )?))
    }

    async fn list_volumes(
        &self,
        req: Request<api::ListVolumesRequest>,
    ) -> Result<Response<api::ListVolumesResponse>, Status> {
        let volumes = RuntimeService::list_volumes(self, req.into_inner())?;
        Ok(Response::new(api::ListVolumesResponse { volumes }))
    }

    async fn remove_volume(
        &self,
        req: Request<api::RemoveVolumeRequest>,
    ) -> Result<Response<api::RemoveVolumeResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        RuntimeService::remove_volume(self, &r.name, r.force)?;
        self.publish_volume(&ns, "/volumes/delete", &r.name);
        Ok(Response::new(api::RemoveVolumeResponse {}))
    }

    async fn prune_volumes(
        &self,
        req: Request<api::PruneVolumesRequest>,
    ) -> Result<Response<api::PruneVolumesResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = RuntimeService::prune_volumes(self, req.get_ref().all)?;
        for v in &r.removed {
            self.publish_volume(&ns, "/volumes/delete", v);
        }
        Ok(Response::new(r))
    }

    async fn create_network(
        &self,
        req: Request<api::CreateNetworkRequest>,
    ) -> Result<Response<api::Network>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let n = RuntimeService::create_network(self, req.into_inner())?;
        self.publish_network(&ns, "/networks/create", &n.name, &n.id);
        Ok(Response::new(n))
    }

    async fn inspect_network(
        &self,
        req: Request<api::InspectNetworkRequest>,
    ) -> Result<Response<api::Network>, Status> {
        Ok(Response::new(RuntimeService::inspect_network(
            self,
            &req.get_ref().name,
        )?))
    }

    async fn list_networks(
        &self,
        _req: Request<api::ListNetworksRequest>,
    ) -> Result<Response<api::ListNetworksResponse>, Status> {
        let networks = RuntimeService::list_networks(self)?;
        Ok(Response::new(api::ListNetworksResponse { networks }))
    }

    async fn connect_network(
        &self,
        req: Request<api::ConnectNetworkRequest>,
    ) -> Result<Response<api::ConnectNetworkResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        self.connect(&ns, req.into_inner()).await?;
        Ok(Response::new(api::ConnectNetworkResponse {}))
    }

    async fn disconnect_network(
        &self,
        req: Request<api::DisconnectNetworkRequest>,
    ) -> Result<Response<api::DisconnectNetworkResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        self.disconnect(&ns, req.into_inner()).await?;
        Ok(Response::new(api::DisconnectNetworkResponse {}))
    }

    async fn remove_network(
        &self,
        req: Request<api::RemoveNetworkRequest>,
    ) -> Result<Response<api::RemoveNetworkResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        RuntimeService::remove_network(self, &req.get_ref().name)?;
        self.publish_network(&ns, "/networks/delete", &req.get_ref().name, "");
        Ok(Response::new(api::RemoveNetworkResponse {}))
    }

    async fn prune_networks(
        &self,
        req: Request<api::PruneNetworksRequest>,
    ) -> Result<Response<api::PruneNetworksResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let removed = RuntimeService::prune_networks(self)?;
        for n in &removed {
            self.publish_network(&ns, "/networks/delete", n, "");
        }
        Ok(Response::new(api::PruneNetworksResponse { removed }))
    }

    type ExportStream = ReceiverStream<Result<api::Chunk, Status>>;

    async fn export(&self, req: Request<api::ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let req = self.resolved(req)?;
        self.export_rpc(req).await
    }

    async fn changes(
        &self,
        req: Request<api::ChangesRequest>,
    ) -> Result<Response<api::ChangesResponse>, Status> {
        let req = self.resolved(req)?;
        self.changes_rpc(req).await
    }

    async fn copy_in(
        &self,
        req: Request<tonic::Streaming<api::CopyInRequest>>,
    ) -> Result<Response<api::CopyInResponse>, Status> {
        self.copy_in_rpc(req).await
    }

    type ExecStream = ReceiverStream<Result<api::RunEvent, Status>>;

    async fn exec(&self, req: Request<api::ExecRequest>) -> Result<Response<Self::ExecStream>, Status> {
        let req = self.resolved(req)?;
        self.exec_rpc(req).await
    }

    async fn remove(
        &self,
        req: Request<api::RemoveRequest>,
    ) -> Result<Response<api::RemoveResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.get_ref();
        // A reference nothing matches goes on as given: removal says itself
        // what is gone.
        let id = match self.resolve(&ns, &r.id) {
            Err(e) if e.is_not_found() => r.id.clone(),
            other => other?,
        };
        let record = self.record(&ns, &id).ok();
        self.remove_container(&ns, &id, r.force).await?;
        if r.volumes
            && let Some(c) = record
        {
            self.remove_anonymous_volumes(&c);
        }
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

/// A failed start as a status, with the exit status `molde run` gives it
/// in the EXIT_CODE_HEADER trailer.
pub(crate) fn start_failed(e: Error) -> Status {
    let code = crate::lifecycle::start_failure_status(&e.to_string());
    let mut status: Status = e.into();
    status
        .metadata_mut()
        .insert(molde_api::EXIT_CODE_HEADER, code.into());
    status
}

/// CPUs online on this host.
fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
