//! CRI's RuntimeService: each RPC validated and handed to the sandbox,
//! container and exec code; status, runtime config, stats and events.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService as CriRuntimeService;
use molde_api::containerd::services::snapshots::v1::{
    UsageRequest, UsageResponse, snapshots_client::SnapshotsClient,
};
use molde_api::molde::services::runtime::v1 as rt;
use molde_api::molde::services::runtime::v1::runtime_client::RuntimeClient;
use molde_common::errdefs::Error;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{Cri, names, request};

pub struct RuntimeService {
    pub cri: Arc<Cri>,
}

/// The runtime's name and the CRI version it speaks.
pub const RUNTIME_NAME: &str = "molde";
pub const API_VERSION: &str = "v1";

impl Cri {
    /// The CPU the container or pod `id` used since its last reading, in
    /// nano cores (as cAdvisor and containerd report `usage_nano_cores`);
    /// none on the first reading.
    fn nano_cores(&self, id: &str, now: i64, core_ns: u64) -> Option<cri::UInt64Value> {
        let mut last = self.cpu_readings.lock().unwrap_or_else(|p| p.into_inner());
        let before = last.insert(id.to_string(), (now, core_ns));
        let (then, used) = before?;
        let elapsed = now.checked_sub(then).filter(|&e| e > 0)? as u128;
        let value = (core_ns.saturating_sub(used) as u128 * 1_000_000_000 / elapsed) as u64;
        Some(cri::UInt64Value { value })
    }

