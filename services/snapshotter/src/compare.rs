//! diff.v1 `Diff`: the layer that turns the left mounts into the right ones.
//!
//! An overlay upper directory already is the difference: its files are the
//! changes, a 0/0 character device is a deletion (`.wh.NAME`) and an opaque
//! directory hides everything below (`.wh..wh..opq`). For two plain
//! directories the trees are compared entry by entry (type, mode, owner, size,
//! mtime, link target), and what the left has and the right lacks becomes a
//! whiteout. Entries are written in path order with numeric owners, so the same
//! trees give the same layer.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use molde_api::containerd::services::diff::v1::DiffRequest;
use molde_api::containerd::types::{Descriptor, Mount};
use molde_common::{Algorithm, Digest, Hasher};

use crate::error::{Result, SnapshotError};
use crate::snapshotter::Snapshotter;

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
use molde_common::labels::UNCOMPRESSED as UNCOMPRESSED_LABEL;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Add or replace this path with what the right tree has.
    Put(PathBuf),
    /// `.wh.NAME` in the parent.
    Whiteout(String),
    /// `.wh..wh..opq` in this directory (relative path).
    Opaque(String),
}

fn dir_of(mounts: &[Mount]) -> Result<(PathBuf, bool)> {
    match mounts {
        [] => Ok((PathBuf::new(), false)),
        [m] if m.r#type == "overlay" => {
            let upper = m
                .options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir="))
                .ok_or_else(|| SnapshotError::InvalidArgument("overlay mount without upperdir".into()))?;
            Ok((PathBuf::from(upper), true))
        }
        [m] if m.r#type == "bind" || m.r#type == "rbind" => Ok((PathBuf::from(&m.source), false)),
        [m] => Err(SnapshotError::Unimplemented(format!(
            "diff of a {:?} mount",
            m.r#type
        ))),
        _ => Err(SnapshotError::InvalidArgument(
            "diff needs at most one mount per side".into(),
        )),
    }
}

/// Every path under `root`, relative, in order, with its metadata.
fn walk(root: &Path) -> io::Result<BTreeMap<String, fs::Metadata>> {
    let mut out = BTreeMap::new();
    if root.as_os_str().is_empty() {
        return Ok(out);
    }
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let md = fs::symlink_metadata(e.path())?;
            if md.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r.to_string_lossy().into_owned(), md);
        }
    }
    Ok(out)
}

fn same(a: &fs::Metadata, b: &fs::Metadata, pa: &Path, pb: &Path) -> bool {
    let basic = a.file_type() == b.file_type()
        && a.mode() == b.mode()
        && a.uid() == b.uid()
        && a.gid() == b.gid()
        && (a.is_dir()
            || (a.size() == b.size() && a.mtime() == b.mtime() && a.mtime_nsec() == b.mtime_nsec()));
    if !basic {
        return false;
    }
    if a.file_type().is_symlink() {
        return fs::read_link(pa).ok() == fs::read_link(pb).ok();
    }
    if a.file_type().is_char_device() || a.file_type().is_block_device() {
        return a.rdev() == b.rdev();
    }
    true
}

fn parents(p: &str) -> impl Iterator<Item = String> + '_ {
    p.match_indices('/').map(move |(i, _)| p[..i].to_string())
}

