//! Paths inside a root (a context, a snapshot's rootfs, an archive's
//! destination): symlinks read and resolved inside it, and names that would
//! climb out of it told apart. COPY, ADD and the cache's source digests
//! share these.

use molde_common::errdefs::Error;
use std::fs;
use std::path::{Path, PathBuf};

/// `path` (absolute inside the rootfs) under `root`, symlinks resolved
/// inside `root`; components that do not exist are kept as they are.
pub fn scoped(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf, Error> {
    let mut todo: Vec<String> = path
        .split('/')
        .rev()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let here: PathBuf = done.iter().fold(root.to_path_buf(), |p, d| p.join(d)).join(&c);
        let last = todo.is_empty();
        match fs::symlink_metadata(&here) {
            Ok(md) if md.file_type().is_symlink() && (!last || follow_last) => {
                hops += 1;
                if hops > 40 {
                    return Err(Error::InvalidArgument(format!(
                        "{path}: too many levels of symbolic links"
                    )));
                }
                let target =
                    fs::read_link(&here).map_err(|e| Error::InvalidArgument(format!("{path}: {e}")))?;
                let t = target.to_string_lossy().into_owned();
                if t.starts_with('/') {
                    done.clear();
                }
                todo.extend(t.split('/').rev().filter(|c| !c.is_empty()).map(str::to_string));
            }
            _ => done.push(c),
        }
    }
    Ok(done.iter().fold(root.to_path_buf(), |p, d| p.join(d)))
}

/// Whether a path inside an archive or a context names something above its
/// root (or is absolute).
pub fn escapes(p: &Path) -> bool {
    let mut depth = 0i32;
    for c in p.components() {
        match c {
            std::path::Component::RootDir | std::path::Component::Prefix(_) => return true,
            std::path::Component::ParentDir => depth -= 1,
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::CurDir => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("real/up")).unwrap();
        std::os::unix::fs::symlink("/real/dir", r.join("etc")).unwrap();
        assert_eq!(scoped(r, "/abs/dir", true).unwrap(), r.join("real/dir"));
        assert_eq!(scoped(r, "/real/up/real", true).unwrap(), r.join("real"));
        // An absolute target is read inside the root, never the host's.
        assert_eq!(scoped(r, "/etc/passwd", true).unwrap(), r.join("real/dir/passwd"));
        assert_eq!(scoped(r, "/abs", false).unwrap(), r.join("abs"));
        std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
        assert!(
            scoped(r, "/loop1/x", true)
                .unwrap_err()
                .to_string()
                .contains("too many levels")
        );
    }

    #[test]
    fn names_that_climb_out_escape() {
        assert!(escapes(Path::new("../x")));
        assert!(escapes(Path::new("a/../../x")));
        assert!(escapes(Path::new("/etc/passwd")));
        assert!(!escapes(Path::new("a/../b")));
    }
}
