//! Applying a layer (a tar, plain, gzip or zstd) onto a directory.
//!
//! **Architecture invariant:** extraction never writes outside the target
//! directory, whatever the tar says: `../` and absolute names are cleaned to stay
//! inside (`fsutil::clean`), every parent is resolved with `RESOLVE_IN_ROOT` so a
//! symlink planted by the layer resolves inside it, final components are
//! created with `O_EXCL`/`O_NOFOLLOW` after removing what was there, and
//! hardlink targets are resolved inside the root too.
//!
//! Whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlay whiteouts (a 0/0
//! character device, the `trusted.overlay.opaque` xattr) when the directory is an
//! overlay upper layer, or are carried out (removals) for the native snapshotter.
//! Layer xattrs in `trusted.overlay.` are dropped: a layer must not forge them.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use molde_common::{Algorithm, Digest, Hasher};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};

use crate::fsutil::{self, Root, clean, lstat_at, remove_all_at};

/// How whiteout entries of a layer are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts in the upper directory.
    Overlay,
    /// Remove what they name (the directory holds the whole merged tree).
    Remove,
}

/// What to apply a layer onto.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub whiteouts: Whiteouts,
    /// Lower layers, top first: where a hardlink to a file below this layer is copied up
    /// from, and where implicitly created directories take their owner and mode from.
    pub lowers: Vec<PathBuf>,
}

/// The uncompressed layer that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of the uncompressed tar: the layer's diff ID.
    pub diff_id: Digest,
    pub size: u64,
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("corrupt layer: {0}")]
    Corrupt(String),
    #[error("layer entry {path:?}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: hardlink target {target:?} is not in this layer or below it")]
    LinkTarget { path: String, target: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

/// Counts and hashes what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Layers this large or larger (uncompressed) are always streamed.
const WHOLE_BUFFER_MAX: usize = 1 << 30;

/// Decompresses a whole single-member gzip blob with libdeflate, which is
/// about twice as fast as a streaming inflate. `None` when the blob is not such
/// a gzip (multi-member, over the size limit, or not gzip at all): stream it.
pub fn gunzip_whole(blob: &[u8]) -> Option<Vec<u8>> {
    if !blob.starts_with(GZIP_MAGIC) || blob.len() < 18 {
        return None;
    }
    // The trailer's ISIZE is the uncompressed size modulo 2^32.
    let isize = u32::from_le_bytes(blob[blob.len() - 4..].try_into().ok()?) as usize;
    if isize >= WHOLE_BUFFER_MAX {
        return None;
    }
    let mut out = vec![0u8; isize];
    let mut d = libdeflater::Decompressor::new();
    match d.gzip_decompress(blob, &mut out) {
        Ok(n) if n == isize => Some(out),
        _ => None,
    }
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?.to_vec();
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

fn corrupt(e: io::Error) -> ApplyError {
    match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::Other => ApplyError::Corrupt(e.to_string()),
        _ => ApplyError::Io(e),
    }
}

/// Applies the layer read from `layer` onto `target`.
pub fn apply(target: &Target, layer: impl Read) -> Result<Applied, ApplyError> {
    let plain = decompress(layer).map_err(corrupt)?;
    let mut hashed = Hashing {
        inner: plain,
        hasher: Algorithm::Sha256.hasher(),
        n: 0,
    };
    let root = Root::open(&target.dir)?;
    let mut x = Extractor {
        root,
        target,
        created: HashSet::new(),
        dir_times: Vec::new(),
        entries: 0,
        buffer: None,
    };
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            x.entry(entry)?;
        }
    }
    // The tar's end-of-archive padding belongs to the diff ID too.
    io::copy(&mut hashed, &mut io::sink()).map_err(corrupt)?;
    x.finish()?;
    Ok(Applied {
        diff_id: hashed.hasher.finish(),
        size: hashed.n,
        entries: x.entries,
    })
}