/// What the right tree changes relative to the left one.
fn changes(left: &Path, right: &Path, overlay: bool) -> io::Result<Vec<Change>> {
    let r = walk(right)?;
    let mut out: BTreeMap<String, Change> = BTreeMap::new();
    if overlay {
        for (p, md) in &r {
            let ft = md.file_type();
            if ft.is_char_device() && md.rdev() == 0 {
                let name = Path::new(p).file_name().unwrap().to_string_lossy().into_owned();
                let parent = Path::new(p)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .to_string_lossy()
                    .into_owned();
                let wh = if parent.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{parent}/.wh.{name}")
                };
                out.insert(wh, Change::Whiteout(p.clone()));
                continue;
            }
            out.insert(p.clone(), Change::Put(PathBuf::from(p)));
            if md.is_dir() && is_opaque(&right.join(p)) {
                out.insert(format!("{p}/.wh..wh..opq"), Change::Opaque(p.clone()));
            }
        }
        return Ok(out.into_values().collect());
    }
    let l = walk(left)?;
    for (p, md) in &r {
        let changed = match l.get(p) {
            None => true,
            Some(lm) => !same(lm, md, &left.join(p), &right.join(p)),
        };
        if changed {
            out.insert(p.clone(), Change::Put(PathBuf::from(p)));
            for parent in parents(p) {
                out.entry(parent.clone())
                    .or_insert(Change::Put(PathBuf::from(parent)));
            }
        }
    }
    for p in l.keys() {
        if r.contains_key(p) {
            continue;
        }
        // Only the topmost deleted path needs a whiteout.
        if parents(p).any(|q| l.contains_key(&q) && !r.contains_key(&q)) {
            continue;
        }
        let path = Path::new(p);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parent = path
            .parent()
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .into_owned();
        let wh = if parent.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{parent}/.wh.{name}")
        };
        out.insert(wh, Change::Whiteout(p.clone()));
        for q in parents(p) {
            out.entry(q.clone()).or_insert(Change::Put(PathBuf::from(q)));
        }
    }
    Ok(out.into_values().collect())
}

fn is_opaque(dir: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Hasher,
    n: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the tar of `changes` (files read from `right`) into `out`, clamping
/// mtimes to `epoch` when set. Returns the uncompressed digest and size.
fn write_tar(
    right: &Path,
    changes: &[Change],
    out: impl Write,
    epoch: Option<i64>,
) -> io::Result<(Digest, u64)> {
    let hw = HashingWriter {
        inner: out,
        hasher: Algorithm::Sha256.hasher(),
        n: 0,
    };
    let mut b = tar::Builder::new(hw);
    b.mode(tar::HeaderMode::Complete);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for c in changes {
        let (name, md, src) = match c {
            Change::Whiteout(p) => {
                let path = Path::new(p);
                let parent = path.parent().unwrap_or(Path::new(""));
                let wh = parent.join(format!(".wh.{}", path.file_name().unwrap().to_string_lossy()));
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                h.set_mtime(epoch.unwrap_or(0).max(0) as u64);
                b.append_data(&mut h, &wh, io::empty())?;
                continue;
            }
            Change::Opaque(p) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                h.set_mtime(epoch.unwrap_or(0).max(0) as u64);
                b.append_data(&mut h, Path::new(p).join(".wh..wh..opq"), io::empty())?;
                continue;
            }
            Change::Put(p) => {
                let src = right.join(p);
                (p.clone(), fs::symlink_metadata(&src)?, src)
            }
        };
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
        let mtime = md.mtime();
        h.set_mtime(epoch.map_or(mtime, |e| mtime.min(e)).max(0) as u64);
        h.set_uid(md.uid() as u64);
        h.set_gid(md.gid() as u64);
        let ft = md.file_type();
        let key = (md.dev(), md.ino());
        if ft.is_file() && md.nlink() > 1 {
            if let Some(first) = links.get(&key) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &name, first)?;
                continue;
            }
            links.insert(key, name.to_string_lossy().into_owned());
        }
        if ft.is_symlink() {
            h.set_size(0);
            b.append_link(&mut h, &name, fs::read_link(&src)?)?;
        } else if ft.is_file() {
            let f = File::open(&src)?;
            b.append_data(&mut h, &name, f)?;
        } else {
            if ft.is_char_device() || ft.is_block_device() {
                let dev = md.rdev();
                h.set_device_major(rustix::fs::major(dev))?;
                h.set_device_minor(rustix::fs::minor(dev))?;
            }
            h.set_size(0);
            b.append_data(&mut h, &name, io::empty())?;
        }
    }
    let mut hw = b.into_inner()?;
    hw.flush()?;
    Ok((hw.hasher.finish(), hw.n))
}

