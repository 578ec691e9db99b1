//! COPY and ADD (local files): the step's snapshot is mounted under the
//! build's scratch directory and the sources are copied in through the
//! mount, so overlay keeps the lower layers' directories as they are.
//! Paths on both sides are resolved with symlinks read as if the root were
//! `/`, so a link in an image or the context never leads outside it.

use molde_common::errdefs::Error;
use molde_common::errdefs::OrLog;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use molde_api::containerd::types::Mount;

use crate::cache::resolve_sources;
use crate::ignore::Ignore;
use crate::scope::{escapes, scoped};

/// One COPY or ADD into a snapshot.
pub struct CopyJob<'a> {
    /// Where mount points are made.
    pub scratch: &'a Path,
    /// The snapshot written to.
    pub mounts: &'a [Mount],
    /// The rootfs sources come from (`--from`); the context when empty.
    pub from: &'a [Mount],
    pub context: &'a Path,
    pub ignore: &'a Ignore,
    pub srcs: &'a [String],
    pub dest: &'a str,
    pub chown: Option<&'a str>,
    pub chmod: Option<&'a str>,
    /// `--parents`: sources keep their directories under the destination.
    pub parents: bool,
    /// `--exclude` patterns, matched against paths relative to the source
    /// directory being copied (a file source: its path in the context).
    pub exclude: &'a Ignore,
    /// ADD: a local tar archive (plain, gzip, bzip2-less: plain, gzip or
    /// zstd) is unpacked into `dest` instead of copied.
    pub extract: bool,
}

/// Copies the job's sources (from the context, or from the rootfs `from`
/// mounts give) to its destination in the snapshot.
pub fn into_snapshot(job: &CopyJob) -> Result<(), Error> {
    let CopyJob {
        scratch,
        mounts,
        from,
        context,
        ignore,
        srcs,
        dest,
        chown,
        chmod,
        exclude,
        parents,
        extract,
    } = *job;
    let root = scratch.join("root");
    let from_dir = scratch.join("from");
    fs::create_dir_all(&root).map_err(|e| Error::FailedPrecondition(format!("{}: {e}", root.display())))?;
    let mut mounted = Vec::new();
    let result = (|| {
        mount(mounts, &root, false)?;
        mounted.push(root.clone());
        let src_root = if from.is_empty() {
            context.to_path_buf()
        } else {
            fs::create_dir_all(&from_dir).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
            mount(from, &from_dir, true)?;
            mounted.push(from_dir.clone());
            from_dir.clone()
        };
        let owner = match chown {
            Some(spec) => Some(owner(&root, spec)?),
            None => None,
        };
        let mode = match chmod {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| Error::FailedPrecondition(format!("--chmod={m}: not an octal mode")))?,
            ),
            None => None,
        };
        let found =
            resolve_sources(&src_root, srcs, ignore).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        let into_dir = dest.ends_with('/') || found.len() > 1 || srcs.len() > 1;
        let mut opts = Opts {
            ignore,
            owner,
            mode,
            exclude,
            base: String::new(),
        };
        for rel in &found {
            opts.base = rel.clone();
            let src = scoped(&src_root, rel, true)?;
            let md =
                fs::symlink_metadata(&src).map_err(|e| Error::FailedPrecondition(format!("{rel}: {e}")))?;
            if !md.is_dir() && !exclude.is_empty() && exclude.excluded(rel) {
                continue;
            }
            // --parents: each source keeps its path under the destination.
            let dest = &if parents {
                let under = if md.is_dir() {
                    rel.as_str()
                } else {
                    rel.rsplit_once('/').map_or("", |(p, _)| p)
                };
                format!("{}/{under}/", dest.trim_end_matches('/'))
            } else {
                dest.to_string()
            };
            let into_dir = into_dir || parents;
            if md.is_dir() {
                let target = make_dirs(&root, dest, owner)?;
                copy_dir_contents(&src, &target, rel, &opts)?;
            } else if extract && md.is_file() && archive_kind(&src).is_some() {
                let target = make_dirs(&root, dest, owner)?;
                unpack(&src, &target, dest.trim_end_matches('/'))
                    .map_err(|e| Error::FailedPrecondition(format!("{rel}: unpacking: {e}")))?;
            } else {
                let target = if into_dir || is_dir_in(&root, dest) {
                    let dir = make_dirs(&root, dest, owner)?;
                    let name = Path::new(rel).file_name().map(PathBuf::from).unwrap_or_default();
                    dir.join(name)
                } else {
                    let (parent, name) = split_dest(dest);
                    make_dirs(&root, &parent, owner)?.join(name)
                };
                copy_entry(&src, &target, &md, rel, &opts)?;
            }
        }
        Ok(())
    })();
    for m in mounted.iter().rev() {
        rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH).or_log("unmounting a COPY target");
    }
    let _ = fs::remove_dir_all(scratch);
    result
}