/// Applies an uncompressed layer held in memory: file contents are written
/// straight from the buffer (no copy through a reader), entries are skipped by
/// seeking, and the diff ID is hashed on a second thread meanwhile.
pub fn apply_plain(target: &Target, plain: &[u8]) -> Result<Applied, ApplyError> {
    std::thread::scope(|s| {
        let hash = s.spawn(|| Digest::of(Algorithm::Sha256, plain));
        let root = Root::open(&target.dir)?;
        let mut x = Extractor {
            root,
            target,
            created: HashSet::new(),
            dir_times: Vec::new(),
            entries: 0,
            buffer: Some(plain),
        };
        let mut archive = tar::Archive::new(io::Cursor::new(plain));
        for entry in archive.entries_with_seek().map_err(corrupt)? {
            let entry = entry.map_err(corrupt)?;
            x.entry(entry)?;
        }
        x.finish()?;
        let diff_id = hash
            .join()
            .map_err(|_| ApplyError::Corrupt("hashing the layer failed".into()))?;
        Ok(Applied {
            diff_id,
            size: plain.len() as u64,
            entries: x.entries,
        })
    })
}

struct Extractor<'t> {
    root: Root,
    target: &'t Target,
    /// The whole uncompressed layer, when it is in memory.
    buffer: Option<&'t [u8]>,
    /// Paths this layer created, which an opaque marker must not remove.
    created: HashSet<String>,
    /// Directory times are set last: creating entries inside changes them.
    dir_times: Vec<(Vec<String>, Timespec)>,
    entries: u64,
}