    /// Forgets the readings of containers and pods that are gone.
    pub(crate) fn forget_readings(&self, id: &str) {
        self.cpu_readings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    async fn container_stats(&self, rec: &crate::store::ContainerRecord) -> cri::ContainerStats {
        self.container_usage(rec).await.0
    }

    /// What the runtime and the snapshotter read for a container: its
    /// cgroup's and namespace's numbers, and its writable layer.
    async fn readings(&self, rec: &crate::store::ContainerRecord) -> (rt::StatsResponse, UsageResponse) {
        let usage = RuntimeClient::new(self.channels.runtime.clone())
            .stats(request(rt::StatsRequest { id: rec.id.clone() }))
            .await
            .map(|r| r.into_inner())
            .unwrap_or_default();
        let layer = SnapshotsClient::new(self.channels.snapshotter.clone())
            .usage(request(UsageRequest {
                snapshotter: "overlayfs".into(),
                key: rec.id.clone(),
            }))
            .await
            .map(|r| r.into_inner())
            .unwrap_or_default();
        (usage, layer)
    }

    /// A container's stats and its process count.
    async fn container_usage(&self, rec: &crate::store::ContainerRecord) -> (cri::ContainerStats, u64) {
        let now = crate::now_nanos();
        let (usage, layer) = self.readings(rec).await;
        let mountpoint = self.snapshot_root().await;
        let stats = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: Some(cri::UInt64Value {
                    value: usage.cpu_usage_ns,
                }),
                usage_nano_cores: self.nano_cores(&rec.id, now, usage.cpu_usage_ns),
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: Some(cri::UInt64Value {
                    value: usage.memory_working_set_bytes,
                }),
                usage_bytes: Some(cri::UInt64Value {
                    value: usage.memory_bytes,
                }),
                // As cAdvisor: what remains under the limit, by working set.
                available_bytes: (usage.memory_limit_bytes > 0).then(|| cri::UInt64Value {
                    value: usage
                        .memory_limit_bytes
                        .saturating_sub(usage.memory_working_set_bytes),
                }),
                rss_bytes: Some(cri::UInt64Value {
                    value: usage.memory_rss_bytes,
                }),
                page_faults: Some(cri::UInt64Value {
                    value: usage.memory_page_faults,
                }),
                major_page_faults: Some(cri::UInt64Value {
                    value: usage.memory_major_page_faults,
                }),
            }),
            writable_layer: Some(cri::FilesystemUsage {
                timestamp: now,
                // The filesystem the writable layers live on, as ImageFsInfo
                // names it: the kubelet matches the two.
                fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
                used_bytes: Some(cri::UInt64Value {
                    value: layer.size.max(0) as u64,
                }),
                inodes_used: Some(cri::UInt64Value {
                    value: layer.inodes.max(0) as u64,
                }),
            }),
            swap: Some(cri::SwapUsage {
                timestamp: now,
                swap_available_bytes: None,
                swap_usage_bytes: Some(cri::UInt64Value {
                    value: usage.swap_bytes,
                }),
            }),
        };
        (stats, usage.pids)
    }

    async fn sandbox_stats(&self, rec: &crate::store::SandboxRecord) -> Result<cri::PodSandboxStats, Error> {
        let now = crate::now_nanos();
        let mut containers = Vec::new();
        let mut processes = 0;
        for c in self.containers_of(&rec.id)? {
            let (stats, pids) = self.container_usage(&c).await;
            containers.push(stats);
            processes += pids;
        }
        let cpu: u64 = containers
            .iter()
            .filter_map(|c| c.cpu.as_ref()?.usage_core_nano_seconds.as_ref().map(|v| v.value))
            .sum();
        let memory = |f: fn(&cri::MemoryUsage) -> Option<&cri::UInt64Value>| -> u64 {
            containers
                .iter()
                .filter_map(|c| f(c.memory.as_ref()?).map(|v| v.value))
                .sum()
        };
        let value = |value| Some(cri::UInt64Value { value });
        let interfaces = if rec.netns.is_empty() {
            Vec::new()
        } else {
            net_usage(&rec.netns).unwrap_or_default()
        };
        let default_interface = interfaces.iter().find(|i| i.name == "eth0").cloned();
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: Some(cri::UInt64Value { value: cpu }),
                    usage_nano_cores: self.nano_cores(&rec.id, now, cpu),
                }),
                // The pod's memory: its containers' summed.
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: value(memory(|m| m.working_set_bytes.as_ref())),
                    usage_bytes: value(memory(|m| m.usage_bytes.as_ref())),
                    rss_bytes: value(memory(|m| m.rss_bytes.as_ref())),
                    page_faults: value(memory(|m| m.page_faults.as_ref())),
                    major_page_faults: value(memory(|m| m.major_page_faults.as_ref())),
                    available_bytes: None,
                }),
                network: Some(cri::NetworkUsage {
                    timestamp: now,
                    default_interface,
                    interfaces,
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: Some(cri::UInt64Value { value: processes }),
                }),
                containers,
            }),
            windows: None,
        })
    }
}

/// Traffic counters of every interface of a pinned network namespace, read
/// from /proc/net/dev by a thread that enters it.
/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

fn net_usage(netns: &str) -> std::io::Result<Vec<cri::NetworkInterfaceUsage>> {
    let ns = std::fs::File::open(netns)?;
    std::thread::spawn(move || -> std::io::Result<Vec<cri::NetworkInterfaceUsage>> {
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
        Ok(text
            .lines()
            .skip(2)
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
                (f.len() >= 12 && name.trim() != "lo").then(|| cri::NetworkInterfaceUsage {
                    name: name.trim().to_string(),
                    rx_bytes: Some(cri::UInt64Value { value: f[0] }),
                    rx_errors: Some(cri::UInt64Value { value: f[2] }),
                    tx_bytes: Some(cri::UInt64Value { value: f[8] }),
                    tx_errors: Some(cri::UInt64Value { value: f[10] }),
                })
            })
            .collect())
    })
    .join()
    .map_err(|_| std::io::Error::other("reading the pod's network counters panicked"))?
}