/// Computes the diff, compresses it and stores it in the content service.
/// `lease`: the request's lease, which then holds the layer blob too.
pub async fn diff(
    s: &Snapshotter,
    content: tonic::transport::Channel,
    ns: &str,
    lease: Option<&str>,
    r: DiffRequest,
) -> Result<Descriptor> {
    let (left, _) = dir_of(&r.left)?;
    let (right, overlay) = dir_of(&r.right)?;
    if right.as_os_str().is_empty() {
        return Err(SnapshotError::InvalidArgument("diff needs a right mount".into()));
    }
    let media_type = if r.media_type.is_empty() {
        LAYER_GZIP.to_string()
    } else {
        r.media_type.clone()
    };
    let compression = match media_type.as_str() {
        m if m.ends_with("+zstd") => "zstd",
        m if m.ends_with("+gzip") || m.ends_with(".gzip") => "gzip",
        m if m.ends_with(".tar") || m.ends_with("tar") => "none",
        m => {
            return Err(SnapshotError::InvalidArgument(format!(
                "diff media type {m:?}: unknown compression"
            )));
        }
    };
    let epoch = r.source_date_epoch.as_ref().map(|t| t.seconds);
    let tmpdir = s.dirs(crate::store::Driver::Overlay).root.join("..").join("tmp");
    fs::create_dir_all(&tmpdir).map_err(SnapshotError::io("creating diff tmp dir"))?;
    let tmp = tmpdir.join(uuid::Uuid::new_v4().simple().to_string());
    let tmp2 = tmp.clone();
    let (diff_id, compressed_digest, size) =
        tokio::task::spawn_blocking(move || -> io::Result<(Digest, Digest, u64)> {
            let changes = changes(&left, &right, overlay)?;
            let file = File::create(&tmp2)?;
            let out = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: Algorithm::Sha256.hasher(),
                n: 0,
            };
            let (diff_id, out) = match compression {
                "zstd" => {
                    let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
                    let (d, _) = write_tar(&right, &changes, &mut enc, epoch)?;
                    (d, enc.finish()?)
                }
                "gzip" => {
                    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                    let (d, _) = write_tar(&right, &changes, &mut enc, epoch)?;
                    (d, enc.finish()?)
                }
                _ => {
                    let mut out = out;
                    let (d, _) = write_tar(&right, &changes, &mut out, epoch)?;
                    (d, out)
                }
            };
            let mut out = out;
            out.flush()?;
            Ok((diff_id, out.hasher.finish(), out.n))
        })
        .await
        .map_err(|e| SnapshotError::Io {
            context: "computing diff".into(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(SnapshotError::io("computing diff"))?;

    let mut labels = r.labels.clone();
    labels.insert(UNCOMPRESSED_LABEL.into(), diff_id.to_string());
    let reference = if r.r#ref.is_empty() {
        format!("diff-{}", uuid::Uuid::new_v4().simple())
    } else {
        r.r#ref.clone()
    };
    let res = upload(
        content,
        ns,
        lease,
        &reference,
        &tmp,
        size as i64,
        &compressed_digest,
        labels,
    )
    .await;
    let _ = fs::remove_file(&tmp);
    res?;
    Ok(Descriptor {
        media_type,
        digest: compressed_digest.to_string(),
        size: size as i64,
        annotations: Default::default(),
    })
}

/// Streams the compressed diff in `file` into content under `lease`.
#[allow(clippy::too_many_arguments)]
async fn upload(
    content: tonic::transport::Channel,
    ns: &str,
    lease: Option<&str>,
    reference: &str,
    file: &Path,
    size: i64,
    digest: &Digest,
    labels: std::collections::HashMap<String, String>,
) -> Result<()> {
    let path = file.to_path_buf();
    let open: molde_api::client::OpenAt = Box::new(move |_| {
        // Each diff has a ref of its own: nothing to resume.
        Ok((Box::new(File::open(&path)?), 0))
    });
    let written = molde_api::client::write_stream(
        &content,
        ns,
        lease,
        reference,
        size,
        &digest.to_string(),
        labels,
        open,
    )
    .await;
    match written {
        Ok(_) => Ok(()),
        // Content that is already there (the same diff made before).
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(SnapshotError::upstream("uploading the diff")(s)),
    }
}
