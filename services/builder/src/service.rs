//! builder.v1 `Build`: a Dockerfile and its context become an image, through
//! the other services only. Each stage starts from its FROM (an image from
//! images.v1 and content.v1, an earlier stage, or `scratch`); RUN runs in a
//! container (runtime.v1 `Run` on a snapshot prepared over the stage's top
//! layer), COPY writes into a snapshot mounted here; either way diff.v1 makes
//! the layer from the snapshot and snapshots.v1 commits it under its chain ID.
//! The config and manifest go to content.v1, the names to images.v1. A lease
//! holds everything until the image does.
//!
//! Each step has a cache key (`crate::cache`); a layer step whose key an
//! earlier build recorded reuses that layer without running.
//!
//! Stages of one wave of the plan run at once. RUN `--mount`s become
//! runtime volumes (cache directories kept under `cache_mounts`, context or
//! stage binds, secrets written for the step) and their mount points are
//! taken out of the layer. Cache records hold their layers through the
//! `molde.build-cache` lease until pruned (least recently used first, past
//! `cache_max_bytes`).

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use futures::StreamExt;
use molde_api::containerd::services::content::v1::{
    ReadContentRequest, WriteAction, WriteContentRequest, content_client::ContentClient,
};
use molde_api::containerd::services::diff::v1::{ApplyRequest, DiffRequest, diff_client::DiffClient};
use molde_api::containerd::services::images::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest as CreateLease, DeleteRequest as DeleteLease, DeleteResourceRequest,
    ListRequest as ListLeasesRequest, Resource, leases_client::LeasesClient,
};
use molde_api::containerd::services::namespaces::v1::{
    ListNamespacesRequest, namespaces_client::NamespacesClient,
};
use molde_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, ListSnapshotsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    ViewSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_api::containerd::types::{Descriptor, Mount};
use molde_api::molde::services::builder::v1::{self as api, build_event::Event, builder_server::Builder};
use molde_api::molde::services::gc::v1::{CollectRequest, gc_client::GcClient};
use molde_api::molde::services::runtime::v1::{
    ListRequest, RemoveRequest, RunRequest, run_event, runtime_client::RuntimeClient,
};
use molde_api::molde::services::transfer::v1::{PullRequest, transfer_client::TransferClient};
use molde_common::{Algorithm, Digest, RequestContext};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::cache;
use crate::dockerfile::{self, Command, Dockerfile, Instruction};
use crate::ignore::Ignore;
use crate::mounts::{RunMount, Sharing};
use crate::plan;
use crate::stage::{StageState, Step};

const SNAPSHOTTER: &str = "overlayfs";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The builder service; it reaches content, snapshots/diff and runtime.
#[derive(Clone)]
pub struct BuilderService {
    pub content: Channel,
    pub snapshotter: Channel,
    pub runtime: Channel,
    /// Where COPY mounts snapshots while it writes into them, and where sent
    /// contexts, downloads, secrets and scripts live during a build.
    pub scratch: PathBuf,
    /// Step key → the layer it made (one JSON file per key).
    pub cache: PathBuf,
    /// `RUN --mount=type=cache` directories, by id.
    pub cache_mounts: PathBuf,
    /// Bytes of layers the cache records may hold (least recently used go first).
    pub cache_max_bytes: u64,
    /// Entitlements the daemon's configuration lets a build be granted.
    pub entitlements: Vec<String>,
    /// Held for writing while `recover` cleans up after an earlier molded;
    /// builds wait for it.
    pub recovering: std::sync::Arc<tokio::sync::RwLock<()>>,
}

type Tx = mpsc::Sender<Result<api::BuildEvent, Status>>;

/// The lease (one per namespace, no expiry) that keeps cached layers from
/// garbage collection until the cache drops their records.
const CACHE_LEASE: &str = "molde.build-cache";

#[tonic::async_trait]
impl Builder for BuilderService {
    type BuildStream = ReceiverStream<Result<api::BuildEvent, Status>>;

    async fn build(&self, req: Request<api::BuildRequest>) -> Result<Response<Self::BuildStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let scratch = self.job_dir()?;
        let context = PathBuf::from(&req.get_ref().context_dir);
        self.start(ns, req.into_inner(), context, scratch)
    }

    type BuildStreamStream = ReceiverStream<Result<api::BuildEvent, Status>>;

    async fn build_stream(
        &self,
        req: Request<tonic::Streaming<api::BuildInput>>,
    ) -> Result<Response<Self::BuildStreamStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the build stream ended before its request"))?;
        let r = first.request.ok_or_else(|| {
            Status::invalid_argument("the first message of a build stream holds the request")
        })?;
        let scratch = self.job_dir()?;
        // The tar goes to disk as it comes, then is unpacked.
        let received = async {
            use tokio::io::AsyncWriteExt;
            let tar = scratch.join("context.tar");
            let mut f = tokio::fs::File::create(&tar).await?;
            f.write_all(&first.context_tar).await?;
            while let Some(m) = input.message().await.map_err(std::io::Error::other)? {
                f.write_all(&m.context_tar).await?;
            }
            f.flush().await?;
            Ok::<_, std::io::Error>(tar)
        }
        .await;
        let unpacked = match received {
            Ok(tar) => {
                let dir = scratch.join("context");
                tokio::task::spawn_blocking(move || {
                    let r = std::fs::create_dir_all(&dir)
                        .map_err(|e| e.to_string())
                        .and_then(|()| crate::copy::unpack(&tar, &dir, "the context"));
                    let _ = std::fs::remove_file(&tar);
                    r.map(|()| dir)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(|e| Status::invalid_argument(format!("the build context archive: {e}")))
            }
            Err(e) => Err(Status::invalid_argument(format!(
                "receiving the build context: {e}"
            ))),
        };
        match unpacked {
            Ok(context) => self.start(ns, r, context, scratch),
            Err(s) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(s)
            }
        }
    }

    async fn prune(&self, req: Request<api::PruneRequest>) -> Result<Response<api::PruneResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.prune_cache(r.all, r.keep_bytes).await?))
    }
}