struct Opts<'a> {
    ignore: &'a Ignore,
    owner: Option<(u32, u32)>,
    mode: Option<u32>,
    exclude: &'a Ignore,
    /// The source directory being copied, relative to the context.
    base: String,
}

fn split_dest(dest: &str) -> (String, String) {
    let d = dest.trim_end_matches('/');
    match d.rsplit_once('/') {
        Some((p, n)) => (
            if p.is_empty() { "/".into() } else { p.to_string() },
            n.to_string(),
        ),
        None => ("/".into(), d.to_string()),
    }
}

/// Mounts a snapshot's mounts (one bind or overlay) at `target`.
pub fn mount(mounts: &[Mount], target: &Path, read_only: bool) -> Result<(), Error> {
    molde_bundle::mount::mount_all(&molde_common::bundle_mounts(mounts), target, read_only)
        .map_err(|e| Error::FailedPrecondition(e.to_string()))
}

fn is_dir_in(root: &Path, path: &str) -> bool {
    scoped(root, path, true)
        .ok()
        .and_then(|p| fs::metadata(p).ok())
        .is_some_and(|m| m.is_dir())
}

/// Creates `path` and its missing parents inside `root` (0755, owned by
/// `owner` — the `--chown` user — or root).
fn make_dirs(root: &Path, path: &str, owner: Option<(u32, u32)>) -> Result<PathBuf, Error> {
    let mut cur = String::new();
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur.push('/');
        cur.push_str(c);
        let p = scoped(root, &cur, true)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::FailedPrecondition(format!(
                    "{cur} exists and is not a directory"
                )));
            }
            Err(_) => {
                fs::create_dir(&p).map_err(|e| Error::FailedPrecondition(format!("creating {cur}: {e}")))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
                if let Some((uid, gid)) = owner {
                    rustix::fs::chown(
                        &p,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                    )
                    .map_err(|e| Error::FailedPrecondition(format!("chown {cur}: {e}")))?;
                }
            }
        }
    }
    scoped(root, path, true)
}

fn copy_dir_contents(src: &Path, target: &Path, rel: &str, o: &Opts) -> Result<(), Error> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(|e| Error::FailedPrecondition(format!("{rel}: {e}")))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let child_rel = if rel.is_empty() {
            n.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", n.to_string_lossy())
        };
        if o.ignore.excluded(&child_rel) {
            continue;
        }
        if !o.exclude.is_empty() {
            let local = if o.base.is_empty() {
                child_rel.as_str()
            } else {
                child_rel
                    .strip_prefix(&format!("{}/", o.base))
                    .unwrap_or(&child_rel)
            };
            if o.exclude.excluded(local) {
                continue;
            }
        }
        let s = src.join(&n);
        let md =
            fs::symlink_metadata(&s).map_err(|e| Error::FailedPrecondition(format!("{child_rel}: {e}")))?;
        copy_entry(&s, &target.join(&n), &md, &child_rel, o)?;
    }
    Ok(())
}

