//! runtime.v1 `Export` and `Changes`: a container's filesystem read from
//! outside, running or not (`molde export`, `molde cp CONTAINER:PATH`,
//! `molde diff`). A running container's rootfs is where its shim mounted
//! it; a stopped one's is mounted read-only for the call. Paths in it are
//! resolved inside it (`RESOLVE_IN_ROOT`): its links never lead to the host.

use std::os::fd::{AsRawFd, OwnedFd};

use molde_common::chunks::ChunkSender;

use super::*;

/// A container's root filesystem, mounted for as long as this lives when
/// the container is not running.
pub(super) struct Rootfs {
    pub(super) path: PathBuf,
    mounted_here: bool,
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// `path` in the tree at `root`, resolved as if `root` were `/`.
fn open_in(root: &Path, path: &str) -> std::io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    Ok(rustix::fs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Sends the tar as Chunk messages.
type ChunkWriter = ChunkSender<Result<api::Chunk, Status>>;

/// Tars `fd` (a file or directory) as `name`, links kept as links.
fn tar_path(fd: &OwnedFd, name: &str, out: &mut ChunkWriter) -> std::io::Result<()> {
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let meta = std::fs::metadata(&proc_path)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    if meta.is_dir() {
        b.append_dir_all(if name.is_empty() { "." } else { name }, &proc_path)?;
    } else {
        let mut h = tar::Header::new_gnu();
        h.set_metadata(&meta);
        let f = std::fs::File::open(&proc_path)?;
        b.append_data(&mut h, name, f)?;
    }
    std::io::Write::flush(b.into_inner()?)
}

impl RuntimeService {
    /// The container's rootfs: where its shim mounted it, or mounted here.
    async fn rootfs(&self, ns: &str, id: &str) -> Result<Rootfs, Error> {
        self.rootfs_for(ns, id, false).await
    }

    /// As `rootfs`; `write`: a stopped container's is mounted read-write.
    pub(super) async fn rootfs_for(&self, ns: &str, id: &str, write: bool) -> Result<Rootfs, Error> {
        let b = Bundle::new(self.bundle_dir(ns, id));
        if matches!(self.observe(ns, id).state, "running" | "paused") {
            return Ok(Rootfs {
                path: b.rootfs(),
                mounted_here: false,
            });
        }
        let mounts = self.snapshot_mounts(ns, id).await?;
        let path = self.state.join(".look").join(format!(
            "{id}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&path).map_err(Error::io("creating a mount point"))?;
        molde_bundle::mount::mount_all(&molde_common::bundle_mounts(&mounts), &path, !write)
            .map_err(Error::io(format!("container {id}: mounting its rootfs")))?;
        Ok(Rootfs {
            path,
            mounted_here: true,
        })
    }

    pub(super) async fn export_rpc(
        &self,
        req: Request<api::ExportRequest>,
    ) -> Result<Response<ReceiverStream<Result<api::Chunk, Status>>>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        self.record(&ns, &r.id)?;
        let rootfs = self.rootfs(&ns, &r.id).await?;
        let fd = open_in(&rootfs.path, &r.path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("{} in container {}", r.path, r.id))
            } else {
                Error::io(format!("{} in container {}", r.path, r.id))(e)
            }
        })?;
        let name = r
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter::new(tx.clone(), 256 << 10, "the client went away", |data| {
                Ok(api::Chunk { data })
            });
            if let Err(e) = tar_path(&fd, &name, &mut out) {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "reading the container's files: {e}"
                ))));
            }
            drop(rootfs);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    pub(super) async fn changes_rpc(
        &self,
        req: Request<api::ChangesRequest>,
    ) -> Result<Response<api::ChangesResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let id = req.into_inner().id;
        self.record(&ns, &id)?;
        let mounts = self.snapshot_mounts(&ns, &id).await?;
        let option = |name: &str| {
            mounts
                .iter()
                .flat_map(|m| m.options.iter())
                .find_map(|o| o.strip_prefix(name).map(str::to_string))
        };
        let Some(upper) = option("upperdir=") else {
            return Ok(Response::new(api::ChangesResponse::default()));
        };
        let lowers: Vec<PathBuf> = option("lowerdir=")
            .map(|l| l.split(':').map(PathBuf::from).collect())
            .unwrap_or_default();
        let changes = tokio::task::spawn_blocking(move || overlay_changes(Path::new(&upper), &lowers))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::io(format!("container {id}: reading its changes")))?;
        Ok(Response::new(api::ChangesResponse { changes }))
    }
}

/// What an overlay upper directory holds, as changes to the layers below:
/// a whiteout (0/0 character device) is a deletion, what a lower layer has
/// is a change, the rest is added.
pub fn overlay_changes(upper: &Path, lowers: &[PathBuf]) -> std::io::Result<Vec<api::Change>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(upper: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<api::Change>) -> std::io::Result<()> {
        for e in std::fs::read_dir(upper.join(rel))? {
            let e = e?;
            let path = rel.join(e.file_name());
            let m = e.metadata()?;
            let shown = format!("/{}", path.display());
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            let kind = if whiteout {
                "D"
            } else if lowers
                .iter()
                .any(|l| std::fs::symlink_metadata(l.join(&path)).is_ok())
            {
                "C"
            } else {
                "A"
            };
            out.push(api::Change {
                kind: kind.into(),
                path: shown,
            });
            if m.is_dir() {
                walk(upper, &path, lowers, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(upper, Path::new(""), lowers, &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
