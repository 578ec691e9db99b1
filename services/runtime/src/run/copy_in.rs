//! runtime.v1 `CopyIn`: a tar written into a container's filesystem
//! (`molde cp SRC CONTAINER:PATH`), running or stopped. Every path is
//! resolved inside the container (`openat2` with `RESOLVE_IN_ROOT`), every
//! last component created without following links: what the container's
//! links say can lead anywhere in the container, never onto the host.

use std::io::Read;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

use super::*;

/// The container-relative form of `path`: no leading `/`, no `.`; `..` refused.
fn clean(path: &str) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(Error::InvalidArgument(format!(
                    "{path:?}: `..` is not taken in a copied path"
                )));
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// The directory `parts` names under `root`, resolved inside it, made
/// (owner root, mode 0755) where missing when `create`.
fn dir_in(root: &OwnedFd, parts: &[String], create: bool) -> std::io::Result<OwnedFd> {
    let open = |rel: &str| {
        rustix::fs::openat2(
            root,
            if rel.is_empty() { "." } else { rel },
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    match open(&parts.join("/")) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) if create => {}
        Err(e) => return Err(e.into()),
    }
    let mut fd = open("")?;
    for (i, c) in parts.iter().enumerate() {
        match rustix::fs::mkdirat(&fd, c.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        fd = open(&parts[..=i].join("/"))?;
    }
    Ok(fd)
}

/// Removes what `name` is in `dir` unless it is a directory, so a file or
/// link can take its place (as tar does when it extracts over a file).
fn clear(dir: &OwnedFd, name: &str) -> std::io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Directory => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            Ok(())
        }
        Ok(_) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Extracts `tar` under `dest` (the container's path, split) of the tree at
/// `root`. `rename`: the archive's top entry lands as this name instead of
/// its own (`cp FILE CONTAINER:/new-name`). Returns the entries written.
pub(crate) fn extract(
    root: &Path,
    dest: &[String],
    rename: Option<&str>,
    tar: impl Read,
) -> Result<u64, Error> {
    let root = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening the container's rootfs")(e.into()))?;
    let mut archive = tar::Archive::new(tar);
    let mut n = 0;
    let mut top: Option<String> = None;
    let bad = |what: &str, e: std::io::Error| Error::InvalidArgument(format!("the archive: {what}: {e}"));
    for entry in archive.entries().map_err(|e| bad("reading it", e))? {
        let mut entry = entry.map_err(|e| bad("reading an entry", e))?;
        let raw = entry
            .path()
            .map_err(|e| bad("an entry's name", e))?
            .to_string_lossy()
            .into_owned();
        let mut parts = clean(&raw)?;
        if parts.is_empty() {
            continue;
        }
        if let Some(new) = rename {
            let first = top.get_or_insert_with(|| parts[0].clone());
            if parts[0] != *first {
                return Err(Error::InvalidArgument(format!(
                    "the archive has more than one top entry ({first}, {}) to copy as {new}",
                    parts[0]
                )));
            }
            parts[0] = new.to_string();
        }
        let name = parts.pop().expect("not empty");
        let mut dir_parts = dest.to_vec();
        dir_parts.extend(parts);
        let at = |e: std::io::Error| {
            Error::io(format!("writing {}/{name} in the container", dir_parts.join("/")))(e)
        };
        let dir = dir_in(&root, &dir_parts, true).map_err(at)?;
        let h = entry.header().clone();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        let kind = h.entry_type();
        let owner = (
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        );
        // Owner first, then mode: chown clears set-id bits. Both through the
        // fd just made (never a path the container could swap for a link).
        let settle = |fd: &OwnedFd| -> std::io::Result<()> {
            rustix::fs::fchown(fd, owner.0, owner.1)?;
            rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
            Ok(())
        };
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(at(e.into())),
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| at(e.into()))?;
                settle(&fd).map_err(at)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(&dir, &name).map_err(at)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name.as_str(),
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| at(e.into()))?;
                let mut f = std::fs::File::from(fd);
                std::io::copy(&mut entry, &mut f).map_err(at)?;
                settle(&OwnedFd::from(f)).map_err(at)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad("a link's target", e))?
                    .ok_or_else(|| Error::InvalidArgument(format!("the archive: link {raw} has no target")))?
                    .to_string_lossy()
                    .into_owned();
                clear(&dir, &name).map_err(at)?;
                rustix::fs::symlinkat(target.as_str(), &dir, name.as_str()).map_err(|e| at(e.into()))?;
                rustix::fs::chownat(&dir, name.as_str(), owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| at(e.into()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| bad("a hard link's target", e))?
                    .ok_or_else(|| Error::InvalidArgument(format!("the archive: link {raw} has no target")))?
                    .to_string_lossy()
                    .into_owned();
                let mut tparts = clean(&target)?;
                if let (Some(new), Some(first)) = (rename, top.as_ref())
                    && tparts.first() == Some(first)
                {
                    tparts[0] = new.to_string();
                }
                let mut full = dest.to_vec();
                full.extend(tparts);
                let leaf = full.pop().unwrap_or_default();
                let tdir = dir_in(&root, &full, false).map_err(at)?;
                clear(&dir, &name).map_err(at)?;
                rustix::fs::linkat(&tdir, leaf.as_str(), &dir, name.as_str(), AtFlags::empty())
                    .map_err(|e| at(e.into()))?;
                n += 1;
                continue;
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "the archive: {raw} is a {other:?} entry; only files, directories and links are copied"
                )));
            }
        }
        let flags = AtFlags::SYMLINK_NOFOLLOW;
        if let Ok(mtime) = h.mtime() {
            let t = rustix::fs::Timespec {
                tv_sec: mtime as i64,
                tv_nsec: 0,
            };
            let times = rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            };
            let _ = rustix::fs::utimensat(&dir, name.as_str(), &times, flags);
        }
        n += 1;
    }
    Ok(n)
}

