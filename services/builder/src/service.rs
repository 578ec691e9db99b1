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
//! Not yet: cache garbage collection, RUN --mount, ADD of URLs and archives, parallel
//! stages (stages run in plan order).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use molde_api::containerd::services::content::v1::{
    ReadContentRequest, WriteAction, WriteContentRequest, content_client::ContentClient,
};
use molde_api::containerd::services::diff::v1::{DiffRequest, diff_client::DiffClient};
use molde_api::containerd::services::images::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest as CreateLease, DeleteRequest as DeleteLease, Resource,
    leases_client::LeasesClient,
};
use molde_api::containerd::services::snapshots::v1::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, ViewSnapshotRequest,
    snapshots_client::SnapshotsClient,
};
use molde_api::containerd::types::{Descriptor, Mount};
use molde_api::molde::services::builder::v1::{self as api, build_event::Event, builder_server::Builder};
use molde_api::molde::services::runtime::v1::{
    RemoveRequest, RunRequest, run_event, runtime_client::RuntimeClient,
};
use molde_common::{Algorithm, Digest, RequestContext};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::cache;
use crate::dockerfile::{self, Command, Dockerfile, Instruction};
use crate::ignore::Ignore;
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
    /// Where COPY mounts snapshots while it writes into them.
    pub scratch: PathBuf,
    /// Step key → the layer it made (one JSON file per key).
    pub cache: PathBuf,
}

type Tx = mpsc::Sender<Result<api::BuildEvent, Status>>;

#[tonic::async_trait]
impl Builder for BuilderService {
    type BuildStream = ReceiverStream<Result<api::BuildEvent, Status>>;