#[tonic::async_trait]
impl CriRuntimeService for RuntimeService {
    async fn version(
        &self,
        _req: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| Error::InvalidArgument("RunPodSandbox needs a config".into()))?;
        let pod_sandbox_id = self.cri.run_sandbox(config, r.runtime_handler).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        self.cri.stop_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        self.cri.remove_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = req.into_inner();
        let rec = self.cri.sandbox(&r.pod_sandbox_id)?;
        let info = if r.verbose {
            self.cri.sandbox_info(&rec)
        } else {
            HashMap::new()
        };
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(self.cri.sandbox_status(&rec)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crate::now_nanos(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let items = self
            .cri
            .sandboxes()?
            .into_iter()
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .map(|s| self.cri.sandbox_status(&s))
            .filter(|s| filter.state.as_ref().is_none_or(|st| st.state == s.state))
            .filter(|s| names::selected(&s.labels, &filter.label_selector))
            .map(|s| cri::PodSandbox {
                id: s.id,
                metadata: s.metadata,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                runtime_handler: s.runtime_handler,
            })
            .collect();
        let mut answer = cri::ListPodSandboxResponse { items };
        crate::limits::trim_list(&mut answer, prost::Message::encoded_len, |a| {
            a.items
                .iter_mut()
                .map(|p| (&mut p.labels, &mut p.annotations))
                .collect()
        });
        Ok(Response::new(answer))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let config = r
            .config
            .ok_or_else(|| Error::InvalidArgument("CreateContainer needs a config".into()))?;
        let container_id = self.cri.create_container(&r.pod_sandbox_id, config).await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        self.cri.start_container(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = req.into_inner();
        self.cri.stop_container(&r.container_id, r.timeout).await?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.cri.remove_container(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let observed = self.cri.observe_all().await?;
        let containers = self
            .cri
            .containers()?
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id))
            .filter(|c| names::selected(&c.config.labels, &filter.label_selector))
            .map(|c| {
                let o = observed
                    .get(&c.id)
                    .cloned()
                    .unwrap_or(crate::container::Observed {
                        state: cri::ContainerState::ContainerUnknown as i32,
                        ..Default::default()
                    });
                self.cri.to_container(&c, &o)
            })
            .filter(|c| filter.state.as_ref().is_none_or(|st| st.state == c.state))
            .collect();
        let mut answer = cri::ListContainersResponse { containers };
        crate::limits::trim_list(&mut answer, prost::Message::encoded_len, |a| {
            a.containers
                .iter_mut()
                .map(|c| (&mut c.labels, &mut c.annotations))
                .collect()
        });
        Ok(Response::new(answer))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = req.into_inner();
        let rec = self.cri.container(&r.container_id)?;
        let o = self.cri.observe(&rec.id).await?;
        let mut info = HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "id": rec.id,
                "sandboxID": rec.sandbox_id,
                "pid": o.pid,
                "imageID": rec.image_id,
                "logPath": rec.log_path,
                "config": rec.config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(self.cri.container_status(&rec, &o)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = req.into_inner();
        self.cri
            .update_resources(&r.container_id, r.linux.unwrap_or_default())
            .await?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        self.cri.reopen_log(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Ok(Response::new(self.cri.exec_sync(req.into_inner()).await?))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        let r = req.into_inner();
        if r.cmd.is_empty() {
            return Err(Error::InvalidArgument("Exec needs a command".into()).into());
        }
        if r.tty && r.stderr {
            return Err(Error::InvalidArgument("Exec: tty and stderr cannot both be true".into()).into());
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(
                Error::InvalidArgument("Exec: one of stdin, stdout and stderr must be true".into()).into(),
            );
        }
        self.cri.running_container(&r.container_id).await?;
        let url = self.cri.streams.url(crate::stream::Pending::Exec(r))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(
        &self,
        req: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let r = req.into_inner();
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Error::InvalidArgument(
                "Attach: one of stdin, stdout and stderr must be true".into(),
            )
            .into());
        }
        self.cri.running_container(&r.container_id).await?;
        let url = self.cri.streams.url(crate::stream::Pending::Attach(r))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let r = req.into_inner();
        let sandbox = self.cri.sandbox(&r.pod_sandbox_id)?;
        if !sandbox.ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {} is not ready", sandbox.id)).into());
        }
        if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!("PortForward: port {p} is out of range")).into());
        }
        let url = self.cri.streams.url(crate::stream::Pending::PortForward(r))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let rec = self.cri.container(&req.into_inner().container_id)?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(self.cri.container_stats(&rec).await),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for c in self.cri.containers()? {
            if (f.id.is_empty() || c.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                && names::selected(&c.config.labels, &f.label_selector)
            {
                stats.push(self.cri.container_stats(&c).await);
            }
        }
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let rec = self.cri.sandbox(&req.into_inner().pod_sandbox_id)?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(self.cri.sandbox_stats(&rec).await?),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let f = req.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for s in self.cri.sandboxes()? {
            if (f.id.is_empty() || s.id.starts_with(&f.id))
                && names::selected(&s.config.labels, &f.label_selector)
            {
                stats.push(self.cri.sandbox_stats(&s).await?);
            }
        }
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR set");
            *self.cri.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let network = self.cri.network();
        let mut net = cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: network.is_some(),
            ..Default::default()
        };
        if network.is_none() {
            net.reason = "NetworkPluginNotReady".into();
            net.message = format!(
                "Network plugin returns error: no network config found in {}",
                self.cri.config.cni_conf_dir.display()
            );
        }
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            let v = serde_json::json!({
                "cniConfDir": self.cri.config.cni_conf_dir,
                "cniBinDirs": self.cri.config.cni_bin_dirs,
                "network": network.map(|(f, l)| serde_json::json!({"file": f, "name": l.name})),
                "cgroupDriver": self.cri.config.cgroup_driver,
            });
            info.insert("config".to_string(), v.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    net,
                ],
            }),
            info,
            // The default handler; recursive read-only mounts need
            // mount_setattr (Linux 5.12), user namespaces overlay on
            // idmapped layers (Linux 5.19).
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: kernel_at_least(5, 12),
                    user_namespaces: kernel_at_least(5, 19),
                }),
            }],
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        // Checkpointing needs CRIU, and the criu of the hosts molde is built
        // and tested on (Debian 12's 3.17) cannot run on their kernels, so
        // it could be neither built nor tested: refused, saying why.
        Err(Error::Unimplemented(
            "CheckpointContainer is not implemented: molde has no CRIU-based checkpointing (Debian 12's criu 3.17 cannot dump on the kernels it is tested on)"
                .into(),
        )
        .into())
    }

    type GetContainerEventsStream = ReceiverStream<Result<cri::ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let mut rx = self.cri.events.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a container events watcher fell behind");
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: crate::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        let now = crate::now_nanos();
        let mut pod_metrics = Vec::new();
        for s in self.cri.sandboxes()? {
            let mut container_metrics = Vec::new();
            for c in self.cri.containers_of(&s.id)? {
                let (usage, layer) = self.cri.readings(&c).await;
                let labels = crate::metrics::container_labels(&s.config, &c);
                container_metrics.push(cri::ContainerMetrics {
                    container_id: c.id.clone(),
                    metrics: crate::metrics::container(&labels, &usage, layer.size.max(0) as u64, now),
                });
            }
            let meta = s.config.metadata.clone().unwrap_or_default();
            let pod_labels = vec![
                "POD".to_string(),
                s.id.clone(),
                String::new(),
                s.id.clone(),
                meta.namespace,
                meta.name,
            ];
            let interfaces = if s.netns.is_empty() {
                Vec::new()
            } else {
                net_usage(&s.netns).unwrap_or_default()
            };
            pod_metrics.push(cri::PodSandboxMetrics {
                pod_sandbox_id: s.id.clone(),
                metrics: crate::metrics::network(&pod_labels, &interfaces, now),
                container_metrics,
            });
        }
        Ok(Response::new(cri::ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        let driver = if self.cri.config.cgroup_driver == "systemd" {
            cri::CgroupDriver::Systemd
        } else {
            cri::CgroupDriver::Cgroupfs
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}