impl BuilderService {
    /// Cleans up after builds an earlier molded did not finish (killed
    /// mid-build): their mounts and directories under `scratch`, their RUN
    /// containers (still running, perhaps), their snapshots and leases.
    /// Called once at start, with `recovering` held for writing (`guard`).
    pub async fn recover(&self, guard: tokio::sync::OwnedRwLockWriteGuard<()>) {
        let scratch = self.scratch.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| Path::new(m).starts_with(&scratch))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for m in points {
                let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
            }
            if let Ok(dir) = std::fs::read_dir(&scratch) {
                for e in dir.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        })
        .await;
        let namespaces = NamespacesClient::new(self.content.clone())
            .list(Request::new(ListNamespacesRequest::default()))
            .await
            .map(|r| r.into_inner().namespaces)
            .unwrap_or_default();
        let mut cleaned = 0usize;
        for ns in namespaces.iter().map(|n| n.name.as_str()) {
            let mut rt = RuntimeClient::new(self.runtime.clone());
            let containers = rt
                .list(self.plain(ns, ListRequest { all: true }))
                .await
                .map(|r| r.into_inner().containers)
                .unwrap_or_default();
            for c in containers.iter().filter(|c| c.id.starts_with("build-")) {
                let removed = rt
                    .remove(self.plain(
                        ns,
                        RemoveRequest {
                            id: c.id.clone(),
                            force: true,
                        },
                    ))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
            let mut snaps = SnapshotsClient::new(self.snapshotter.clone());
            let mut keys = Vec::new();
            if let Ok(r) = snaps
                .list(self.plain(
                    ns,
                    ListSnapshotsRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        filters: Vec::new(),
                    },
                ))
                .await
            {
                let mut stream = r.into_inner();
                while let Ok(Some(m)) = stream.message().await {
                    // Snapshots a build prepared; committed layers are
                    // named by chain IDs, never so.
                    keys.extend(
                        m.info
                            .into_iter()
                            .map(|i| i.name)
                            .filter(|n| n.starts_with("build-")),
                    );
                }
            }
            for k in keys {
                let removed = snaps
                    .remove(self.plain(
                        ns,
                        RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: k,
                        },
                    ))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
            let mut leases = LeasesClient::new(self.content.clone());
            let ids: Vec<String> = leases
                .list(self.plain(ns, ListLeasesRequest::default()))
                .await
                .map(|r| r.into_inner().leases.into_iter().map(|l| l.id).collect())
                .unwrap_or_default();
            for id in ids.into_iter().filter(|i| i.starts_with("build-")) {
                let removed = leases
                    .delete(self.plain(ns, DeleteLease { id, sync: false }))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
        }
        if cleaned > 0 {
            tracing::info!(cleaned, "removed what unfinished builds left");
        }
        drop(guard);
    }

    /// A directory of its own for one build, under `scratch`.
    fn job_dir(&self) -> Result<PathBuf, Status> {
        let dir = self
            .scratch
            .join(format!("job-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Checks the request, reads the Dockerfile and plans, then runs the
    /// build in the background, its events on the stream returned.
    fn start(
        &self,
        ns: String,
        r: api::BuildRequest,
        context: PathBuf,
        scratch: PathBuf,
    ) -> Result<Response<ReceiverStream<Result<api::BuildEvent, Status>>>, Status> {
        let recovering = self.recovering.clone();
        let host = format!("linux/{}", molde_common::host_arch());
        let prepared = (|| {
            if !r.platform.is_empty() && r.platform != host {
                return Err(Status::invalid_argument(format!(
                    "--platform {}: molde builds for this host's platform only ({host})",
                    r.platform
                )));
            }
            if !matches!(r.compression.as_str(), "" | "gzip" | "zstd") {
                return Err(Status::invalid_argument(format!(
                    "compression {:?}: expected gzip or zstd",
                    r.compression
                )));
            }
            if !context.is_absolute() || !context.is_dir() {
                return Err(Status::invalid_argument(format!(
                    "build context {:?} is not a directory the daemon can read (an absolute path)",
                    r.context_dir
                )));
            }
            let name = if r.dockerfile.is_empty() {
                "Dockerfile".to_string()
            } else {
                r.dockerfile.clone()
            };
            let text = if r.dockerfile_text.is_empty() {
                let path = if Path::new(&name).is_absolute() {
                    PathBuf::from(&name)
                } else {
                    crate::copy::scoped(&context, &name, true).map_err(Status::invalid_argument)?
                };
                std::fs::read_to_string(&path)
                    .map_err(|e| Status::invalid_argument(format!("reading {name}: {e}")))?
            } else {
                r.dockerfile_text.clone()
            };
            let df = dockerfile::parse(&name, &text).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let target = (!r.target.is_empty()).then_some(r.target.as_str());
            let waves = plan::plan(&df, target).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let granted = crate::entitlements::Granted::new(&r.entitlements, &self.entitlements)
                .map_err(Status::permission_denied)?;
            for ins in waves.iter().flatten().flat_map(|&s| &df.stages[s].instructions) {
                granted.check(ins).map_err(|e| at(&df, ins, e))?;
            }
            // As docker: `<Dockerfile>.dockerignore` first, then `.dockerignore`.
            let own = if r.dockerignore_text.is_empty() && r.dockerfile_text.is_empty() {
                crate::copy::scoped(&context, &format!("{name}.dockerignore"), true)
                    .ok()
                    .and_then(|p| std::fs::read_to_string(p).ok())
            } else {
                (!r.dockerignore_text.is_empty()).then(|| r.dockerignore_text.clone())
            };
            let ignore = own
                .or_else(|| std::fs::read_to_string(context.join(".dockerignore")).ok())
                .map(|t| Ignore::parse(&t))
                .unwrap_or_default();
            Ok((context, df, waves, ignore, granted))
        })();
        let (context, df, waves, ignore, granted) = match prepared {
            Ok(p) => p,
            Err(s) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(s);
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let job = Job {
            svc: self.clone(),
            ns,
            lease: format!("build-{}", uuid::Uuid::new_v4().simple()),
            tx: tx.clone(),
            context,
            ignore,
            granted,
            scratch: scratch.clone(),
            req: r,
            step: AtomicU32::new(0),
            done: Mutex::new(HashMap::new()),
            downloads: Mutex::new(HashMap::new()),
            commits: Mutex::new(HashMap::new()),
            removals: Mutex::new(Vec::new()),
        };
        tokio::spawn(async move {
            // Not before what an earlier molded left is cleaned up.
            drop(recovering.read().await);
            let lease = job.lease.clone();
            let result = job.run(&df, waves).await;
            job.settle().await;
            let _ = LeasesClient::new(job.svc.content.clone())
                .delete(job.plain(DeleteLease {
                    id: lease,
                    sync: false,
                }))
                .await;
            let _ = std::fs::remove_dir_all(&scratch);
            if let Err(s) = result {
                let _ = tx.send(Err(s)).await;
            }
            // Keep the cache within its size.
            let _ = job.svc.prune_cache(false, job.svc.cache_max_bytes).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl BuilderService {
    fn plain<T>(&self, ns: &str, msg: T) -> Request<T> {
        molde_common::context::namespaced(ns, msg)
    }

    /// Drops cache records, least recently used first, until the layers the
    /// rest hold take at most `keep` bytes (none are kept with `all`).
    async fn prune_cache(&self, all: bool, keep: u64) -> Result<api::PruneResponse, Status> {
        let _guard = PRUNE.lock().await;
        let mut records: Vec<(std::time::SystemTime, PathBuf, Value)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.cache) {
            for e in dir.flatten() {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Ok(raw) = std::fs::read(&path) else { continue };
                let Ok(rec) = serde_json::from_slice::<Value>(&raw) else {
                    continue;
                };
                let used = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                records.push((used, path, rec));
            }
        }
        // Newest first: they are the ones kept.
        records.sort_by_key(|r| std::cmp::Reverse(r.0));
        let size = |r: &Value| r["layer"]["size"].as_u64().unwrap_or(0);
        let mut kept_bytes = 0u64;
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (_, path, rec) in records {
            if !all && kept_bytes + size(&rec) <= keep {
                kept_bytes += size(&rec);
                kept.push(rec);
            } else {
                dropped.push((path, rec));
            }
        }
        let mut resp = api::PruneResponse {
            kept_bytes,
            ..Default::default()
        };
        for (path, rec) in &dropped {
            if std::fs::remove_file(path).is_err() {
                continue;
            }
            resp.removed += 1;
            resp.freed_bytes += size(rec);
            let ns = rec["namespace"].as_str().unwrap_or("default");
            let digest = rec["layer"]["digest"].as_str().unwrap_or_default();
            let top = rec["top"].as_str().unwrap_or_default();
            // Another record may hold the same layer.
            let shared = |field: &str, v: &str| {
                kept.iter().any(|k| {
                    k["namespace"].as_str().unwrap_or("default") == ns
                        && k.pointer(field).and_then(Value::as_str) == Some(v)
                })
            };
            let mut leases = LeasesClient::new(self.content.clone());
            let resources = [
                ("/layer/digest", digest, "content".to_string()),
                ("/top", top, format!("snapshots/{SNAPSHOTTER}")),
            ];
            for (field, id, kind) in resources {
                if shared(field, id) {
                    continue;
                }
                let resource = Some(Resource {
                    id: id.into(),
                    r#type: kind,
                });
                let _ = leases
                    .delete_resource(self.plain(
                        ns,
                        DeleteResourceRequest {
                            id: CACHE_LEASE.into(),
                            resource,
                        },
                    ))
                    .await;
            }
        }
        if resp.removed > 0 {
            let _ = GcClient::new(self.content.clone())
                .collect(Request::new(CollectRequest {}))
                .await;
        }
        if all {
            let _ = std::fs::remove_dir_all(&self.cache_mounts);
        }
        Ok(resp)
    }
}

/// One prune at a time.
static PRUNE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stage's result: what a later FROM or COPY --from builds on.
#[derive(Clone)]
struct Built {
    config: Value,
    layers: Vec<Value>,
    diff_ids: Vec<String>,
    /// Chain ID of the top layer ("" for an empty rootfs).
    top: String,
}

struct Job {
    svc: BuilderService,
    ns: String,
    lease: String,
    tx: Tx,
    context: PathBuf,
    ignore: Ignore,
    /// The entitlements this build was granted.
    granted: crate::entitlements::Granted,
    /// This build's own directory under the service's scratch.
    scratch: PathBuf,
    req: api::BuildRequest,
    step: AtomicU32,
    done: Mutex<HashMap<usize, Built>>,
    /// ADD URLs fetched for this build: URL → (file, content digest).
    downloads: Mutex<HashMap<String, (PathBuf, String)>>,
    /// ADD'd repositories: `URL#REF` → the commit it named when first asked.
    commits: Mutex<HashMap<String, String>>,
    /// RUN containers being removed in the background.
    removals: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn at(df: &Dockerfile, ins: &Instruction, msg: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("{}:{}: {msg}", df.file, ins.line))
}

/// The platform build arguments BuildKit defines (host platform only).
fn platform_args() -> Vec<(&'static str, String)> {
    let arch = molde_common::host_arch().to_string();
    vec![
        ("TARGETPLATFORM", format!("linux/{arch}")),
        ("TARGETOS", "linux".into()),
        ("TARGETARCH", arch.clone()),
        ("TARGETVARIANT", String::new()),
        ("BUILDPLATFORM", format!("linux/{arch}")),
        ("BUILDOS", "linux".into()),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", String::new()),
    ]
}

impl Job {
    fn plain<T>(&self, msg: T) -> Request<T> {
        self.svc.plain(&self.ns, msg)
    }

    /// A request in this build's namespace and lease.
    fn req<T>(&self, msg: T) -> Request<T> {
        molde_common::context::request(&self.ns, Some(&self.lease), msg)
    }

    async fn send(&self, e: Event) {
        let _ = self.tx.send(Ok(api::BuildEvent { event: Some(e) })).await;
    }

    fn built(&self, stage: usize) -> Option<Built> {
        self.done.lock().ok()?.get(&stage).cloned()
    }

    async fn run(&self, df: &Dockerfile, waves: Vec<Vec<usize>>) -> Result<(), Status> {
        let mut expiry = std::collections::HashMap::new();
        expiry.insert(
            "containerd.io/gc.expire".to_string(),
            rfc3339(now_secs() + 24 * 3600),
        );
        let mut leases = LeasesClient::new(self.svc.content.clone());
        leases
            .create(self.plain(CreateLease {
                id: self.lease.clone(),
                labels: expiry,
            }))
            .await?;
        // The cache's own lease, without expiry; there already, most times.
        match leases
            .create(self.plain(CreateLease {
                id: CACHE_LEASE.into(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
        // Values of the ARGs before the first FROM, over the platform ones.
        let mut global: HashMap<String, Option<String>> = platform_args()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .collect();
        for ins in &df.global_args {
            if let Command::Arg(list) = &ins.command {
                for (k, v) in list {
                    let value = match self.req.build_args.get(k) {
                        Some(b) => Some(b.clone()),
                        None => match v {
                            Some(d) => Some(
                                crate::expand::expand(d, df.escape, &|n| global.get(n).cloned().flatten())
                                    .map_err(|e| at(df, ins, e))?,
                            ),
                            None => global.get(k).cloned().flatten(),
                        },
                    };
                    global.insert(k.clone(), value);
                }
            }
        }
        let mut last = None;
        for wave in waves {
            // Stages of one wave need only earlier waves: they run at once.
            let results =
                futures::future::try_join_all(wave.iter().map(|&s| self.stage(df, s, &global))).await?;
            for (&s, built) in wave.iter().zip(results) {
                self.done
                    .lock()
                    .map_err(|_| Status::internal("build state poisoned"))?
                    .insert(s, built);
                last = Some(s);
            }
        }
        let built = self
            .built(last.unwrap_or(0))
            .ok_or_else(|| Status::internal("no stage was built"))?;
        self.settle().await;
        self.image(built).await
    }

    /// The ONBUILD triggers a base image carries, as instructions of the
    /// child stage (reported at its FROM line).
    fn triggers(
        &self,
        df: &Dockerfile,
        from: &Instruction,
        config: &Value,
    ) -> Result<Vec<Instruction>, Status> {
        let mut out = Vec::new();
        for t in config["config"]["OnBuild"].as_array().into_iter().flatten() {
            let text = t.as_str().unwrap_or_default();
            let parsed = dockerfile::parse(&df.file, &format!("FROM scratch\n{text}\n"))
                .map_err(|e| at(df, from, format!("ONBUILD trigger {text:?}: {e}")))?;
            let Some(mut ins) = parsed
                .stages
                .first()
                .and_then(|s| s.instructions.first())
                .cloned()
            else {
                continue;
            };
            if matches!(ins.command, Command::Onbuild(_) | Command::Maintainer(_)) {
                return Err(at(
                    df,
                    from,
                    format!("ONBUILD trigger {text:?}: not allowed as a trigger"),
                ));
            }
            ins.line = from.line;
            out.push(ins);
        }
        Ok(out)
    }

    async fn stage(
        &self,
        df: &Dockerfile,
        s: usize,
        global: &HashMap<String, Option<String>>,
    ) -> Result<Built, Status> {
        let stage = &df.stages[s];
        let label = stage.name.clone().unwrap_or_else(|| s.to_string());
        let Command::From { image, .. } = &stage.from.command else {
            return Err(Status::internal("a stage without FROM"));
        };
        let lookup = |n: &str| global.get(n).cloned().flatten();
        let image = crate::expand::expand(image, df.escape, &lookup).map_err(|e| at(df, &stage.from, e))?;
        if let Some(p) = stage.from.flag("platform") {
            let p = crate::expand::expand(p, df.escape, &lookup).map_err(|e| at(df, &stage.from, e))?;
            let host = format!("linux/{}", molde_common::host_arch());
            if p != host {
                return Err(at(
                    df,
                    &stage.from,
                    format!("FROM --platform={p}: molde builds for this host's platform only ({host})"),
                ));
            }
        }
        let step = self.begin(&label, &stage.from).await;
        let started = Instant::now();
        let mut built = if image == "scratch" {
            Built {
                config: json!({ "architecture": molde_common::host_arch(), "os": "linux", "config": {} }),
                layers: Vec::new(),
                diff_ids: Vec::new(),
                top: String::new(),
            }
        } else if let Some(prev) = df
            .stage(&image)
            .filter(|p| p.index < s && p.name.is_some())
            .and_then(|p| self.built(p.index))
        {
            prev
        } else {
            self.base(&image, self.req.pull)
                .await
                .map_err(|e| at(df, &stage.from, e.message()))?
        };
        self.finish(step, false, started).await;
        let mut instructions = self.triggers(df, &stage.from, &built.config)?;
        instructions.extend(stage.instructions.iter().cloned());
        let mut base_config = built.config["config"].as_object().cloned().unwrap_or_default();
        // Triggers run once, in the child; they are not inherited further.
        base_config.remove("OnBuild");
        let mut state = StageState::new(base_config, df.escape);
        let build_args: HashMap<String, String> = self.req.build_args.clone().into_iter().collect();
        let mut key = cache::step_key("", &format!("FROM {image}"), &[], Some(&built.top));
        for ins in &instructions {
            let step = self.begin(&label, ins).await;
            let started = Instant::now();
            // Again here: ONBUILD triggers come from the base image.
            self.granted.check(ins).map_err(|e| at(df, ins, e))?;
            let what = state
                .apply(ins, &build_args, global)
                .map_err(|e| at(df, ins, e))?;
            let mounts = match &what {
                Step::Run { cwd, .. } => ins
                    .flags_named("mount")
                    .map(|m| crate::mounts::parse(m, cwd))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(df, ins, e))?,
                _ => Vec::new(),
            };
            // The step's key: its parent's, what it does once expanded (a
            // RUN's argv, env, directory and user), its flags and its inputs.
            let inputs = self.inputs(df, ins, &what, &mounts).await?;
            let text = format!(
                "{:?}|{:?}|{}",
                ins.flags,
                state.key_of(&what),
                self.req.compression
            );
            key = cache::step_key(&key, &text, &[], inputs.as_deref());
            tracing::debug!(step = %ins.original, key = %key, "build step");
            if what != Step::Metadata
                && !self.req.no_cache
                && let Some(layer) = self.cached(&key).await
            {
                built = add_layer(built, layer);
                self.finish(step, true, started).await;
                continue;
            }
            match what {
                Step::Metadata => {}
                Step::Run {
                    argv,
                    mut env,
                    cwd,
                    user,
                    script,
                } => {
                    if !env.iter().any(|e| e.starts_with("PATH=")) {
                        env.push(DEFAULT_PATH.into());
                    }
                    let network = match ins.flag("network") {
                        None | Some("default") => "bridge",
                        Some("none") => "none",
                        Some("host") => "host",
                        Some(other) => {
                            return Err(at(
                                df,
                                ins,
                                format!("RUN --network={other}: expected default, none or host"),
                            ));
                        }
                    };
                    let run = RunStep {
                        argv,
                        env,
                        cwd,
                        user,
                        network,
                        script,
                        mounts,
                    };
                    let layer = self.run_step(df, ins, step, &built.top, run).await?;
                    self.remember(&key, &layer).await;
                    built = add_layer(built, layer);
                }
                Step::Copy { srcs, dest, inline } => {
                    // --link: the files make a layer of their own, cached
                    // whatever lies below, then stacked on the stage.
                    // (--chown by name needs the stage's /etc/passwd.)
                    let link = ins.flag("link").is_some_and(|v| v != "false")
                        && ins
                            .flag("chown")
                            .is_none_or(|c| c.split(':').all(|p| p.parse::<u32>().is_ok()));
                    if link {
                        let alone_key = cache::step_key("link", &text, &[], inputs.as_deref());
                        let cached = if self.req.no_cache {
                            None
                        } else {
                            self.cached(&alone_key).await
                        };
                        let hit = cached.is_some();
                        let alone = match cached {
                            Some(l) => l,
                            None => {
                                let l = self.copy_step(df, ins, "", srcs, dest, inline).await?;
                                self.remember(&alone_key, &l).await;
                                l
                            }
                        };
                        let layer = self.rebase(alone, &built.top).await?;
                        self.remember(&key, &layer).await;
                        built = add_layer(built, layer);
                        self.finish(step, hit, started).await;
                        continue;
                    }
                    let layer = self.copy_step(df, ins, &built.top, srcs, dest, inline).await?;
                    self.remember(&key, &layer).await;
                    built = add_layer(built, layer);
                }
            }
            self.finish(step, false, started).await;
        }
        // The stage's config and history.
        let mut config = built.config.clone();
        config["config"] = Value::Object(state.config.clone());
        if let Some(a) = &state.author {
            config["author"] = json!(a);
        }
        let mut history = config["history"].as_array().cloned().unwrap_or_default();
        // Layer entries of this stage line up with the layers it added.
        history.extend(state.history.iter().cloned());
        config["history"] = json!(history);
        built.config = config;
        Ok(built)
    }

    /// The top layer of the stage or image a `--from` names.
    async fn source_top(&self, df: &Dockerfile, ins: &Instruction, from: &str) -> Result<String, Status> {
        Ok(match df.stage(from).and_then(|s| self.built(s.index)) {
            Some(b) => b.top,
            None => {
                self.base(from, false)
                    .await
                    .map_err(|e| at(df, ins, e.message()))?
                    .top
            }
        })
    }

    /// A read-only view of the rootfs of the stage or image `from` names
    /// (removed with `held`).
    async fn view(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        from: &str,
        held: &mut Held,
    ) -> Result<Vec<Mount>, Status> {
        let top = self.source_top(df, ins, from).await?;
        let key = format!("build-view-{}", uuid::Uuid::new_v4().simple());
        let mounts = SnapshotsClient::new(self.svc.snapshotter.clone())
            .view(self.req(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: top,
                labels: Default::default(),
            }))
            .await?
            .into_inner()
            .mounts;
        held.views.push(key);
        Ok(mounts)
    }

    /// The digest of context paths, as the cache sees them.
    async fn context_digest(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        srcs: Vec<String>,
    ) -> Result<String, Status> {
        let (context, ignore) = (self.context.clone(), self.ignore.clone());
        tokio::task::spawn_blocking(move || {
            let paths = cache::resolve_sources(&context, &srcs, &ignore)?;
            cache::digest_sources(&context, &paths, &ignore)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| at(df, ins, e))
    }

    /// What a step reads besides its parent: the digest of its context
    /// sources or downloads, the top layer of the stage or image it copies
    /// from, and what its bind mounts show.
    async fn inputs(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        what: &Step,
        mounts: &[RunMount],
    ) -> Result<Option<String>, Status> {
        match what {
            Step::Metadata => Ok(None),
            Step::Run { .. } => {
                let mut parts = Vec::new();
                for m in mounts {
                    if let RunMount::Bind { source, from, .. } = m {
                        parts.push(match from {
                            Some(f) => format!("bind {source} from {}", self.source_top(df, ins, f).await?),
                            None => format!(
                                "bind {source} {}",
                                self.context_digest(df, ins, vec![source.clone()]).await?
                            ),
                        });
                    }
                }
                Ok((!parts.is_empty()).then(|| parts.join("|")))
            }
            Step::Copy { srcs, .. } => {
                if let Some(from) = ins.flag("from") {
                    return Ok(Some(format!("from {}", self.source_top(df, ins, from).await?)));
                }
                if srcs.is_empty() {
                    return Ok(None);
                }
                if let Some(g) = self.git_source(df, ins, srcs)? {
                    let commit = self.git_commit(df, ins, &g).await?;
                    return Ok(Some(format!(
                        "git {} {commit} {} keep={:?}",
                        g.url,
                        g.subdir,
                        ins.flag("keep-git-dir")
                    )));
                }
                if srcs.iter().any(|s| is_url(s)) {
                    let mut parts = Vec::new();
                    for u in srcs {
                        let (_, digest) = self.download(df, ins, u).await?;
                        parts.push(format!("{u} {digest}"));
                    }
                    return Ok(Some(parts.join("|")));
                }
                Ok(Some(self.context_digest(df, ins, srcs.clone()).await?))
            }
        }
    }

    /// The repository an ADD names, if it names one (then as its only source).
    fn git_source(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        srcs: &[String],
    ) -> Result<Option<crate::git::Source>, Status> {
        if !matches!(ins.command, Command::Add { .. }) {
            return Ok(None);
        }
        let gits: Vec<_> = srcs.iter().filter_map(|s| crate::git::parse(s)).collect();
        match (gits.len(), srcs.len()) {
            (0, _) => Ok(None),
            (1, 1) => Ok(gits.into_iter().next()),
            _ => Err(at(df, ins, "ADD of a git repository takes it as its only source")),
        }
    }

    /// The commit a repository's ref names, looked up once per build and
    /// checked against `--checksum` when given.
    async fn git_commit(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        g: &crate::git::Source,
    ) -> Result<String, Status> {
        let key = format!("{}#{}", g.url, g.reference);
        if let Some(c) = self.commits.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let commit = crate::git::resolve(g)
            .await
            .map_err(|e| at(df, ins, format!("ADD {}: {e}", g.url)))?;
        if let Some(want) = ins.flag("checksum")
            && !commit.starts_with(want)
        {
            return Err(at(
                df,
                ins,
                format!(
                    "ADD {}: checksum mismatch: --checksum={want}, the ref is at {commit}",
                    g.url
                ),
            ));
        }
        if let Ok(mut m) = self.commits.lock() {
            m.insert(key, commit.clone());
        }
        Ok(commit)
    }

    /// Fetches an ADD URL once per build (bounded in time), checking
    /// `--checksum` when given. Returns the file and its digest.
    async fn download(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        url: &str,
    ) -> Result<(PathBuf, String), Status> {
        if let Some(d) = self.downloads.lock().ok().and_then(|m| m.get(url).cloned()) {
            return Ok(d);
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| at(df, ins, format!("ADD {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(at(
                df,
                ins,
                format!("ADD {url}: the server answered {}", resp.status()),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| at(df, ins, format!("ADD {url}: {e}")))?;
        let digest = Digest::of(Algorithm::Sha256, &body).to_string();
        if let Some(want) = ins.flag("checksum")
            && want != digest
        {
            return Err(at(
                df,
                ins,
                format!("ADD {url}: checksum mismatch: --checksum={want}, the download is {digest}"),
            ));
        }
        let dir = self.scratch.join("downloads");
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        let file = dir.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&file, &body).map_err(|e| Status::internal(e.to_string()))?;
        if let Ok(mut m) = self.downloads.lock() {
            m.insert(url.to_string(), (file.clone(), digest.clone()));
        }
        Ok((file, digest))
    }

    fn cache_file(&self, key: &str) -> PathBuf {
        self.svc
            .cache
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    /// A layer an earlier build made for this key, if its blob and snapshot are still here.
    async fn cached(&self, key: &str) -> Option<(Value, String, String)> {
        let path = self.cache_file(key);
        let raw = std::fs::read(&path).ok()?;
        let rec: Value = serde_json::from_slice(&raw).ok()?;
        let (layer, diff_id, top) = (
            rec["layer"].clone(),
            rec["diff_id"].as_str()?.to_string(),
            rec["top"].as_str()?.to_string(),
        );
        // Held by this build first, then checked: once both are found, no
        // prune or collection can take them from under the build.
        self.hold(&top, &format!("snapshots/{SNAPSHOTTER}")).await.ok()?;
        self.hold(layer["digest"].as_str()?, "content").await.ok()?;
        ContentClient::new(self.svc.content.clone())
            .info(
                self.plain(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: layer["digest"].as_str()?.to_string(),
                }),
            )
            .await
            .ok()?;
        SnapshotsClient::new(self.svc.snapshotter.clone())
            .stat(self.plain(
                molde_api::containerd::services::snapshots::v1::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: top.clone(),
                },
            ))
            .await
            .ok()?;
        // Used now: the last to be pruned.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some((layer, diff_id, top))
    }

    /// Records a step's layer under its key (written whole, then renamed) and
    /// holds the layer in the cache's lease until the record is pruned.
    async fn remember(&self, key: &str, layer: &(Value, String, String)) {
        let mut leases = LeasesClient::new(self.svc.content.clone());
        for (id, kind) in [
            (
                layer.0["digest"].as_str().unwrap_or_default().to_string(),
                "content".to_string(),
            ),
            (layer.2.clone(), format!("snapshots/{SNAPSHOTTER}")),
        ] {
            if leases
                .add_resource(self.plain(AddResourceRequest {
                    id: CACHE_LEASE.into(),
                    resource: Some(Resource { id, r#type: kind }),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
        let rec = json!({ "layer": layer.0, "diff_id": layer.1, "top": layer.2, "namespace": self.ns });
        let path = self.cache_file(key);
        let tmp = path.with_extension("tmp");
        let _ = std::fs::create_dir_all(&self.svc.cache);
        if std::fs::write(&tmp, rec.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    async fn begin(&self, stage: &str, ins: &Instruction) -> u32 {
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        self.send(Event::Started(api::StepStarted {
            step,
            stage: stage.to_string(),
            instruction: ins.original.clone(),
            line: ins.line as u32,
        }))
        .await;
        step
    }

    async fn finish(&self, step: u32, cached: bool, started: Instant) {
        self.send(Event::Done(api::StepDone {
            step,
            cached,
            micros: started.elapsed().as_micros() as u64,
        }))
        .await;
    }

    /// The image a FROM names, with its config, layers and top chain ID;
    /// with `pull`, fetched from its registry first.
    async fn base(&self, name: &str, pull: bool) -> Result<Built, Status> {
        let full = molde_common::reference::normalize(name);
        if pull {
            self.pull(name, &full).await?;
        }
        let img = match self.find_image(name, &full).await? {
            Some(img) => img,
            // As docker does: an image that is not here is pulled.
            None if !pull => {
                self.pull(name, &full).await?;
                self.find_image(name, &full).await?.ok_or_else(|| {
                    Status::not_found(format!("FROM {name}: no image {full} here after pulling it"))
                })?
            }
            None => return Err(Status::not_found(format!("FROM {name}: no image {full} here"))),
        };
        let target = img.target.unwrap_or_default();
        let mut manifest: Value = self.read_json(&target.digest).await?;
        if let Some(ms) = manifest.get("manifests").and_then(Value::as_array) {
            let m = ms
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux"
                        && m["platform"]["architecture"] == molde_common::host_arch()
                })
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "FROM {name}: no manifest for linux/{}",
                        molde_common::host_arch()
                    ))
                })?;
            let d = m["digest"].as_str().unwrap_or_default().to_string();
            manifest = self.read_json(&d).await?;
        }
        let config: Value = self
            .read_json(manifest["config"]["digest"].as_str().unwrap_or_default())
            .await?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let top = molde_common::chain_ids(&diff_ids).pop().unwrap_or_default();
        let layers = manifest["layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| json!({"mediaType": l["mediaType"], "digest": l["digest"], "size": l["size"]}))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Built {
            config,
            layers,
            diff_ids,
            top,
        })
    }

    async fn find_image(&self, name: &str, full: &str) -> Result<Option<Image>, Status> {
        for candidate in [name.to_string(), full.to_string()] {
            match ImagesClient::new(self.svc.content.clone())
                .get(self.plain(GetImageRequest { name: candidate }))
                .await
            {
                Ok(r) => return Ok(r.into_inner().image),
                Err(s) if s.code() == tonic::Code::NotFound => continue,
                Err(s) => return Err(s),
            }
        }
        Ok(None)
    }

    /// Pulls a FROM image through transfer.v1, with the credentials the
    /// client sent for its registry.
    async fn pull(&self, name: &str, full: &str) -> Result<(), Status> {
        let failed = |e: Status| {
            Status::failed_precondition(format!(
                "FROM {name}: {full} is not here and pulling it failed: {}",
                e.message()
            ))
        };
        let mut s = TransferClient::new(self.svc.content.clone())
            .pull(
                self.plain(PullRequest {
                    reference: full.to_string(),
                    auth: full
                        .split('/')
                        .next()
                        .and_then(|registry| self.req.registry_auth.get(registry))
                        .cloned(),
                    ..Default::default()
                }),
            )
            .await
            .map_err(failed)?
            .into_inner();
        while s.message().await.map_err(failed)?.is_some() {}
        Ok(())
    }

    async fn read_json(&self, digest: &str) -> Result<Value, Status> {
        let mut s = ContentClient::new(self.svc.content.clone())
            .read(self.plain(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            out.extend_from_slice(&m?.data);
        }
        serde_json::from_slice(&out).map_err(|e| Status::data_loss(format!("{digest}: {e}")))
    }

    async fn write_blob(
        &self,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<(String, i64), Status> {
        let digest = Digest::of(Algorithm::Sha256, &bytes).to_string();
        let size = bytes.len() as i64;
        let msgs = vec![
            WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: format!("build-{digest}"),
                total: size,
                expected: digest.clone(),
                ..Default::default()
            },
            WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset: 0,
                total: size,
                expected: digest.clone(),
                data: bytes.into(),
                labels,
                ..Default::default()
            },
        ];
        let stream = tokio_stream::iter(msgs);
        match ContentClient::new(self.svc.content.clone())
            .write(self.req(stream))
            .await
        {
            Ok(r) => {
                let mut s = r.into_inner();
                loop {
                    match s.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) if e.code() == tonic::Code::AlreadyExists => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        Ok((digest, size))
    }

    async fn prepare(&self, key: &str, parent: &str) -> Result<Vec<Mount>, Status> {
        Ok(SnapshotsClient::new(self.svc.snapshotter.clone())
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
                parent: parent.into(),
                labels: Default::default(),
            }))
            .await?
            .into_inner()
            .mounts)
    }

    async fn remove_snapshot(&self, key: &str) {
        let _ = SnapshotsClient::new(self.svc.snapshotter.clone())
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
    }

    /// Commits active snapshot `key` as `name`; when the same layer on the
    /// same parent was committed before, that one is kept and `key` dropped.
    async fn commit_as(&self, key: &str, name: &str) -> Result<(), Status> {
        match SnapshotsClient::new(self.svc.snapshotter.clone())
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: name.into(),
                key: key.into(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.remove_snapshot(key).await;
                Ok(())
            }
            Err(s) => Err(s),
        }
    }

    /// Puts a resource (`content`, `snapshots/overlayfs`) in this build's lease.
    async fn hold(&self, id: &str, kind: &str) -> Result<(), Status> {
        LeasesClient::new(self.svc.content.clone())
            .add_resource(self.plain(AddResourceRequest {
                id: self.lease.clone(),
                resource: Some(Resource {
                    id: id.into(),
                    r#type: kind.into(),
                }),
            }))
            .await
            .map(|_| ())
    }

    /// The layer of active snapshot `key` over `parent`: diffed into content,
    /// committed under its chain ID (held by the build's lease).
    async fn commit_layer(&self, key: &str, parent: &str) -> Result<(Value, String, String), Status> {
        let mounts = SnapshotsClient::new(self.svc.snapshotter.clone())
            .mounts(
                self.req(molde_api::containerd::services::snapshots::v1::MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.into(),
                }),
            )
            .await?
            .into_inner()
            .mounts;
        let desc = DiffClient::new(self.svc.snapshotter.clone())
            .diff(
                self.req(DiffRequest {
                    left: Vec::new(),
                    right: mounts,
                    media_type: if self.req.compression == "zstd" {
                        "application/vnd.oci.image.layer.v1.tar+zstd"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    }
                    .into(),
                    r#ref: format!("build-layer-{key}"),
                    labels: Default::default(),
                    source_date_epoch: None,
                }),
            )
            .await?
            .into_inner()
            .diff
            .unwrap_or_default();
        // The uncompressed digest is a label of the layer's content.
        let info = ContentClient::new(self.svc.content.clone())
            .info(
                self.plain(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: desc.digest.clone(),
                }),
            )
            .await?
            .into_inner()
            .info
            .unwrap_or_default();
        let diff_id = info
            .labels
            .get("containerd.io/uncompressed")
            .cloned()
            .ok_or_else(|| {
                Status::internal(format!("layer {} has no uncompressed digest label", desc.digest))
            })?;
        let name = molde_common::chain_id(parent, &diff_id);
        self.commit_as(key, &name).await?;
        self.hold(&name, &format!("snapshots/{SNAPSHOTTER}")).await?;
        let layer = json!({ "mediaType": desc.media_type, "digest": desc.digest, "size": desc.size });
        Ok((layer, diff_id, name))
    }

    /// A layer made on its own (over nothing) stacked on `parent`: its blob
    /// applied by diff.v1 onto a snapshot over `parent`, committed under the
    /// chain ID (kept when it is already there).
    async fn rebase(
        &self,
        alone: (Value, String, String),
        parent: &str,
    ) -> Result<(Value, String, String), Status> {
        let (desc, diff_id, _) = alone;
        if parent.is_empty() {
            let top = molde_common::chain_id("", &diff_id);
            return Ok((desc, diff_id, top));
        }
        let name = molde_common::chain_id(parent, &diff_id);
        let exists = SnapshotsClient::new(self.svc.snapshotter.clone())
            .stat(self.plain(
                molde_api::containerd::services::snapshots::v1::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: name.clone(),
                },
            ))
            .await
            .is_ok();
        if !exists {
            let key = format!("build-{}", uuid::Uuid::new_v4().simple());
            let result = async {
                let mounts = self.prepare(&key, parent).await?;
                DiffClient::new(self.svc.snapshotter.clone())
                    .apply(self.req(ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: desc["mediaType"].as_str().unwrap_or_default().to_string(),
                            digest: desc["digest"].as_str().unwrap_or_default().to_string(),
                            size: desc["size"].as_i64().unwrap_or_default(),
                            annotations: Default::default(),
                        }),
                        mounts,
                        payloads: Default::default(),
                        sync_fs: false,
                    }))
                    .await?;
                self.commit_as(&key, &name).await
            }
            .await;
            if result.is_err() {
                self.remove_snapshot(&key).await;
            }
            result?;
        }
        self.hold(&name, &format!("snapshots/{SNAPSHOTTER}")).await?;
        Ok((desc, diff_id, name))
    }

    /// Host-side sources for a RUN's mounts and script, as runtime volumes and
    /// tmpfs paths. Views and directories made here are recorded in `held`.
    async fn run_mounts(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        run: &RunStep,
        held: &mut Held,
    ) -> Result<RunExtras, Status> {
        let dir = self
            .scratch
            .join(format!("run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        held.dirs.push(dir.clone());
        let fail = |e: std::io::Error| Status::internal(format!("preparing RUN mounts: {e}"));
        let (mut volumes, mut tmpfs, mut env) = (Vec::new(), Vec::new(), Vec::new());
        if let (Some(script), Some(target)) = (&run.script, run.argv.first()) {
            let file = dir.join("script");
            std::fs::write(&file, script).map_err(fail)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
            volumes.push(format!("{}:{target}:ro", file.display()));
        }
        for (i, m) in run.mounts.iter().enumerate() {
            match m {
                RunMount::Tmpfs { target, size } => tmpfs.push(match size {
                    Some(n) => format!("{target}:size={n}"),
                    None => target.clone(),
                }),
                RunMount::Cache {
                    target,
                    id,
                    mode,
                    uid,
                    gid,
                    read_only,
                    sharing,
                    from,
                    source,
                } => {
                    let name = Digest::of(Algorithm::Sha256, format!("{}/{id}", self.ns).as_bytes());
                    let mut host = self.svc.cache_mounts.join(&name.hex()[..32]);
                    let lock = {
                        let mut locks = CACHE_LOCKS
                            .lock()
                            .map_err(|_| Status::internal("cache locks poisoned"))?;
                        locks.entry(host.clone()).or_default().clone()
                    };
                    match sharing {
                        Sharing::Shared => {}
                        Sharing::Locked => held.locks.push(lock.lock_owned().await),
                        Sharing::Private => match lock.try_lock_owned() {
                            Ok(g) => held.locks.push(g),
                            // In use: this RUN gets a directory of its own.
                            Err(_) => host = dir.join(format!("private-{i}")),
                        },
                    }
                    if !host.exists() {
                        if let Some(f) = from {
                            // A new cache starts as a copy of `source` there.
                            let mounts = self.view(df, ins, f, held).await?;
                            let at_dir = dir.join(format!("seed-{i}"));
                            std::fs::create_dir_all(&at_dir).map_err(fail)?;
                            crate::copy::mount(&mounts, &at_dir, true).map_err(|e| at(df, ins, e))?;
                            held.mounted.push(at_dir.clone());
                            let (source, to) = (source.clone(), host.clone());
                            tokio::task::spawn_blocking(move || {
                                crate::copy::copy_tree(&at_dir, &source, &to, &Ignore::default())
                            })
                            .await
                            .map_err(|e| Status::internal(e.to_string()))?
                            .map_err(|e| at(df, ins, e))?;
                        } else {
                            std::fs::create_dir_all(&host).map_err(fail)?;
                            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(*mode))
                                .map_err(fail)?;
                            std::os::unix::fs::chown(&host, Some(*uid), Some(*gid)).map_err(fail)?;
                        }
                    }
                    let ro = if *read_only { ":ro" } else { "" };
                    volumes.push(format!("{}:{target}{ro}", host.display()));
                }
                RunMount::Secret {
                    id,
                    target,
                    env: var,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(data) = self.req.secrets.get(id) else {
                        if *required {
                            return Err(at(
                                df,
                                ins,
                                format!(
                                    "secret {id:?} is required but was not given (--secret id={id},src=FILE)"
                                ),
                            ));
                        }
                        continue;
                    };
                    if let Some(var) = var {
                        // In the RUN's environment only, never the image's.
                        env.push(format!("{var}={}", String::from_utf8_lossy(data)));
                    }
                    if target.is_empty() {
                        continue;
                    }
                    let file = dir.join(format!("secret-{i}"));
                    std::fs::write(&file, data).map_err(fail)?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).map_err(fail)?;
                    std::os::unix::fs::chown(&file, Some(*uid), Some(*gid)).map_err(fail)?;
                    volumes.push(format!("{}:{target}:ro", file.display()));
                }
                RunMount::Ssh { id, target, required } => {
                    let Some(sock) = self.req.ssh.get(id) else {
                        if *required {
                            return Err(at(
                                df,
                                ins,
                                format!("SSH agent {id:?} is required but was not forwarded (--ssh {id})"),
                            ));
                        }
                        continue;
                    };
                    use std::os::unix::fs::FileTypeExt;
                    if !std::fs::metadata(sock).is_ok_and(|m| m.file_type().is_socket()) {
                        return Err(at(
                            df,
                            ins,
                            format!("--ssh {id}: {sock} is not a socket the daemon can reach"),
                        ));
                    }
                    volumes.push(format!("{sock}:{target}"));
                    env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                RunMount::Bind {
                    target,
                    source,
                    from,
                    rw,
                } => {
                    let root = match from {
                        None => self.context.clone(),
                        Some(f) => {
                            let mounts = self.view(df, ins, f, held).await?;
                            let at_dir = dir.join(format!("from-{i}"));
                            std::fs::create_dir_all(&at_dir).map_err(fail)?;
                            crate::copy::mount(&mounts, &at_dir, true).map_err(|e| at(df, ins, e))?;
                            held.mounted.push(at_dir.clone());
                            at_dir
                        }
                    };
                    let src = crate::copy::scoped(&root, source, true).map_err(|e| at(df, ins, e))?;
                    if std::fs::symlink_metadata(&src).is_err() {
                        return Err(at(df, ins, format!("--mount source {source:?} does not exist")));
                    }
                    // Writes to a rw bind land in a copy; the context is only
                    // shown as .dockerignore leaves it.
                    let shown = if *rw || (from.is_none() && !self.ignore.is_empty()) {
                        let copy = dir.join(format!("bind-{i}"));
                        let ignore = if from.is_none() {
                            self.ignore.clone()
                        } else {
                            Ignore::default()
                        };
                        let (root, source) = (root.clone(), source.clone());
                        let c = copy.clone();
                        tokio::task::spawn_blocking(move || {
                            crate::copy::copy_tree(&root, &source, &c, &ignore)
                        })
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| at(df, ins, e))?;
                        copy
                    } else {
                        src
                    };
                    let ro = if *rw { "" } else { ":ro" };
                    volumes.push(format!("{}:{target}{ro}", shown.display()));
                }
            }
        }
        Ok(RunExtras { volumes, tmpfs, env })
    }

    async fn release(&self, held: Held) {
        for m in held.mounted.iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        for v in &held.views {
            self.remove_snapshot(v).await;
        }
        for d in &held.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    async fn run_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        step: u32,
        parent: &str,
        mut run: RunStep,
    ) -> Result<(Value, String, String), Status> {
        let mut held = Held::default();
        let result = match self.run_mounts(df, ins, &run, &mut held).await {
            Ok(x) => {
                run.env.extend(x.env);
                self.run_container(df, ins, step, parent, run, x.volumes, x.tmpfs)
                    .await
            }
            Err(s) => Err(s),
        };
        self.release(held).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_container(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        step: u32,
        parent: &str,
        run: RunStep,
        volumes: Vec<String>,
        tmpfs: Vec<String>,
    ) -> Result<(Value, String, String), Status> {
        let id = format!("build-{}", uuid::Uuid::new_v4().simple());
        let mut rt = RuntimeClient::new(self.svc.runtime.clone());
        // Mount points the runtime makes that are not the step's work.
        let mut stubs: Vec<String> = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        stubs.extend(
            run.mounts
                .iter()
                .map(|m| m.target().to_string())
                .filter(|t| !t.is_empty()),
        );
        let events = rt
            .run(self.req(RunRequest {
                image: String::new(),
                name: id.clone(),
                entrypoint: run.argv,
                entrypoint_set: true,
                env: run.env,
                workdir: run.cwd,
                user: run.user,
                network: run.network.into(),
                rootfs_parent: parent.into(),
                rootfs_parent_set: true,
                workdir_for_user: true,
                volumes,
                tmpfs,
                ..Default::default()
            }))
            .await;
        let mut events = match events {
            Ok(r) => r.into_inner(),
            Err(s) => {
                // A container that could not start is not kept.
                let _ = rt
                    .remove(self.req(RemoveRequest {
                        id: id.clone(),
                        force: true,
                    }))
                    .await;
                return Err(at(df, ins, s.message()));
            }
        };
        let mut status = None;
        let mut output = Vec::new();
        while let Some(m) = events.message().await.map_err(|s| at(df, ins, s.message()))? {
            match m.event {
                Some(run_event::Event::Output(o)) => {
                    output.extend_from_slice(&o.data);
                    self.send(Event::Log(api::StepLog { step, data: o.data })).await;
                }
                Some(run_event::Event::Exited(x)) => status = Some(x.status),
                _ => {}
            }
        }
        let status = status.unwrap_or(255);
        if status != 0 {
            let _ = rt
                .remove(self.req(RemoveRequest {
                    id: id.clone(),
                    force: true,
                }))
                .await;
            let tail = String::from_utf8_lossy(&output);
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(at(
                df,
                ins,
                format!(
                    "{} failed with exit code {status}\n{}",
                    ins.original,
                    tail.join("\n")
                ),
            ));
        }
        // The container's rootfs snapshot (key = its id) is the step's layer.
        if let Ok(m) = SnapshotsClient::new(self.svc.snapshotter.clone())
            .mounts(
                self.req(molde_api::containerd::services::snapshots::v1::MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                }),
            )
            .await
        {
            crate::mounts::remove_stubs(&m.into_inner().mounts, &stubs);
        }
        let layer = self.commit_layer(&id, parent).await;
        // The container goes while the next steps run; the build waits for
        // it before it ends (`settle`).
        let req = self.req(RemoveRequest { id, force: true });
        let handle = tokio::spawn(async move {
            let _ = rt.remove(req).await;
        });
        if let Ok(mut r) = self.removals.lock() {
            r.push(handle);
        }
        layer
    }

    /// Waits for the RUN containers still being removed.
    async fn settle(&self) {
        let pending: Vec<_> = self
            .removals
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for h in pending {
            let _ = h.await;
        }
    }

    async fn copy_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        parent: &str,
        srcs: Vec<String>,
        dest: String,
        inline: Vec<(String, String)>,
    ) -> Result<(Value, String, String), Status> {
        let is_add = matches!(ins.command, Command::Add { .. });
        let git = self.git_source(df, ins, &srcs)?;
        if ins.flag("checksum").is_some()
            && !(is_add && srcs.iter().all(|s| is_url(s) || git.is_some()) && !srcs.is_empty())
        {
            return Err(at(df, ins, "--checksum is only for ADD of a URL"));
        }
        if ins.flag("keep-git-dir").is_some() && git.is_none() {
            return Err(at(df, ins, "--keep-git-dir is only for ADD of a git repository"));
        }
        let mut held = Held::default();
        let mut dest = dest;
        // Where the sources come from: the context, a stage's rootfs, the
        // heredocs or the downloads written for this step.
        let mut src_root = self.context.clone();
        let mut ignore = self.ignore.clone();
        let mut srcs = srcs;
        let mut chmod = ins.flag("chmod").map(str::to_string);
        let mut extract = is_add;
        let mut from_mounts = Vec::new();
        if let Some(g) = git {
            // The repository's files (or its SUBDIR's) go into the destination.
            let commit = self.git_commit(df, ins, &g).await?;
            let dir = self
                .scratch
                .join(format!("git-{}", uuid::Uuid::new_v4().simple()));
            held.dirs.push(dir.clone());
            let keep = ins.flag("keep-git-dir").is_some_and(|v| v != "false");
            crate::git::fetch(&g, &commit, &dir, keep)
                .await
                .map_err(|e| at(df, ins, format!("ADD {}: {e}", g.url)))?;
            src_root = dir;
            ignore = Ignore::default();
            srcs = vec![if g.subdir.is_empty() {
                ".".into()
            } else {
                g.subdir.clone()
            }];
            extract = false;
            if !dest.ends_with('/') {
                dest.push('/');
            }
        } else if !inline.is_empty() || srcs.iter().any(|s| is_url(s)) {
            if srcs.iter().any(|s| !is_url(s)) {
                return Err(at(df, ins, "URLs cannot be mixed with files from the context"));
            }
            let dir = self
                .scratch
                .join(format!("inline-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
            held.dirs.push(dir.clone());
            let mut names = Vec::new();
            for (name, body) in &inline {
                let f = dir.join(name);
                std::fs::write(&f, body).map_err(|e| Status::internal(e.to_string()))?;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| Status::internal(e.to_string()))?;
                names.push(name.clone());
            }
            for u in &srcs {
                let (file, _) = self.download(df, ins, u).await?;
                let name = url_file_name(u);
                std::fs::copy(&file, dir.join(&name)).map_err(|e| Status::internal(e.to_string()))?;
                names.push(name);
                // Downloads get 0600, and are never unpacked.
                chmod.get_or_insert_with(|| "600".into());
                extract = false;
            }
            src_root = dir;
            ignore = Ignore::default();
            srcs = names;
        } else if let Some(from) = ins.flag("from") {
            from_mounts = self.view(df, ins, from, &mut held).await?;
            ignore = Ignore::default();
        }
        let key = format!("build-{}", uuid::Uuid::new_v4().simple());
        let result = async {
            let mounts = self.prepare(&key, parent).await?;
            let dir = self.scratch.join(&key);
            let chown = ins.flag("chown").map(str::to_string);
            let original = ins.original.clone();
            let parents = ins.flag("parents").is_some_and(|v| v != "false");
            let exclude = Ignore::parse(&ins.flags_named("exclude").collect::<Vec<_>>().join("\n"));
            let copied = tokio::task::spawn_blocking(move || {
                crate::copy::into_snapshot(&crate::copy::CopyJob {
                    scratch: &dir,
                    mounts: &mounts,
                    from: &from_mounts,
                    context: &src_root,
                    ignore: &ignore,
                    srcs: &srcs,
                    dest: &dest,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude: &exclude,
                    parents,
                    extract,
                })
                .map_err(|e| format!("{original}: {e}"))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            copied.map_err(|e| at(df, ins, e))?;
            self.commit_layer(&key, parent).await
        }
        .await;
        if result.is_err() {
            self.remove_snapshot(&key).await;
        }
        self.release(held).await;
        result
    }

    /// Writes the config and manifest and names the image.
    async fn image(&self, built: Built) -> Result<(), Status> {
        let mut config = built.config;
        config["rootfs"] = json!({ "type": "layers", "diff_ids": built.diff_ids });
        config["created"] = json!(rfc3339(now_secs()));
        config["architecture"] = json!(
            config["architecture"]
                .as_str()
                .unwrap_or(molde_common::host_arch())
        );
        config["os"] = json!("linux");
        if !self.req.labels.is_empty() {
            let mut labels = config["config"]["Labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (k, v) in &self.req.labels {
                labels.insert(k.clone(), json!(v));
            }
            config["config"]["Labels"] = Value::Object(labels);
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| Status::internal(e.to_string()))?;
        let mut labels = HashMap::new();
        if !built.top.is_empty() {
            labels.insert(
                format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                built.top.clone(),
            );
        }
        let (config_digest, config_size) = self.write_blob(config_bytes, labels).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": { "mediaType": CONFIG, "digest": config_digest, "size": config_size },
            "layers": built.layers,
        });
        let mut labels = HashMap::new();
        labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest.clone(),
        );
        for (i, l) in built.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                l["digest"].as_str().unwrap_or_default().to_string(),
            );
        }
        let bytes = serde_json::to_vec(&manifest).map_err(|e| Status::internal(e.to_string()))?;
        let (digest, size) = self.write_blob(bytes, labels).await?;
        let mut tags = Vec::new();
        for t in &self.req.tags {
            let image = Image {
                name: t.clone(),
                labels: Default::default(),
                target: Some(Descriptor {
                    media_type: MANIFEST.into(),
                    digest: digest.clone(),
                    size,
                    annotations: Default::default(),
                }),
                created_at: None,
                updated_at: None,
            };
            let mut images = ImagesClient::new(self.svc.content.clone());
            match images
                .create(self.plain(CreateImageRequest {
                    image: Some(image.clone()),
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::AlreadyExists => {
                    images
                        .update(self.plain(UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                        }))
                        .await?;
                }
                Err(s) => return Err(s),
            }
            tags.push(t.clone());
        }
        self.send(Event::Image(api::ImageDone {
            digest,
            config_digest,
            tags,
        }))
        .await;
        Ok(())
    }
}