fn entry_err(path: &[String]) -> impl FnOnce(io::Error) -> ApplyError + '_ {
    move |source| ApplyError::Entry {
        path: path.join("/"),
        source,
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    e.into()
}

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), ApplyError> {
        self.entries += 1;
        let comps = clean(&e.path_bytes());
        let Some((name, parent)) = comps.split_last() else {
            return Ok(()); // the root itself
        };
        let name = name.clone();
        let parent = parent.to_vec();
        let header = e.header().clone();
        let kind = header.entry_type();
        let pfd = self.parent_dir(&parent).map_err(entry_err(&comps))?;
        let pfd = pfd.as_fd();

        if name == OPAQUE {
            return self.opaque(&parent, pfd).map_err(entry_err(&comps));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.starts_with(".wh.") || hidden.is_empty() {
                return Ok(()); // aufs metadata, not a file
            }
            if hidden == "." || hidden == ".." {
                // `.wh..` would name the directory itself or its parent.
                return Err(ApplyError::Corrupt(format!(
                    "whiteout {path_key:?} names no entry",
                    path_key = comps.join("/")
                )));
            }
            return self.whiteout(pfd, hidden).map_err(entry_err(&comps));
        }

        let uid = Uid::from_raw(header.uid().unwrap_or(0) as u32);
        let gid = Gid::from_raw(header.gid().unwrap_or(0) as u32);
        let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o7777);
        let mtime = mtime(&mut e, &header);
        let xattrs = xattrs(&mut e);
        let path_key = comps.join("/");

        match kind {
            tar::EntryType::Directory => {
                let keep = lstat_at(pfd, &name)
                    .map_err(entry_err(&comps))?
                    .is_some_and(|st| fsutil::is_dir(&st));
                if !keep {
                    remove_all_at(pfd, &name).map_err(entry_err(&comps))?;
                    rustix::fs::mkdirat(pfd, name.as_str(), Mode::from_raw_mode(0o700))
                        .map_err(|e| entry_err(&comps)(errno(e)))?;
                }
                let fd = rustix::fs::openat(
                    pfd,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
                set_owner_mode_xattrs(fd.as_fd(), uid, gid, mode, &xattrs).map_err(entry_err(&comps))?;
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_all_at(pfd, &name).map_err(entry_err(&comps))?;
                let fd = rustix::fs::openat(
                    pfd,
                    name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
                let mut file = std::fs::File::from(fd);
                let start = e.raw_file_position() as usize;
                let len = e.size() as usize;
                match self.buffer {
                    Some(buf) if kind != tar::EntryType::GNUSparse => {
                        let data = buf.get(start..start.saturating_add(len)).ok_or_else(|| {
                            ApplyError::Corrupt(format!("{path_key:?}: data runs past the end of the layer"))
                        })?;
                        file.write_all(data).map_err(entry_err(&comps))?;
                    }
                    _ => {
                        copy(&mut e, &mut file).map_err(|err| match err.kind() {
                            io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => corrupt(err),
                            _ => entry_err(&comps)(err),
                        })?;
                    }
                }
                set_owner_mode_xattrs(file.as_fd(), uid, gid, mode, &xattrs).map_err(entry_err(&comps))?;
                rustix::fs::futimens(
                    &file,
                    &Timestamps {
                        last_access: mtime,
                        last_modification: mtime,
                    },
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
            }
            tar::EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .ok_or_else(|| ApplyError::Corrupt(format!("symlink {path_key:?} without a target")))?;
                remove_all_at(pfd, &name).map_err(entry_err(&comps))?;
                rustix::fs::symlinkat(target.as_slice(), pfd, name.as_str())
                    .map_err(|e| entry_err(&comps)(errno(e)))?;
                rustix::fs::chownat(
                    pfd,
                    name.as_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
                rustix::fs::utimensat(
                    pfd,
                    name.as_str(),
                    &Timestamps {
                        last_access: mtime,
                        last_modification: mtime,
                    },
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
            }
            tar::EntryType::Link => {
                let target =
                    clean(&e.link_name_bytes().ok_or_else(|| {
                        ApplyError::Corrupt(format!("hardlink {path_key:?} without a target"))
                    })?);
                self.hardlink(&comps, pfd, &name, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                remove_all_at(pfd, &name).map_err(entry_err(&comps))?;
                rustix::fs::mknodat(pfd, name.as_str(), ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| entry_err(&comps)(errno(e)))?;
                rustix::fs::chownat(
                    pfd,
                    name.as_str(),
                    Some(uid),
                    Some(gid),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| entry_err(&comps)(errno(e)))?;
                rustix::fs::chmodat(pfd, name.as_str(), mode, AtFlags::empty())
                    .map_err(|e| entry_err(&comps)(errno(e)))?;
            }
            // PAX and GNU headers are consumed by the tar reader; anything else
            // (sockets, unknown types) has no place in a layer.
            _ => return Ok(()),
        }
        self.created.insert(path_key);
        Ok(())
    }

    /// The parent directory of an entry, created (with the attributes it has in
    /// a lower layer, or root-owned 0755) when the layer did not list it.
    fn parent_dir(&self, parent: &[String]) -> io::Result<OwnedFd> {
        let lowers = &self.target.lowers;
        self.root.dir_all(parent, |path, dir, name| {
            let (mode, uid, gid) = lowers
                .iter()
                .find_map(|l| {
                    let st = std::fs::symlink_metadata(l.join(path.join("/"))).ok()?;
                    use std::os::unix::fs::MetadataExt;
                    st.is_dir().then_some((st.mode() & 0o7777, st.uid(), st.gid()))
                })
                .unwrap_or((0o755, 0, 0));
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::chmodat(dir, name, Mode::from_raw_mode(mode), AtFlags::empty())?;
            Ok(())
        })
    }

    fn opaque(&mut self, parent: &[String], pfd: BorrowedFd<'_>) -> io::Result<()> {
        let dir = self.root.open_in(parent, OFlags::RDONLY | OFlags::DIRECTORY)?;
        match self.target.whiteouts {
            Whiteouts::Overlay => {
                rustix::fs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())?;
            }
            Whiteouts::Remove => {
                let prefix = parent.join("/");
                let created = &self.created;
                fsutil::clear_dir(dir.as_fd(), |name| {
                    let p = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    created.contains(&p)
                })?;
            }
        }
        let _ = pfd;
        Ok(())
    }

    fn whiteout(&mut self, pfd: BorrowedFd<'_>, hidden: &str) -> io::Result<()> {
        remove_all_at(pfd, hidden)?;
        if self.target.whiteouts == Whiteouts::Overlay {
            rustix::fs::mknodat(
                pfd,
                hidden,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )?;
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        comps: &[String],
        pfd: BorrowedFd<'_>,
        name: &str,
        target: &[String],
    ) -> Result<(), ApplyError> {
        let missing = || ApplyError::LinkTarget {
            path: comps.join("/"),
            target: target.join("/"),
        };
        let Some((tname, tparent)) = target.split_last() else {
            return Err(missing());
        };
        let tpfd = match self.root.dir(tparent) {
            Ok(fd) => Some(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(entry_err(comps)(e)),
        };
        let present = match &tpfd {
            Some(fd) => lstat_at(fd.as_fd(), tname).map_err(entry_err(comps))?.is_some(),
            None => false,
        };
        if !present {
            self.copy_up(target)
                .map_err(entry_err(comps))?
                .ok_or_else(missing)?;
        }
        let tpfd = self.root.dir(tparent).map_err(entry_err(comps))?;
        if tparent == &comps[..comps.len() - 1] && tname == name {
            return Ok(()); // a link to itself
        }
        remove_all_at(pfd, name).map_err(entry_err(comps))?;
        rustix::fs::linkat(tpfd.as_fd(), tname.as_str(), pfd, name, AtFlags::empty())
            .map_err(|e| entry_err(comps)(errno(e)))?;
        self.created.insert(comps.join("/"));
        Ok(())
    }

    /// Copies a regular file from the topmost lower layer that has it into this
    /// layer, so a hardlink can point at it (what overlayfs does on a link()).
    fn copy_up(&self, target: &[String]) -> io::Result<Option<()>> {
        use std::os::unix::fs::MetadataExt;
        let rel = target.join("/");
        for lower in &self.target.lowers {
            let src = lower.join(&rel);
            let Ok(md) = std::fs::symlink_metadata(&src) else {
                continue;
            };
            if !md.file_type().is_file() {
                return Ok(None);
            }
            // The lower layer is ours (a committed snapshot), but resolve it
            // inside its own root all the same.
            let lroot = Root::open(lower)?;
            let (tname, tparent) = target.split_last().expect("non-empty");
            let sdir = lroot.dir(tparent)?;
            let sfd = rustix::fs::openat(
                sdir,
                tname.as_str(),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut sfile = std::fs::File::from(sfd);
            let dpfd = self.parent_dir(tparent)?;
            let dfd = rustix::fs::openat(
                dpfd,
                tname.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut dfile = std::fs::File::from(dfd);
            io::copy(&mut sfile, &mut dfile)?;
            rustix::fs::fchown(
                &dfile,
                Some(Uid::from_raw(md.uid())),
                Some(Gid::from_raw(md.gid())),
            )?;
            rustix::fs::fchmod(&dfile, Mode::from_raw_mode(md.mode() & 0o7777))?;
            let t = Timespec {
                tv_sec: md.mtime(),
                tv_nsec: md.mtime_nsec() as _,
            };
            rustix::fs::futimens(
                &dfile,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )?;
            return Ok(Some(()));
        }
        Ok(None)
    }

    fn finish(&mut self) -> Result<(), ApplyError> {
        // Deepest first, so setting a child's time does not disturb its parent's.
        self.dir_times.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, t) in &self.dir_times {
            let (name, parent) = comps.split_last().expect("non-empty");
            let pfd = self.root.dir(parent).map_err(entry_err(comps))?;
            rustix::fs::utimensat(
                &pfd,
                name.as_str(),
                &Timestamps {
                    last_access: *t,
                    last_modification: *t,
                },
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| entry_err(comps)(errno(e)))?;
        }
        Ok(())
    }
}

fn set_owner_mode_xattrs(
    fd: BorrowedFd<'_>,
    uid: Uid,
    gid: Gid,
    mode: Mode,
    xattrs: &[(String, Vec<u8>)],
) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(uid), Some(gid))?;
    // After chown, which clears set-id bits.
    rustix::fs::fchmod(fd, mode)?;
    for (k, v) in xattrs {
        if let Err(e) = rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
            tracing::debug!(xattr = %k, error = %e, "xattr not set");
        }
    }
    Ok(())
}

fn mtime<R: Read>(e: &mut tar::Entry<'_, R>, header: &tar::Header) -> Timespec {
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("mtime")
                && let Ok(v) = ext.value()
            {
                let (s, frac) = v.split_once('.').unwrap_or((v, "0"));
                if let Ok(sec) = s.parse::<i64>() {
                    let mut ns = frac.to_string();
                    ns.truncate(9);
                    while ns.len() < 9 {
                        ns.push('0');
                    }
                    return Timespec {
                        tv_sec: sec,
                        tv_nsec: ns.parse().unwrap_or(0),
                    };
                }
            }
        }
    }
    Timespec {
        tv_sec: header.mtime().unwrap_or(0) as i64,
        tv_nsec: 0,
    }
}

fn xattrs<R: Read>(e: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = e.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(k) = ext.key()
                && let Some(name) = k.strip_prefix("SCHILY.xattr.")
                && !name.starts_with("trusted.overlay.")
            {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}
