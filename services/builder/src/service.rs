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
//!
//! This file is the service (its RPCs, a build's start and its `Job`); each
//! part of a build has a file of its own under `service/`: `job` (waves,
//! stages, steps), `inputs` (what a step's key digests), `cache_records`,
//! `base` (FROM images, blobs), `layers` (snapshots and diffs), `run_step`,
//! `copy_step`, `export` (config, manifest, names), `prune`, `recover`.

mod base;
mod cache_records;
pub use cache_records::local_cache_records;
mod copy_step;
mod export;
mod inputs;
mod job;
mod layers;
mod prune;
mod recover;
mod run_step;

use molde_common::errdefs::OrLog;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use molde_api::containerd::services::content::v1::content_client::ContentClient;
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
use molde_common::errdefs::Error;
use molde_common::image::Layer;
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

/// The builder service; it reaches content, snapshots/diff and runtime.
#[derive(Clone)]
pub struct BuilderService {
    pub content: Channel,
    /// Pulls base images.
    pub transfer: Channel,
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
    /// The build cache of the cluster's other nodes (cluster mode): a step
    /// not in this node's cache is looked for there before it runs.
    pub shared_cache: Option<std::sync::Arc<dyn molde_common::store::SharedBuildCache>>,
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
            .ok_or_else(|| Error::InvalidArgument("the build stream ended before its request".into()))?;
        let r = first.request.ok_or_else(|| {
            Error::InvalidArgument("the first message of a build stream holds the request".into())
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
                        .map_err(|e| Error::FailedPrecondition(e.to_string()))
                        .and_then(|()| crate::copy::unpack(&tar, &dir, "the context"));
                    let _ = std::fs::remove_file(&tar);
                    r.map(|()| dir)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::InvalidArgument(format!("the build context archive: {e}")))
            }
            Err(e) => Err(Error::InvalidArgument(format!(
                "receiving the build context: {e}"
            ))),
        };
        match unpacked {
            Ok(context) => self.start(ns, r, context, scratch),
            Err(s) => {
                let _ = std::fs::remove_dir_all(&scratch);
                Err(s.into())
            }
        }
    }

    async fn prune(&self, req: Request<api::PruneRequest>) -> Result<Response<api::PruneResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.prune_cache(r.all, r.keep_bytes).await?))
    }
}

impl BuilderService {
    /// A directory of its own for one build, under `scratch`.
    fn job_dir(&self) -> Result<PathBuf, Error> {
        let dir = self
            .scratch
            .join(format!("job-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
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
                return Err(Error::InvalidArgument(format!(
                    "--platform {}: molde builds for this host's platform only ({host})",
                    r.platform
                )));
            }
            if !matches!(r.compression.as_str(), "" | "gzip" | "zstd") {
                return Err(Error::InvalidArgument(format!(
                    "compression {:?}: expected gzip or zstd",
                    r.compression
                )));
            }
            if !context.is_absolute() || !context.is_dir() {
                return Err(Error::InvalidArgument(format!(
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
                    crate::scope::scoped(&context, &name, true)?
                };
                std::fs::read_to_string(&path)
                    .map_err(|e| Error::InvalidArgument(format!("reading {name}: {e}")))?
            } else {
                r.dockerfile_text.clone()
            };
            let df = dockerfile::parse(&name, &text).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let target = (!r.target.is_empty()).then_some(r.target.as_str());
            let waves = plan::plan(&df, target).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            let granted = crate::entitlements::Granted::new(&r.entitlements, &self.entitlements)?;
            for ins in waves.iter().flatten().flat_map(|&s| &df.stages[s].instructions) {
                granted.check(ins).map_err(|e| at(&df, ins, e))?;
            }
            // As docker: `<Dockerfile>.dockerignore` first, then `.dockerignore`.
            let own = if r.dockerignore_text.is_empty() && r.dockerfile_text.is_empty() {
                crate::scope::scoped(&context, &format!("{name}.dockerignore"), true)
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
                return Err(s.into());
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
            LeasesClient::new(job.svc.content.clone())
                .delete(job.plain(DeleteLease {
                    id: lease,
                    sync: false,
                }))
                .await
                .or_log("deleting a build's lease");
            let _ = std::fs::remove_dir_all(&scratch);
            if let Err(s) = result {
                let _ = tx.send(Err(s.into())).await;
            }
            // Keep the cache within its size.
            job.svc
                .prune_cache(false, job.svc.cache_max_bytes)
                .await
                .or_log("pruning the build cache");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl BuilderService {
    fn plain<T>(&self, ns: &str, msg: T) -> Request<T> {
        molde_common::context::namespaced(ns, msg)
    }
}

/// A stage's result: what a later FROM or COPY --from builds on.
#[derive(Clone)]
struct Built {
    /// The image config as JSON: it keeps Docker's fields (Healthcheck,
    /// OnBuild, Shell) that oci-spec's ImageConfiguration has no place for.
    config: Value,
    layers: Vec<Layer>,
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

fn at(df: &Dockerfile, ins: &Instruction, msg: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("{}:{}: {msg}", df.file, ins.line))
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

fn add_layer(mut built: Built, layer: Layer) -> Built {
    built.top = layer.chain_id.clone();
    built.layers.push(layer);
    built
}

/// A layer's descriptor as the gRPC APIs carry it.
fn api_descriptor(d: &oci_spec::image::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: Default::default(),
    }
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
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