fn copy_entry(src: &Path, target: &Path, md: &fs::Metadata, rel: &str, o: &Opts) -> Result<(), Error> {
    let err = |e: io::Error| Error::FailedPrecondition(format!("{rel}: {e}"));
    let existing = fs::symlink_metadata(target).ok();
    let ft = md.file_type();
    if ft.is_dir() {
        match existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                fs::remove_file(target).map_err(err)?;
                fs::create_dir(target).map_err(err)?;
            }
            None => fs::create_dir(target).map_err(err)?,
        }
        copy_dir_contents(src, target, rel, o)?;
    } else {
        if let Some(m) = existing {
            if m.is_dir() {
                fs::remove_dir_all(target).map_err(err)?;
            } else {
                fs::remove_file(target).map_err(err)?;
            }
        }
        if ft.is_symlink() {
            let link = fs::read_link(src).map_err(err)?;
            std::os::unix::fs::symlink(&link, target).map_err(err)?;
        } else if ft.is_file() {
            let mut from = fs::File::open(src).map_err(err)?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc_nofollow())
                .open(target)
                .map_err(err)?;
            io::copy(&mut from, &mut to).map_err(err)?;
        } else {
            return Err(Error::FailedPrecondition(format!(
                "{rel}: only files, directories and symlinks can be copied"
            )));
        }
    }
    let (uid, gid) = o.owner.unwrap_or((0, 0));
    rustix::fs::chownat(
        rustix::fs::CWD,
        target,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::FailedPrecondition(format!("{rel}: chown: {e}")))?;
    if !ft.is_symlink() {
        let mode = o.mode.unwrap_or(md.mode() & 0o7777);
        fs::set_permissions(target, fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

/// Copies `source` (a path inside `root`, symlinks resolved inside it) to
/// the new path `to`, leaving out what `ignore` excludes; owners and modes kept.
pub fn copy_tree(root: &Path, source: &str, to: &Path, ignore: &Ignore) -> Result<(), Error> {
    let rel = source.trim_matches('/').to_string();
    let src = scoped(root, source, true)?;
    let md = fs::symlink_metadata(&src).map_err(|e| Error::FailedPrecondition(format!("{source}: {e}")))?;
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::FailedPrecondition(format!("{}: {e}", parent.display())))?;
    }
    let none = Ignore::default();
    let opts = Opts {
        ignore,
        owner: None,
        mode: None,
        exclude: &none,
        base: rel.clone(),
    };
    copy_entry(&src, to, &md, &rel, &opts)?;
    // copy_entry gives what it makes root; keep the source's owner.
    rustix::fs::chownat(
        rustix::fs::CWD,
        to,
        Some(rustix::fs::Uid::from_raw(md.uid())),
        Some(rustix::fs::Gid::from_raw(md.gid())),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::FailedPrecondition(format!("{source}: chown: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archive {
    Tar,
    Gzip,
    Zstd,
}

/// What kind of tar archive a file is, by its first bytes.
fn archive_kind(path: &Path) -> Option<Archive> {
    use std::io::Read;
    let mut head = [0u8; 262];
    let mut f = fs::File::open(path).ok()?;
    let n = f.read(&mut head).ok()?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Archive::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Archive::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Archive::Tar)
    } else {
        None
    }
}

/// Unpacks a tar archive (plain, gzip or zstd) into `dir` (owners, modes
/// and links as recorded); an entry that would land outside `dir` stops it.
/// Errors call `dir` what the user knows it as: `shown`.
pub fn unpack(archive: &Path, dir: &Path, shown: &str) -> Result<(), Error> {
    let host = dir.display().to_string();
    unpack_into(archive, dir).map_err(|e| Error::FailedPrecondition(e.message().replace(&host, shown)))
}

fn unpack_into(archive: &Path, dir: &Path) -> Result<(), Error> {
    let f = fs::File::open(archive).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    let reader: Box<dyn io::Read> = match archive_kind(archive) {
        Some(Archive::Gzip) => Box::new(flate2::read::GzDecoder::new(io::BufReader::new(f))),
        Some(Archive::Zstd) => Box::new(
            zstd::stream::read::Decoder::new(f).map_err(|e| Error::FailedPrecondition(e.to_string()))?,
        ),
        _ => Box::new(io::BufReader::new(f)),
    };
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    for e in a
        .entries()
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?
    {
        let mut e = e.map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        let path = e
            .path()
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?
            .into_owned();
        if e.header().entry_type().is_hard_link() {
            let target = e
                .link_name()
                .map_err(|err| Error::FailedPrecondition(format!("entry {}: {err}", path.display())))?
                .unwrap_or_default()
                .into_owned();
            if escapes(&target) {
                return Err(Error::FailedPrecondition(format!(
                    "entry {}: a hard link to {} leads outside the destination",
                    path.display(),
                    target.display()
                )));
            }
        }
        if !e
            .unpack_in(dir)
            .map_err(|err| Error::FailedPrecondition(format!("entry {}: {}", path.display(), causes(&err))))?
        {
            return Err(Error::FailedPrecondition(format!(
                "entry {}: leads outside the destination",
                path.display()
            )));
        }
    }
    Ok(())
}

/// An error with the reasons under it: the tar crate says "failed to unpack"
/// and keeps why in its sources.
fn causes(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// `--chown=user[:group]`, names looked up in the rootfs's /etc/passwd and /etc/group.
fn owner(root: &Path, spec: &str) -> Result<(u32, u32), Error> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = fs::read_to_string(scoped(root, file, true).ok()?).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) {
                return None;
            }
            let id: u32 = f.get(2)?.parse().ok()?;
            Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, lookup_by_uid(root, n).unwrap_or(n)),
        Err(_) => lookup("/etc/passwd", user).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "--chown={spec}: no user {user:?} in the image's /etc/passwd"
            ))
        })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("/etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "--chown={spec}: no group {g:?} in the image's /etc/group"
                ))
            })?,
        },
    };
    Ok((uid, gid))
}

fn lookup_by_uid(root: &Path, uid: u32) -> Option<u32> {
    let text = fs::read_to_string(scoped(root, "/etc/passwd", true).ok()?).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split() {
        assert_eq!(split_dest("/app/file"), ("/app".into(), "file".into()));
        assert_eq!(split_dest("/file"), ("/".into(), "file".into()));
    }
}
