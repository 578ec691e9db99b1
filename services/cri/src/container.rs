//! A pod's containers, through the runtime's APIs: the spec (`spec.rs`) and
//! rootfs snapshot go into containers.v1 and snapshots.v1, tasks.v1 creates
//! and starts it in a shim that writes its output to the kubelet's log file
//! (a `cri-log://` stdout), and molde's runtime.v1 reports its state, stops
//! it (the image's stop signal, then SIGKILL), reopens its log and removes it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use molde_api::containerd::services::containers::v1::{
    Container as ContainerRecordV1, CreateContainerRequest, DeleteContainerRequest, container::Runtime,
    containers_client::ContainersClient,
};
use molde_api::containerd::services::snapshots::v1::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
    snapshots_client::SnapshotsClient,
};
use molde_api::containerd::services::tasks::v1::{
    CreateTaskRequest, StartRequest, tasks_client::TasksClient,
};
use molde_api::molde::services::runtime::v1 as rt;
use molde_api::molde::services::runtime::v1::runtime_client::RuntimeClient;
use molde_common::errdefs::{Error, OrLog};

use crate::store::{self, CONTAINERS, ContainerRecord};
use crate::{Cri, names, request};

/// The runtime name molde's runtime runs (and lists) containers under.
const RUNTIME_NAME: &str = "io.molde.shim.v1";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A container's state as the runtime sees it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub state: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub finished_at: i64,
    /// When the runtime started the container (its shim's record); 0 before.
    pub started_at: i64,
    pub pid: i32,
    pub error: String,
}