impl RuntimeService {
    pub(super) async fn copy_in_rpc(
        &self,
        req: Request<tonic::Streaming<api::CopyInRequest>>,
    ) -> Result<Response<api::CopyInResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.unwrap_or_default();
        if first.id.is_empty() {
            return Err(Error::InvalidArgument("copying into a container needs its id".into()).into());
        }
        let id = self.resolve(&ns, &first.id)?;
        let rootfs = self.rootfs_for(&ns, &id, true).await?;
        let path = clean(&first.path)?;
        let root = rootfs.path.clone();
        // Where the archive lands: into PATH when it is a directory there;
        // else its one top entry becomes PATH (whose parent must exist).
        let (dest, rename) = {
            let rootfd = rustix::fs::open(
                &root,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("opening the container's rootfs")(e.into()))?;
            match dir_in(&rootfd, &path, false) {
                Ok(_) => (path.clone(), None),
                Err(_) if first.archive => {
                    return Err(Error::NotFound(format!(
                        "{} in container {id} is not a directory",
                        first.path
                    ))
                    .into());
                }
                Err(_) => {
                    let mut parent = path.clone();
                    let Some(leaf) = parent.pop() else {
                        return Err(Error::InvalidArgument("copying onto / needs a directory".into()).into());
                    };
                    dir_in(&rootfd, &parent, false).map_err(|_| {
                        Error::NotFound(format!(
                            "{} in container {id}: its directory does not exist",
                            first.path
                        ))
                    })?;
                    (parent, Some(leaf))
                }
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<u8>, Status>>(8);
        let _ = tx.send(Ok(first.data));
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if tx.send(Ok(m.data)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = tx.send(Err(s));
                        return;
                    }
                }
            }
        });
        let reader = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let n = tokio::task::spawn_blocking(move || {
            let r = extract(&root, &dest, rename.as_deref(), reader);
            drop(rootfs);
            r
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        tracing::info!(namespace = %ns, container = %id, path = %first.path, entries = n, "copied into the container");
        Ok(Response::new(api::CopyInResponse { entries: n }))
    }
}

/// The client's chunks as one byte stream.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>, Status>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Err(s)) => return Err(std::io::Error::other(s.message().to_string())),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            h.set_uid(1000);
            h.set_gid(1001);
            h.set_size(data.len() as u64);
            h.set_mtime(1_000_000);
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
            }
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn links_in_the_container_never_lead_out_of_it() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // The container's /etc is a link to the host's directory: resolved in
        // the root it names the container's own /…, not `outside`.
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", root.path().join("up")).unwrap();
        let t = tar_of(&[
            ("app/run.sh", tar::EntryType::Regular, b"echo hi\n", ""),
            ("app/alias", tar::EntryType::Link, b"", "app/run.sh"),
            ("app/to-etc", tar::EntryType::Symlink, b"", "/etc/passwd"),
        ]);
        extract(root.path(), &["up".into(), "x".into()], None, &t[..]).unwrap();
        assert!(
            std::fs::read_dir(outside.path()).unwrap().next().is_none(),
            "nothing written outside"
        );
        let f = root.path().join("x/app/run.sh");
        assert_eq!(std::fs::read(&f).unwrap(), b"echo hi\n");
        let m = std::fs::metadata(&f).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.nlink()),
            (0o640, 1000, 1001, 2)
        );
        // A file over a link replaces the link, it does not write through it.
        let t = tar_of(&[("passwd", tar::EntryType::Regular, b"mine\n", "")]);
        std::fs::create_dir_all(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), root.path().join("d/passwd")).unwrap();
        extract(root.path(), &["d".into()], None, &t[..]).unwrap();
        assert!(!outside.path().join("victim").exists());
        assert_eq!(std::fs::read(root.path().join("d/passwd")).unwrap(), b"mine\n");
        assert!(clean("a/../../b").is_err());
    }
}