/// What a RUN runs, and how.
struct RunStep {
    argv: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: String,
    network: &'static str,
    script: Option<String>,
    mounts: Vec<RunMount>,
}

/// What a RUN's mounts add to its container: runtime volumes
/// (`SRC:DST[:ro]`), tmpfs paths (`PATH[:OPTIONS]`), environment (secrets
/// given as `env=`).
struct RunExtras {
    volumes: Vec<String>,
    tmpfs: Vec<String>,
    env: Vec<String>,
}

/// Cache mount directories RUNs with `sharing=locked|private` hold.
static CACHE_LOCKS: Mutex<BTreeMap<PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>> =
    Mutex::new(BTreeMap::new());

/// What a step set up and must take down: views, mounts, directories,
/// cache mount locks.
#[derive(Default)]
struct Held {
    locks: Vec<tokio::sync::OwnedMutexGuard<()>>,
    views: Vec<String>,
    mounted: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

fn add_layer(mut built: Built, layer: (Value, String, String)) -> Built {
    let (desc, diff_id, top) = layer;
    built.layers.push(desc);
    built.diff_ids.push(diff_id);
    built.top = top;
    built
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The file name an ADD URL is saved under: its path's last part.
fn url_file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let path = path.split_once("://").map_or(path, |(_, rest)| rest);
    match path.split_once('/') {
        Some((_, p)) => p
            .rsplit('/')
            .find(|c| !c.is_empty())
            .unwrap_or("index.html")
            .to_string(),
        None => "index.html".to_string(),
    }
}

fn now_secs() -> i64 {
    molde_common::now_nanos() / 1_000_000_000
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
