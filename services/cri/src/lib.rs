//! molde's CRI service: Kubernetes' CRI v1 (`runtime.v1` RuntimeService and
//! ImageService, from the `k8s-cri` crate) for the kubelet, crictl and
//! critest.
//!
//! It is one more client of molde's services and reaches them only through
//! their gRPC APIs, in the `k8s.io` namespace: images through transfer.v1 and
//! images.v1 (`image.rs`), containers through containers.v1, snapshots.v1,
//! tasks.v1 and molde's runtime.v1 (`container.rs`, `spec.rs`, `exec.rs`).
//! What is its own is the pod: a sandbox is namespaces molde pins itself
//! (network, IPC, UTS; a PID namespace held by a tiny init only when the pod
//! shares one), the pod's files (hostname, hosts, resolv.conf, /dev/shm) and
//! its network through CNI (`sandbox.rs`), with records of its own in the
//! metadata store (`store.rs`). No sandbox (pause) image is ever pulled.

pub mod authority;
pub mod container;
mod early;
pub mod exec;
pub mod image;
pub mod limits;
pub mod metrics;
pub mod names;
mod reconcile;
mod release;
pub mod runtime;
pub mod sandbox;
pub mod spec;
pub mod store;
pub mod stream;
pub mod user;
pub mod userns;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use molde_meta::Store;
use tonic::transport::Channel;

/// The containerd namespace CRI's images and containers live in.
pub const NAMESPACE: &str = "k8s.io";

/// The `[cri]` section of molded's configuration.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// Where the pods' state lives (`<state>/cri`): namespace pins, the
    /// files pods share.
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// "cgroupfs" or "systemd".
    pub cgroup_driver: String,
    /// The binary a pod's PID namespace init runs (molded's own, with `pod-init`).
    pub pod_init: PathBuf,
}

/// How the CRI service reaches molde's other services.
#[derive(Clone)]
pub struct Channels {
    /// content.v1, images.v1, leases.v1.
    pub content: Channel,
    pub transfer: Channel,
    /// snapshots.v1, diff.v1.
    pub snapshotter: Channel,
    /// containers.v1, tasks.v1, runtime.v1.
    pub runtime: Channel,
}

/// State shared by both CRI services.
pub struct Cri {
    pub config: CriConfig,
    pub channels: Channels,
    pub store: Arc<dyn Store>,
    /// The pod CIDR the kubelet set with UpdateRuntimeConfig.
    pub pod_cidr: std::sync::Mutex<String>,
    /// Container events for GetContainerEvents.
    pub events: tokio::sync::broadcast::Sender<k8s_cri::v1::ContainerEventResponse>,
    /// The streaming server's tokens (Exec, Attach, PortForward URLs).
    pub streams: stream::Streams,
    /// One lock per pod: creating a container in a pod and removing or
    /// stopping the pod never interleave.
    pods: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The last CPU reading of each container and pod (time, core
    /// nanoseconds), from which the next one's nano cores are worked out.
    pub(crate) cpu_readings: std::sync::Mutex<HashMap<String, (i64, u64)>>,
    /// Each image manifest's resolution (config, top layer), by digest.
    pub(crate) resolved_images: std::sync::Mutex<HashMap<String, image::ImageInfo>>,
    /// The image's /etc/passwd and /etc/group, by the chain ID of its top
    /// layer (what an image's layers hold never changes).
    pub(crate) user_files: std::sync::Mutex<HashMap<String, Vec<Option<String>>>>,
    /// Where the overlayfs snapshotter keeps its snapshots, once known.
    snapshot_root: tokio::sync::OnceCell<String>,
    /// Stopped pods' networks owed a release, and when they get it.
    pub(crate) releases: release::Releases,
    /// Tasks made as their containers were, until started (see `early`).
    pub(crate) early: early::EarlyTasks,
}

impl Cri {
    pub fn new(config: CriConfig, channels: Channels, store: Arc<dyn Store>) -> Arc<Cri> {
        let (events, _) = tokio::sync::broadcast::channel(256);
        Arc::new(Cri {
            config,
            channels,
            store,
            pod_cidr: Default::default(),
            events,
            streams: Default::default(),
            pods: Default::default(),
            cpu_readings: Default::default(),
            resolved_images: Default::default(),
            user_files: Default::default(),
            snapshot_root: Default::default(),
            releases: Default::default(),
            early: Default::default(),
        })
    }

    /// Where the overlayfs snapshotter keeps its snapshots (the filesystem of
    /// the images and the containers' writable layers), as its molded's
    /// introspection service exports it; empty while it cannot be asked.
    pub(crate) async fn snapshot_root(&self) -> String {
        use molde_api::containerd::services::introspection::v1::{
            PluginsRequest, introspection_client::IntrospectionClient,
        };
        let ask = || async {
            let r = IntrospectionClient::new(self.channels.snapshotter.clone())
                .plugins(request(PluginsRequest::default()))
                .await
                .map_err(|_| ())?;
            r.into_inner()
                .plugins
                .into_iter()
                .find(|p| p.r#type == "io.containerd.snapshotter.v1" && p.id == "overlayfs")
                .and_then(|p| p.exports.get("root").cloned())
                .ok_or(())
        };
        self.snapshot_root
            .get_or_try_init(ask)
            .await
            .cloned()
            .unwrap_or_default()
    }

    /// Holds pod `id`'s lock until the guard is dropped.
    pub(crate) async fn lock_pod(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    /// Forgets the lock of a pod that is gone.
    pub(crate) fn forget_pod(&self, id: &str) {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The runtime and image services, ready to add to a router.
pub struct Servers {
    pub runtime: RuntimeServiceServer<runtime::RuntimeService>,
    pub image: ImageServiceServer<image::ImageService>,
}

pub fn servers(cri: Arc<Cri>) -> Servers {
    Servers {
        runtime: RuntimeServiceServer::new(runtime::RuntimeService { cri: cri.clone() })
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
        image: ImageServiceServer::new(image::ImageService { cri })
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(16 << 20),
    }
}

/// Nanoseconds since the epoch, as CRI timestamps are.
pub fn now_nanos() -> i64 {
    molde_common::now_nanos()
}

/// A request to another molde service in the `k8s.io` namespace.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    molde_api::client::namespaced(NAMESPACE, msg)
}

/// A new 64-hex-digit id, as containerd's CRI gives sandboxes and containers.
pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
