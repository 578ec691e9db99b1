//! containerd.services.diff.v1.Diff: applying layers onto snapshot mounts.
//!
//! Apply does not mount anything: an overlay mount's upper directory, or a bind
//! mount's source, is the directory the layer's changes belong in, so the layer
//! is extracted straight into it (`apply.rs`). That is also why every layer of
//! an image can be applied at once: a layer's upper directory does not need its
//! parents mounted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_api::containerd::services::diff::v1 as api;
use molde_api::containerd::types::{Descriptor, Mount};
use molde_common::{Digest, RequestContext};
use tonic::{Request, Response, Status};

use crate::apply::{self, ApplyError, Target, Whiteouts};
use crate::content::ContentAccess;
use crate::error::{Result, SnapshotError};
use crate::snapshotter::Snapshotter;

pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[derive(Clone)]
pub struct DiffService {
    pub(crate) s: Arc<Snapshotter>,
    pub(crate) content: ContentAccess,
    /// Bounds layers applied at once (their buffers, and CPU contention).
    applying: Arc<tokio::sync::Semaphore>,
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// Where a layer applied onto `mounts` goes, and how its whiteouts are kept.
pub fn target(mounts: &[Mount], empty_lowers: &[&Path]) -> Result<Target> {
    let [m] = mounts else {
        return Err(SnapshotError::InvalidArgument(format!(
            "apply needs exactly one mount, got {}",
            mounts.len()
        )));
    };
    if m.options.iter().any(|o| o == "ro") {
        return Err(SnapshotError::InvalidArgument(format!(
            "mount of {} is read-only",
            m.source
        )));
    }
    match m.r#type.as_str() {
        "overlay" => {
            let upper = option(m, "upperdir").ok_or_else(|| {
                SnapshotError::InvalidArgument("overlay mount without an upperdir is read-only".into())
            })?;
            let lowers = option(m, "lowerdir")
                .map(|l| {
                    l.split(':')
                        .map(PathBuf::from)
                        .filter(|p| !empty_lowers.iter().any(|e| p == e))
                        .collect()
                })
                .unwrap_or_default();
            Ok(Target {
                dir: PathBuf::from(upper),
                whiteouts: Whiteouts::Overlay,
                lowers,
            })
        }
        "bind" | "rbind" => Ok(Target {
            dir: PathBuf::from(&m.source),
            whiteouts: Whiteouts::Remove,
            lowers: Vec::new(),
        }),
        other => Err(SnapshotError::Unimplemented(format!(
            "applying onto a {other:?} mount is not supported (overlay and bind are)"
        ))),
    }
}

impl DiffService {
    pub fn new(s: Arc<Snapshotter>, content: ContentAccess) -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            s,
            content,
            applying: Arc::new(tokio::sync::Semaphore::new(cpus * 2)),
        }
    }

    /// Applies the layer `desc` (read from content in `ns`) onto `mounts`.
    pub async fn apply_layer(&self, ns: &str, desc: &Descriptor, mounts: &[Mount]) -> Result<Descriptor> {
        let digest = Digest::parse_field(&desc.digest, "diff.digest")?;
        let empty: Vec<PathBuf> = [crate::store::Driver::Overlay]
            .iter()
            .map(|d| self.s.dirs(*d).empty())
            .collect();
        let empty_refs: Vec<&Path> = empty.iter().map(PathBuf::as_path).collect();
        let target = target(mounts, &empty_refs)?;
        let dir = target.dir.canonicalize().map_err(SnapshotError::io(format!(
            "apply target {}",
            target.dir.display()
        )))?;
        if !self.s.roots().iter().any(|r| dir.starts_with(r)) {
            return Err(SnapshotError::InvalidArgument(format!(
                "apply target {} is not a snapshot of this snapshotter",
                dir.display()
            )));
        }
        let blob = self.content.open(ns, &digest).await?;
        let _permit = self
            .applying
            .acquire()
            .await
            .map_err(|_| SnapshotError::FailedPrecondition("shutting down".into()))?;
        let started = std::time::Instant::now();
        let applied = below_serving(move || match blob {
            crate::content::Blob::File(mut f) => {
                // A whole local gzip blob decompresses faster in one call.
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut data).map_err(apply::ApplyError::Io)?;
                match apply::gunzip_whole(&data) {
                    Some(plain) => {
                        drop(data);
                        apply::apply_plain(&target, &plain)
                    }
                    None => apply::apply(&target, data.as_slice()),
                }
            }
            crate::content::Blob::Stream(r) => apply::apply(&target, r),
        })
        .await
        .map_err(|e| SnapshotError::Io {
            context: format!("applying {digest}"),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| {
            let message = format!("applying layer {digest}: {source}");
            match source {
                ApplyError::Corrupt(_) | ApplyError::LinkTarget { .. } => SnapshotError::DataLoss(message),
                _ => SnapshotError::Internal(message),
            }
        })?;
        tracing::info!(
            namespace = ns,
            layer = %digest,
            diff_id = %applied.diff_id,
            bytes = applied.size,
            entries = applied.entries,
            millis = started.elapsed().as_millis() as u64,
            "layer applied"
        );
        molde_common::metrics::LAYERS_UNPACKED.add(1);
        molde_common::metrics::UNPACK_MICROS.add(started.elapsed().as_micros() as u64);
        Ok(Descriptor {
            media_type: LAYER_TAR.into(),
            digest: applied.diff_id.to_string(),
            size: applied.size as i64,
            annotations: Default::default(),
        })
    }
}

#[tonic::async_trait]
impl api::diff_server::Diff for DiffService {
    async fn apply(
        &self,
        req: Request<api::ApplyRequest>,
    ) -> std::result::Result<Response<api::ApplyResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(SnapshotError::from)?.namespace;
        let r = req.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| SnapshotError::InvalidArgument("apply needs a diff descriptor".into()))?;
        let applied = self.apply_layer(&ns, &desc, &r.mounts).await?;
        Ok(Response::new(api::ApplyResponse {
            applied: Some(applied),
        }))
    }

    async fn diff(
        &self,
        req: Request<api::DiffRequest>,
    ) -> std::result::Result<Response<api::DiffResponse>, Status> {
        let ctx = RequestContext::of(&req).map_err(SnapshotError::from)?;
        let r = req.into_inner();
        let d = crate::compare::diff(
            &self.s,
            self.content.channel(),
            &ctx.namespace,
            ctx.lease.as_deref(),
            r,
        )
        .await?;
        Ok(Response::new(api::DiffResponse { diff: Some(d) }))
    }
}

/// How much less CPU weight an unpack has than the daemon's other work.
const UNPACK_NICENESS: i32 = 5;

/// Runs `f` (an unpack: gunzip and files, CPU-bound for seconds) on a
/// thread of its own at a lower priority than the daemon's other threads,
/// so that what others wait on — a peer following a blob this node
/// downloads, API calls — is not starved by unpacks when CPU is short.
/// Where the priority cannot be changed, it runs at the daemon's.
async fn below_serving<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, tokio::sync::oneshot::error::RecvError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("unpack".into()).spawn(move || {
        let me = rustix::thread::gettid();
        if let Ok(nice) = rustix::process::getpriority_process(Some(me)) {
            let _ = rustix::process::setpriority_process(Some(me), nice + UNPACK_NICENESS);
        }
        let _ = tx.send(f());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread for an unpack");
    }
    rx.await
}
