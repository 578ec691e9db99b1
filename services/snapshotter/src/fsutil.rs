//! Filesystem operations confined to one directory tree.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)`: `..` stops at the
//! root and symlinks, absolute or relative, resolve inside it, so nothing a layer
//! says can reach a file outside its snapshot. Final components are acted on
//! with the `*at` calls and `AT_SYMLINK_NOFOLLOW`, never followed.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// A directory that every operation stays inside.
pub struct Root {
    fd: OwnedFd,
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);

/// Splits a path from a tar header into components that stay inside the root:
/// empty parts and `.` are dropped, `..` removes the previous component and
/// stops at the root, a leading `/` means the root.
pub fn clean(path: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(String::from_utf8_lossy(p).into_owned()),
        }
    }
    out
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd })
    }

    /// Opens `comps` (a directory) inside the root with `flags`.
    pub fn open_in(&self, comps: &[String], flags: OFlags) -> io::Result<OwnedFd> {
        let path = if comps.is_empty() {
            ".".to_string()
        } else {
            comps.join("/")
        };
        Ok(rustix::fs::openat2(
            &self.fd,
            path.as_str(),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?)
    }

    /// The directory `comps` as an O_PATH descriptor, if it exists.
    pub fn dir(&self, comps: &[String]) -> io::Result<OwnedFd> {
        self.open_in(comps, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// The directory `comps`, creating missing components with `make(depth, parent, name)`.
    pub fn dir_all(
        &self,
        comps: &[String],
        mut make: impl FnMut(&[String], BorrowedFd<'_>, &str) -> io::Result<()>,
    ) -> io::Result<OwnedFd> {
        match self.dir(comps) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut parent = self.dir(&[])?;
        for i in 0..comps.len() {
            match self.dir(&comps[..=i]) {
                Ok(fd) => parent = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    make(&comps[..=i], parent.as_fd(), &comps[i])?;
                    parent = self.dir(&comps[..=i])?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(parent)
    }
}

/// Status of `name` in `dir`, not following a symlink; `None` if absent.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn is_dir(st: &rustix::fs::Stat) -> bool {
    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
}

/// Removes `name` from `dir`, recursively if it is a directory. Absent is fine.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
    }
    let child = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    clear_dir(child.as_fd(), |_| false)?;
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// Removes every entry of the open directory `dir` for which `keep` is false.
pub fn clear_dir(dir: BorrowedFd<'_>, keep: impl Fn(&str) -> bool) -> io::Result<()> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." && !keep(&n) {
            names.push(n);
        }
    }
    for n in names {
        remove_all_at(dir, &n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keeps_paths_inside() {
        assert_eq!(clean(b"a/b/c"), ["a", "b", "c"]);
        assert_eq!(clean(b"./a//b/"), ["a", "b"]);
        assert_eq!(clean(b"/etc/passwd"), ["etc", "passwd"]);
        assert_eq!(clean(b"../../etc/passwd"), ["etc", "passwd"]);
        assert_eq!(clean(b"a/../../b"), ["b"]);
        assert!(clean(b"./").is_empty());
    }
}