    async fn build(&self, req: Request<api::BuildRequest>) -> Result<Response<Self::BuildStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        let context = PathBuf::from(&r.context_dir);
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
        let path = if Path::new(&name).is_absolute() {
            PathBuf::from(&name)
        } else {
            context.join(&name)
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Status::invalid_argument(format!("reading {}: {e}", path.display())))?;
        let df = dockerfile::parse(&name, &text).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let target = (!r.target.is_empty()).then_some(r.target.as_str());
        let waves = plan::plan(&df, target).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ignore = std::fs::read_to_string(context.join(".dockerignore"))
            .map(|t| Ignore::parse(&t))
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(64);
        let job = Job {
            svc: self.clone(),
            ns,
            lease: format!("build-{}", uuid::Uuid::new_v4().simple()),
            tx: tx.clone(),
            context,
            ignore,
            req: r,
            step: 0,
            done: HashMap::new(),
        };
        tokio::spawn(async move {
            let mut job = job;
            let lease = job.lease.clone();
            let result = job.run(&df, waves).await;
            let _ = LeasesClient::new(job.svc.content.clone())
                .delete(job.plain(DeleteLease {
                    id: lease,
                    sync: false,
                }))
                .await;
            if let Err(s) = result {
                let _ = tx.send(Err(s)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

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
    req: api::BuildRequest,
    step: u32,
    done: HashMap<usize, Built>,
}

fn at(df: &Dockerfile, ins: &Instruction, msg: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("{}:{}: {msg}", df.file, ins.line))
}

impl Job {
    fn plain<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.ns.parse() {
            r.metadata_mut().insert(molde_api::NAMESPACE_HEADER, v);
        }
        r
    }

    /// A request in this build's namespace and lease.
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = self.plain(msg);
        if let Ok(v) = self.lease.parse() {
            r.metadata_mut().insert(molde_api::LEASE_HEADER, v);
        }
        r
    }

    async fn send(&self, e: Event) {
        let _ = self.tx.send(Ok(api::BuildEvent { event: Some(e) })).await;
    }

    async fn run(&mut self, df: &Dockerfile, waves: Vec<Vec<usize>>) -> Result<(), Status> {
        let mut expiry = std::collections::HashMap::new();
        expiry.insert(
            "containerd.io/gc.expire".to_string(),
            rfc3339(now_secs() + 24 * 3600),
        );
        LeasesClient::new(self.svc.content.clone())
            .create(self.plain(CreateLease {
                id: self.lease.clone(),
                labels: expiry,
            }))
            .await?;
        // Values of the ARGs before the first FROM.
        let mut global: HashMap<String, Option<String>> = HashMap::new();
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
                            None => None,
                        },
                    };
                    global.insert(k.clone(), value);
                }
            }
        }
        let mut last = None;
        for wave in waves {
            for s in wave {
                let built = self.stage(df, s, &global).await?;
                self.done.insert(s, built);
                last = Some(s);
            }
        }
        let built = self
            .done
            .get(&last.unwrap_or(0))
            .cloned()
            .ok_or_else(|| Status::internal("no stage was built"))?;
        self.image(built).await
    }

    async fn stage(
        &mut self,
        df: &Dockerfile,
        s: usize,
        global: &HashMap<String, Option<String>>,
    ) -> Result<Built, Status> {
        let stage = &df.stages[s];
        let label = stage.name.clone().unwrap_or_else(|| s.to_string());
        let Command::From { image, .. } = &stage.from.command else {
            return Err(Status::internal("a stage without FROM"));
        };
        let image = crate::expand::expand(image, df.escape, &|n| global.get(n).cloned().flatten())
            .map_err(|e| at(df, &stage.from, e))?;
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
            .and_then(|p| self.done.get(&p.index))
        {
            prev.clone()
        } else {
            self.base(&image)
                .await
                .map_err(|e| at(df, &stage.from, e.message()))?
        };
        self.finish(step, false, started).await;
        let base_config = built.config["config"].as_object().cloned().unwrap_or_default();
        let mut state = StageState::new(base_config, df.escape);
        let build_args: HashMap<String, String> = self.req.build_args.clone().into_iter().collect();
        let mut key = cache::step_key("", &format!("FROM {image}"), &[], Some(&built.top));
        for ins in &stage.instructions {
            let step = self.begin(&label, ins).await;
            let started = Instant::now();
            let what = state
                .apply(ins, &build_args, global)
                .map_err(|e| at(df, ins, e))?;
            // The step's key: its parent's, what it does once expanded (a
            // RUN's argv, env, directory and user), its flags and its inputs.
            let inputs = self.inputs(df, ins, &what).await?;
            key = cache::step_key(&key, &format!("{:?}|{what:?}", ins.flags), &[], inputs.as_deref());
            tracing::debug!(step = %ins.original, key = %key, "build step");
            if what != Step::Metadata
                && !self.req.no_cache
                && let Some(layer) = self.cached(&key).await
            {
                built = self.add_layer(built, layer);
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
                } => {
                    if ins.flags_named("mount").next().is_some() {
                        return Err(at(df, ins, "RUN --mount is not supported by molde's builder yet"));
                    }
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
                    let layer = self
                        .run_step(df, ins, step, &built.top, argv, env, cwd, user, network)
                        .await?;
                    self.remember(&key, &layer);
                    built = self.add_layer(built, layer);
                }
                Step::Copy { srcs, dest } => {
                    if let Command::Add { .. } = ins.command
                        && srcs.iter().any(|s| s.contains("://"))
                    {
                        return Err(at(
                            df,
                            ins,
                            "ADD of a URL is not supported by molde's builder yet",
                        ));
                    }
                    let layer = self.copy_step(df, ins, &built.top, srcs, dest).await?;
                    self.remember(&key, &layer);
                    built = self.add_layer(built, layer);
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

    /// What a step reads besides its parent: the digest of its context
    /// sources, or the top layer of the stage or image it copies from.
    async fn inputs(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        what: &Step,
    ) -> Result<Option<String>, Status> {
        let Step::Copy { srcs, .. } = what else {
            return Ok(None);
        };
        if let Some(from) = ins.flag("from") {
            let top = match df.stage(from).and_then(|s| self.done.get(&s.index)) {
                Some(b) => b.top.clone(),
                None => self.base(from).await.map_err(|e| at(df, ins, e.message()))?.top,
            };
            return Ok(Some(format!("from {top}")));
        }
        let (context, ignore, srcs) = (self.context.clone(), self.ignore.clone(), srcs.clone());
        let digest = tokio::task::spawn_blocking(move || {
            let paths = cache::resolve_sources(&context, &srcs, &ignore)?;
            cache::digest_sources(&context, &paths, &ignore)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| at(df, ins, e))?;
        Ok(Some(digest))
    }

    fn cache_file(&self, key: &str) -> PathBuf {
        self.svc
            .cache
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    /// A layer an earlier build made for this key, if its blob and snapshot are still here.
    async fn cached(&self, key: &str) -> Option<(Value, String, String)> {
        let raw = std::fs::read(self.cache_file(key)).ok()?;
        let rec: Value = serde_json::from_slice(&raw).ok()?;
        let (layer, diff_id, top) = (
            rec["layer"].clone(),
            rec["diff_id"].as_str()?.to_string(),
            rec["top"].as_str()?.to_string(),
        );
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
        // Held by this build from now on, like a layer it made.
        LeasesClient::new(self.svc.content.clone())
            .add_resource(self.plain(AddResourceRequest {
                id: self.lease.clone(),
                resource: Some(Resource {
                    id: top.clone(),
                    r#type: format!("snapshots/{SNAPSHOTTER}"),
                }),
            }))
            .await
            .ok()?;
        Some((layer, diff_id, top))
    }

    /// Records a step's layer under its key (written whole, then renamed).
    fn remember(&self, key: &str, layer: &(Value, String, String)) {
        let rec = json!({ "layer": layer.0, "diff_id": layer.1, "top": layer.2 });
        let path = self.cache_file(key);
        let tmp = path.with_extension("tmp");
        let _ = std::fs::create_dir_all(&self.svc.cache);
        if std::fs::write(&tmp, rec.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    fn add_layer(&self, mut built: Built, layer: (Value, String, String)) -> Built {
        let (desc, diff_id, top) = layer;
        built.layers.push(desc);
        built.diff_ids.push(diff_id);
        built.top = top;
        built
    }

    async fn begin(&mut self, stage: &str, ins: &Instruction) -> u32 {
        self.step += 1;
        self.send(Event::Started(api::StepStarted {
            step: self.step,
            stage: stage.to_string(),
            instruction: ins.original.clone(),
            line: ins.line as u32,
        }))
        .await;
        self.step
    }

    async fn finish(&self, step: u32, cached: bool, started: Instant) {
        self.send(Event::Done(api::StepDone {
            step,
            cached,
            micros: started.elapsed().as_micros() as u64,
        }))
        .await;
    }

    /// The image a FROM names, with its config, layers and top chain ID.
    async fn base(&self, name: &str) -> Result<Built, Status> {
        let full = molde_common::reference::normalize(name);
        let mut found = None;
        for candidate in [name.to_string(), full.clone()] {
            match ImagesClient::new(self.svc.content.clone())
                .get(self.plain(GetImageRequest { name: candidate }))
                .await
            {
                Ok(r) => {
                    found = r.into_inner().image;
                    break;
                }
                Err(s) if s.code() == tonic::Code::NotFound => continue,
                Err(s) => return Err(s),
            }
        }
        let img = found.ok_or_else(|| {
            Status::not_found(format!(
                "FROM {name}: no image {full} here (pull or load it first)"
            ))
        })?;
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
            .diff(self.req(DiffRequest {
                left: Vec::new(),
                right: mounts,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                r#ref: format!("build-layer-{key}"),
                labels: Default::default(),
                source_date_epoch: None,
            }))
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
        match SnapshotsClient::new(self.svc.snapshotter.clone())
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: name.clone(),
                key: key.into(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => {}
            // The same layer on the same parent was built before: reuse it.
            Err(s) if s.code() == tonic::Code::AlreadyExists => self.remove_snapshot(key).await,
            Err(s) => return Err(s),
        }
        LeasesClient::new(self.svc.content.clone())
            .add_resource(self.plain(AddResourceRequest {
                id: self.lease.clone(),
                resource: Some(Resource {
                    id: name.clone(),
                    r#type: format!("snapshots/{SNAPSHOTTER}"),
                }),
            }))
            .await?;
        let layer = json!({ "mediaType": desc.media_type, "digest": desc.digest, "size": desc.size });
        Ok((layer, diff_id, name))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        step: u32,
        parent: &str,
        argv: Vec<String>,
        env: Vec<String>,
        cwd: String,
        user: String,
        network: &str,
    ) -> Result<(Value, String, String), Status> {
        let id = format!("build-{}", uuid::Uuid::new_v4().simple());
        let mut rt = RuntimeClient::new(self.svc.runtime.clone());
        let events = rt
            .run(self.req(RunRequest {
                image: String::new(),
                name: id.clone(),
                entrypoint: argv,
                entrypoint_set: true,
                env,
                workdir: cwd,
                user,
                network: network.into(),
                rootfs_parent: parent.into(),
                rootfs_parent_set: true,
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
        let layer = self.commit_layer(&id, parent).await;
        let _ = rt.remove(self.req(RemoveRequest { id, force: true })).await;
        layer
    }

    async fn copy_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        parent: &str,
        srcs: Vec<String>,
        dest: String,
    ) -> Result<(Value, String, String), Status> {
        // Where the sources come from: the context, or a stage's rootfs.
        let mut view_key = None;
        let mut from_mounts = Vec::new();
        if let Some(from) = ins.flag("from") {
            let top = match df.stage(from).and_then(|s| self.done.get(&s.index)) {
                Some(b) => b.top.clone(),
                None => self.base(from).await.map_err(|e| at(df, ins, e.message()))?.top,
            };
            let key = format!("build-view-{}", uuid::Uuid::new_v4().simple());
            from_mounts = SnapshotsClient::new(self.svc.snapshotter.clone())
                .view(self.req(ViewSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: top,
                    labels: Default::default(),
                }))
                .await?
                .into_inner()
                .mounts;
            view_key = Some(key);
        }
        let key = format!("build-{}", uuid::Uuid::new_v4().simple());
        let result = async {
            let mounts = self.prepare(&key, parent).await?;
            let dir = self.svc.scratch.join(&key);
            let context = self.context.clone();
            let ignore = if view_key.is_some() {
                Ignore::default()
            } else {
                self.ignore.clone()
            };
            let chown = ins.flag("chown").map(str::to_string);
            let chmod = ins.flag("chmod").map(str::to_string);
            let original = ins.original.clone();
            let copied = tokio::task::spawn_blocking(move || {
                crate::copy::into_snapshot(
                    &dir,
                    &mounts,
                    &from_mounts,
                    &context,
                    &ignore,
                    &srcs,
                    &dest,
                    chown.as_deref(),
                    chmod.as_deref(),
                )
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
        if let Some(v) = view_key {
            self.remove_snapshot(&v).await;
        }
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
