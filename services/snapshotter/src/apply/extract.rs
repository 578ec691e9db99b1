//! Extraction of one tar entry at a time into the target directory, every
//! path resolved beneath it (openat2 with RESOLVE_IN_ROOT): files, links,
//! whiteouts and opaque directories, hardlinks copied up from lower layers,
//! owners, modes, xattrs and times.

use super::*;

pub(super) struct Extractor<'t> {
    pub(super) root: Root,
    pub(super) target: &'t Target,
    /// The whole uncompressed layer, when it is in memory.
    pub(super) buffer: Option<&'t [u8]>,
    /// Paths this layer created, which an opaque marker must not remove.
    pub(super) created: HashSet<String>,
    /// Directory times are set last: creating entries inside changes them.
    pub(super) dir_times: Vec<(Vec<String>, Timespec)>,
    pub(super) entries: u64,
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
    pub(super) fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<(), ApplyError> {
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

    pub(super) fn finish(&mut self) -> Result<(), ApplyError> {
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
