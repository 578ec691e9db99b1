//! What molded writes is root's alone.
//!
//! A container's `config.json` holds its environment (often secrets), its log
//! what it printed, and blobs, snapshots and `meta.redb` every image's data.
//! molded's root and state directories are 0711 (others may pass through,
//! not list), and everything directly inside them is 0700 (directories) or
//! 0600 (files), so nothing below can be reached by another user, whatever
//! mode a service gives the files it writes there. The directories services
//! create lazily are made here first, with that mode.
//!
//! **Architecture invariant:** what molded writes under its root and state is
//! readable by root only (enforced here at start-up; `tests/daemon.rs` checks
//! it as another user).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// The top directories: created 0711, or brought down to it.
pub fn top(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    restrict(dir, 0o711).with_context(|| format!("setting mode 0711 on {}", dir.display()))
}

/// Creates `children` of `dir` (0700) and restricts every entry directly in
/// `dir` to its owner: 0700 for directories, 0600 for files.
pub fn seal(dir: &Path, children: &[&str]) -> anyhow::Result<()> {
    for c in children {
        let p = dir.join(c);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
    }
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let ty = e.file_type()?;
        let mode = if ty.is_dir() {
            0o700
        } else if ty.is_file() {
            0o600
        } else {
            // Sockets and links keep theirs: a socket's mode is its own contract.
            continue;
        };
        restrict(&e.path(), mode).with_context(|| format!("restricting {}", e.path().display()))?;
    }
    Ok(())
}

/// Takes away the bits `mode` does not allow; never adds any.
fn restrict(p: &Path, mode: u32) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    let cur = md.permissions().mode() & 0o7777;
    let want = cur & mode;
    if want != cur {
        fs::set_permissions(p, fs::Permissions::from_mode(want))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_inside_is_the_owners_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        top(&root).unwrap();
        fs::create_dir(root.join("old")).unwrap();
        fs::set_permissions(root.join("old"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("meta"), "x").unwrap();
        fs::set_permissions(root.join("meta"), fs::Permissions::from_mode(0o644)).unwrap();
        seal(&root, &["new"]).unwrap();
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o711);
        assert_eq!(mode("old"), 0o700);
        assert_eq!(mode("new"), 0o700);
        assert_eq!(mode("meta"), 0o600);
    }
}