fn rfc3339_nanos(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

impl Cri {
    fn runtime(&self) -> RuntimeClient<tonic::transport::Channel> {
        RuntimeClient::new(self.channels.runtime.clone())
    }

    pub fn containers(&self) -> Result<Vec<ContainerRecord>, Error> {
        store::list(&*self.store, CONTAINERS)
    }

    pub fn containers_of(&self, sandbox: &str) -> Result<Vec<ContainerRecord>, Error> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| c.sandbox_id == sandbox)
            .collect())
    }

    /// The container `id` names (a unique prefix will do).
    pub fn container(&self, id: &str) -> Result<ContainerRecord, Error> {
        let all = self.containers()?;
        let id = names::resolve(all.iter().map(|c| c.id.as_str()), id, "container")?;
        Ok(all.into_iter().find(|c| c.id == id).expect("resolved"))
    }

    /// The runtime's view of every container in the namespace, by id.
    pub async fn observe_all(&self) -> Result<HashMap<String, Observed>, Error> {
        let list = self
            .runtime()
            .list(request(rt::ListRequest {
                all: true,
                ids: Vec::new(),
            }))
            .await
            .map_err(Error::upstream("listing containers"))?
            .into_inner()
            .containers;
        Ok(list.into_iter().map(|c| (c.id.clone(), observed(&c))).collect())
    }

    pub async fn observe(&self, id: &str) -> Result<Observed, Error> {
        let list = self
            .runtime()
            .list(request(rt::ListRequest {
                all: true,
                ids: vec![id.to_string()],
            }))
            .await
            .map_err(Error::upstream(format!("the state of container {id}")))?
            .into_inner()
            .containers;
        Ok(list
            .iter()
            .find(|c| c.id == id)
            .map(observed)
            .unwrap_or(Observed {
                state: cri::ContainerState::ContainerUnknown as i32,
                ..Default::default()
            }))
    }

    pub async fn create_container(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String, Error> {
        // Held until the container's record is written: a RemovePodSandbox
        // that comes meanwhile waits, then removes this container too.
        let _pod = self.lock_pod(sandbox_id).await;
        // The task made at the end places a process in a cgroup, which
        // waits for a grace period: begin it now, while the container is made.
        molde_bundle::cgroup::prime_migration();
        let sandbox = self.sandbox(sandbox_id)?;
        if !sandbox.ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let meta = names::check_container_metadata(config.metadata.as_ref())?.clone();
        crate::limits::check_metadata(
            &format!("container {:?}", meta.name),
            &config.labels,
            &config.annotations,
        )?;
        let pod_meta = sandbox.config.metadata.clone().unwrap_or_default();
        let image_spec = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let image = crate::image::find(self, &image_spec)
            .await?
            .ok_or_else(|| Error::NotFound(format!("image {image_spec:?}")))?;
        let id = crate::new_id();
        let name = names::container_name(&meta, &pod_meta);
        let log_path = match (sandbox.config.log_directory.as_str(), config.log_path.as_str()) {
            (_, "") => String::new(),
            (dir, p) if !dir.is_empty() => std::path::Path::new(dir).join(p).display().to_string(),
            (_, p) => p.to_string(),
        };
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            config: config.clone(),
            created_at: crate::now_nanos(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            log_path,
            started_at: 0,
            stop_signal: image.process.stop_signal().clone().unwrap_or_default(),
            user: None,
        };
        let mut rec = rec;
        let rootfs = match self.make(&rec, &sandbox, &image, &image_spec).await {
            Ok((user, rootfs)) => {
                rec.user = Some(user);
                rootfs
            }
            Err(e) => {
                self.undo_create(&rec, &sandbox, &name).await;
                return Err(e);
            }
        };
        // The task is begun first: the rest of this call overlaps it. The
        // name is taken after (two creates of one name both make their
        // container; the one that finds the name taken removes its own).
        self.make_task_early(rec.clone(), rootfs);
        let recorded = match store::reserve(&*self.store, "container", &name, &id) {
            Ok(None) => store::put(&*self.store, CONTAINERS, &id, &rec),
            Ok(Some(holder)) => Err(Error::AlreadyExists(format!(
                "container name {name:?} is reserved for {holder}"
            ))),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            self.undo_create(&rec, &sandbox, &name).await;
            return Err(e);
        }
        self.event(&rec.id, cri::ContainerEventType::ContainerCreatedEvent)
            .await;
        tracing::info!(container = %name, id = %id, pod = %sandbox.id, "CRI container created");
        Ok(id)
    }

    /// Removes what a failed CreateContainer made: its task (once made, if it
    /// was begun), runtime record, rootfs, idmapped volumes and name.
    async fn undo_create(&self, rec: &ContainerRecord, sandbox: &store::SandboxRecord, name: &str) {
        self.early.settle(&rec.id).await;
        self.unmake(&rec.id, &rec.config).await;
        crate::userns::release_volumes(std::path::Path::new(&sandbox.dir), &rec.id);
        store::release(&*self.store, "container", name, &rec.id).or_log("releasing a container's name");
    }

    /// Makes the container's task in the background (see `early`), on
    /// the rootfs the snapshotter prepared.
    fn make_task_early(
        self: &Arc<Self>,
        rec: ContainerRecord,
        rootfs: Vec<molde_api::containerd::types::Mount>,
    ) {
        let maker = self.early.begin(&rec.id);
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = me.create_task(&rec, Some(rootfs)).await.map_err(|e| {
                tracing::debug!(id = %rec.id, "making the task early: {e}");
                e.to_string()
            });
            maker.done(outcome);
        });
    }

    async fn make(
        &self,
        rec: &ContainerRecord,
        sandbox: &store::SandboxRecord,
        image: &crate::image::ImageInfo,
        image_name: &str,
    ) -> Result<((u32, u32, Vec<u32>), Vec<molde_api::containerd::types::Mount>), Error> {
        let sc = rec
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let (uid, gid, groups) = self.user(&sc, image).await?;
        let image_volumes = self.image_volumes(&rec.id, &rec.config).await?;
        let idmapped_volumes = crate::userns::idmap_volumes(sandbox, &rec.id, &rec.config.mounts)?;
        let spec = crate::spec::build(&crate::spec::Inputs {
            id: &rec.id,
            config: &rec.config,
            sandbox,
            image,
            image_name,
            uid,
            gid,
            groups,
            cgroup_driver: &self.config.cgroup_driver,
            image_volumes: &image_volumes,
            idmapped_volumes: &idmapped_volumes,
        })?;
        let effective = spec
            .process()
            .as_ref()
            .map(|p| {
                let u = p.user();
                let groups: Vec<u32> = u.additional_gids().clone().unwrap_or_default();
                (u.uid(), u.gid(), groups)
            })
            .unwrap_or_default();
        let mut labels = rec.config.labels.clone();
        labels.insert("io.cri-containerd.kind".into(), "container".into());
        labels.insert("io.kubernetes.cri.sandbox-id".into(), sandbox.id.clone());
        if self.config.cgroup_driver == "systemd"
            && let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone())
        {
            // The runtime makes the container a scope of systemd's in the
            // pod's slice (the path's last two elements).
            let name = |p: Option<&std::path::Path>| p?.file_name().map(|n| n.to_string_lossy().into_owned());
            if let (Some(unit), Some(slice)) = (name(Some(&path)), name(path.parent())) {
                labels.insert(molde_common::labels::SYSTEMD_UNIT.into(), unit);
                labels.insert(molde_common::labels::SYSTEMD_SLICE.into(), slice);
            }
        }
        // The rootfs and the runtime's record of the container, made at once.
        let mut snapshots = SnapshotsClient::new(self.channels.snapshotter.clone());
        let prepare = snapshots.prepare(request(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: rec.id.clone(),
            parent: image.top.clone(),
            labels: Default::default(),
        }));
        let mut containers = ContainersClient::new(self.channels.runtime.clone());
        let record = containers.create(request(CreateContainerRequest {
            container: Some(ContainerRecordV1 {
                id: rec.id.clone(),
                labels,
                image: image.names.first().cloned().unwrap_or_default(),
                runtime: Some(Runtime {
                    name: RUNTIME_NAME.into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE.into(),
                    value: serde_json::to_vec(&spec).map_err(|e| Error::Internal(e.to_string()))?,
                }),
                snapshotter: "overlayfs".into(),
                snapshot_key: rec.id.clone(),
                sandbox: sandbox.id.clone(),
                ..Default::default()
            }),
        }));
        let (prepared, recorded) = tokio::join!(prepare, record);
        let rootfs = prepared
            .map_err(Error::upstream("preparing the container's rootfs"))?
            .into_inner()
            .mounts;
        recorded.map_err(Error::upstream("recording the container"))?;
        Ok((effective, rootfs))
    }

    /// The container's task: the shim creates the container, held until
    /// StartContainer orders its start. Begun by CreateContainer in the
    /// background (see `early`), on the rootfs it prepared; made again by
    /// StartContainer (the rootfs asked of the snapshotter) when that failed
    /// or was not begun by this molded.
    async fn create_task(
        &self,
        rec: &ContainerRecord,
        rootfs: Option<Vec<molde_api::containerd::types::Mount>>,
    ) -> Result<(), Error> {
        let rootfs = match rootfs {
            Some(m) => m,
            None => {
                SnapshotsClient::new(self.channels.snapshotter.clone())
                    .mounts(request(MountsRequest {
                        snapshotter: "overlayfs".into(),
                        key: rec.id.clone(),
                    }))
                    .await
                    .map_err(Error::upstream("the container's rootfs"))?
                    .into_inner()
                    .mounts
            }
        };
        let stdout = if rec.log_path.is_empty() {
            String::new()
        } else {
            format!("cri-log://{}", rec.log_path)
        };
        TasksClient::new(self.channels.runtime.clone())
            .create(request(CreateTaskRequest {
                container_id: rec.id.clone(),
                rootfs,
                stdout,
                stdin: match (rec.config.stdin, rec.config.stdin_once) {
                    (false, _) => String::new(),
                    (true, false) => molde_bundle::STDIN_ATTACH.into(),
                    (true, true) => molde_bundle::STDIN_ATTACH_ONCE.into(),
                },
                terminal: rec.config.tty,
                ..Default::default()
            }))
            .await
            .map_err(Error::upstream("creating the container's task"))?;
        Ok(())
    }

    /// A read-only view snapshot of the image each image volume
    /// (`Mount.image`) names, by the mount's index. The kubelet pulled the
    /// images (by the pod's pull policy) before it asked for the container.
    async fn image_volumes(
        &self,
        id: &str,
        config: &cri::ContainerConfig,
    ) -> Result<HashMap<usize, Vec<molde_api::containerd::types::Mount>>, Error> {
        let mut views = HashMap::new();
        for (idx, m) in config.mounts.iter().enumerate() {
            let Some(spec) = m
                .image
                .as_ref()
                .map(|i| i.image.as_str())
                .filter(|i| !i.is_empty())
            else {
                continue;
            };
            let image = crate::image::find(self, spec).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "image volume {}: image {spec:?} is not on this node (pull it first)",
                    m.container_path
                ))
            })?;
            let mounts = SnapshotsClient::new(self.channels.snapshotter.clone())
                .view(request(ViewSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: image_volume_key(id, idx),
                    parent: image.top.clone(),
                    labels: Default::default(),
                }))
                .await
                .map_err(Error::upstream(format!(
                    "image volume {}: a view of {spec}",
                    m.container_path
                )))?
                .into_inner()
                .mounts;
            views.insert(idx, mounts);
        }
        Ok(views)
    }

    /// The uid, gid and extra groups the container runs with: the security
    /// context's user (a uid or a name), else the image's `User`; a gid not
    /// given is the user's primary group in the image's /etc/passwd, and the
    /// groups of the image's /etc/group that list the user come along.
    async fn user(
        &self,
        sc: &cri::LinuxContainerSecurityContext,
        image: &crate::image::ImageInfo,
    ) -> Result<(u32, u32, Vec<u32>), Error> {
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(Error::InvalidArgument(
                "runAsGroup needs runAsUser or runAsUsername".into(),
            ));
        }
        let files = self
            .read_image_files(&image.top, &["/etc/passwd", "/etc/group"])
            .await?;
        let passwd = files[0].clone().unwrap_or_default();
        let group = files[1].clone().unwrap_or_default();
        let spec = match (&sc.run_as_user, sc.run_as_username.as_str()) {
            (Some(u), _) => u.value.to_string(),
            (None, name) if !name.is_empty() => name.to_string(),
            (None, _) if image.user.is_empty() => "0".to_string(),
            (None, _) => image.user.clone(),
        };
        let who = molde_common::user::lookup(&passwd, &group, &spec)?;
        let (uid, name) = (who.uid, who.name);
        let gid = sc.run_as_group.as_ref().map_or(who.gid, |g| g.value as u32);
        let extra = molde_common::user::member_of(&group, &name)
            .into_iter()
            .filter(|g| *g != gid)
            .collect();
        Ok((uid, gid, extra))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Error> {
        let rec = self.container(id)?;
        // The task being made (see `early`) is waited for meanwhile.
        let (o, early) = tokio::join!(self.observe(&rec.id), self.early.settle(&rec.id));
        let o = o?;
        if o.state != cri::ContainerState::ContainerCreated as i32 {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not in the created state",
                rec.id
            )));
        }
        match early {
            Some(Ok(())) => {}
            // Made again, for an answer that says why it fails.
            Some(Err(_)) => self.create_task(&rec, None).await?,
            // Not made here: made now, unless a molded before this one made
            // it (its shim holds it).
            None => match self.create_task(&rec, None).await {
                Err(e) if e.is_already_exists() => {}
                r => r?,
            },
        }
        TasksClient::new(self.channels.runtime.clone())
            .start(request(StartRequest {
                container_id: rec.id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map_err(Error::upstream(format!("starting container {}", rec.id)))?;
        self.event(&rec.id, cri::ContainerEventType::ContainerStartedEvent)
            .await;
        Ok(())
    }

    /// Stops a container; one that is gone (or never was) is stopped
    /// already, as the CRI asks of StopContainer.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Error> {
        let rec = match self.container(id) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let o = self.observe(&rec.id).await?;
        if o.state != cri::ContainerState::ContainerRunning as i32 {
            return Ok(());
        }
        self.runtime()
            .stop(request(rt::StopRequest {
                id: rec.id.clone(),
                timeout: timeout.max(0) as u32,
                signal: rec.stop_signal.clone(),
                container_timeout: false,
            }))
            .await
            .map_err(Error::upstream(format!("stopping container {}", rec.id)))?;
        self.event(&rec.id, cri::ContainerEventType::ContainerStoppedEvent)
            .await;
        Ok(())
    }

    /// Stops a container whatever it is up to, logging a failure (a pod stop).
    pub async fn stop_container_quietly(&self, id: &str, timeout: i64) {
        self.stop_container(id, timeout)
            .await
            .or_log("stopping a pod's container");
    }

    /// Removes a container (stopping it first); removing one that is gone does nothing.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let rec = match self.container(id) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        // A task being made is made first, then removed with the rest.
        self.early.settle(&rec.id).await;
        self.unmake(&rec.id, &rec.config).await;
        store::delete(&*self.store, CONTAINERS, &rec.id)?;
        self.forget_readings(&rec.id);
        if let Ok(sandbox) = self.sandbox(&rec.sandbox_id) {
            crate::userns::release_volumes(std::path::Path::new(&sandbox.dir), &rec.id);
        }
        if let Ok(sandbox) = self.sandbox(&rec.sandbox_id)
            && let (Some(m), Some(pm)) = (&rec.config.metadata, &sandbox.config.metadata)
        {
            store::release(&*self.store, "container", &names::container_name(m, pm), &rec.id)?;
        }
        self.event(&rec.id, cri::ContainerEventType::ContainerDeletedEvent)
            .await;
        tracing::info!(id = %rec.id, "CRI container removed");
        Ok(())
    }

    /// Removes what the runtime holds for a container: task, record,
    /// snapshot, and the views of its image volumes.
    pub(crate) async fn unmake(&self, id: &str, config: &cri::ContainerConfig) {
        for idx in (0..config.mounts.len()).filter(|&i| config.mounts[i].image.is_some()) {
            SnapshotsClient::new(self.channels.snapshotter.clone())
                .remove(request(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: image_volume_key(id, idx),
                }))
                .await
                .ok();
        }
        match self
            .runtime()
            .remove(request(rt::RemoveRequest {
                id: id.to_string(),
                force: true,
                volumes: true,
            }))
            .await
        {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => tracing::warn!(container = id, error = %s.message(), "removing a container failed"),
        }
        // Not (or not yet) a container the runtime knows: what may be left.
        ContainersClient::new(self.channels.runtime.clone())
            .delete(request(DeleteContainerRequest { id: id.to_string() }))
            .await
            .ok();
        SnapshotsClient::new(self.channels.snapshotter.clone())
            .remove(request(RemoveSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.to_string(),
            }))
            .await
            .ok();
    }

    /// New CPU and memory limits for a running container, kept for its status.
    pub async fn update_resources(&self, id: &str, res: cri::LinuxContainerResources) -> Result<(), Error> {
        let mut rec = self.container(id)?;
        if self.observe(&rec.id).await?.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if res.memory_limit_in_bytes < 0 || res.cpu_quota < -1 || res.cpu_period < 0 || res.cpu_shares < 0 {
            return Err(Error::InvalidArgument(format!(
                "container {}: resources must not be negative",
                rec.id
            )));
        }
        let mut oci = oci_spec::runtime::LinuxResources::default();
        crate::spec::limits(&mut oci, &res);
        self.runtime()
            .update(request(rt::UpdateRequest {
                id: rec.id.clone(),
                resources_json: serde_json::to_string(&oci).map_err(|e| Error::Internal(e.to_string()))?,
            }))
            .await
            .map_err(Error::upstream(format!("updating container {}", rec.id)))?;
        let linux = rec.config.linux.get_or_insert_with(Default::default);
        linux.resources = Some(res);
        store::put(&*self.store, CONTAINERS, &rec.id, &rec)?;
        Ok(())
    }

    pub async fn reopen_log(&self, id: &str) -> Result<(), Error> {
        let rec = self.container(id)?;
        if self.observe(&rec.id).await?.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        self.runtime()
            .reopen_log(request(rt::ReopenLogRequest { id: rec.id.clone() }))
            .await
            .map_err(Error::upstream(format!("reopening the log of {}", rec.id)))?;
        Ok(())
    }

    pub fn container_status(&self, rec: &ContainerRecord, o: &Observed) -> cri::ContainerStatus {
        let reason = if o.state == cri::ContainerState::ContainerExited as i32 {
            if o.oom_killed {
                "OOMKilled"
            } else if o.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
        } else {
            ""
        };
        cri::ContainerStatus {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: o.state,
            created_at: rec.created_at,
            // The runtime's record of the start; records of a molded that
            // wrote its own are read as they are.
            started_at: if o.started_at != 0 {
                o.started_at
            } else {
                rec.started_at
            },
            finished_at: o.finished_at,
            exit_code: o.exit_code,
            image: rec.config.image.clone(),
            image_ref: rec.image_ref.clone(),
            reason: reason.into(),
            message: o.error.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            mounts: rec.config.mounts.clone(),
            log_path: rec.log_path.clone(),
            resources: rec
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: rec.image_id.clone(),
            user: rec.user.as_ref().map(|(uid, gid, groups)| cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: i64::from(*uid),
                    gid: i64::from(*gid),
                    supplemental_groups: groups.iter().map(|g| i64::from(*g)).collect(),
                }),
            }),
        }
    }

    pub fn to_container(&self, rec: &ContainerRecord, o: &Observed) -> cri::Container {
        cri::Container {
            id: rec.id.clone(),
            pod_sandbox_id: rec.sandbox_id.clone(),
            metadata: rec.config.metadata.clone(),
            image: rec.config.image.clone(),
            image_ref: rec.image_ref.clone(),
            state: o.state,
            created_at: rec.created_at,
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            image_id: rec.image_id.clone(),
        }
    }

    /// Tells GetContainerEvents' watchers what happened to a container.
    pub async fn event(&self, id: &str, kind: cri::ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let (sandbox_status, statuses) = match self.container(id) {
            Ok(rec) => {
                let o = self.observe(id).await.unwrap_or_default();
                (
                    self.sandbox(&rec.sandbox_id)
                        .ok()
                        .map(|s| self.sandbox_status(&s)),
                    vec![self.container_status(&rec, &o)],
                )
            }
            Err(_) => (None, Vec::new()),
        };
        let _ = self.events.send(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::now_nanos(),
            pod_sandbox_status: sandbox_status,
            containers_statuses: statuses,
        });
    }
}

fn observed(c: &rt::ContainerStatus) -> Observed {
    let state = match c.state.as_str() {
        "created" => cri::ContainerState::ContainerCreated,
        "running" => cri::ContainerState::ContainerRunning,
        "exited" => cri::ContainerState::ContainerExited,
        _ => cri::ContainerState::ContainerUnknown,
    };
    Observed {
        state: state as i32,
        exit_code: c.exit_code,
        oom_killed: c.oom_killed,
        finished_at: rfc3339_nanos(&c.finished_at),
        started_at: rfc3339_nanos(&c.started_at),
        pid: c.pid,
        error: c.error.clone(),
    }
}

/// The key of the view snapshot behind mount `idx` of container `id`.
pub(crate) fn image_volume_key(id: &str, idx: usize) -> String {
    format!("{id}-image-volume-{idx}")
}
