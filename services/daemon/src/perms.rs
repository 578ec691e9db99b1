//! What molded writes is root's alone.
//!
//! A container's `config.json` holds its environment (often secrets), its log
//! what it printed, and blobs, snapshots and `meta.redb` every image's data.
//! molded's root and state directories are 0711 (others may pass through,
//! not list), and what molded keeps directly inside them is 0700
//! (directories) or 0600 (files), so nothing below can be reached by another
//! user, whatever mode a service gives the files it writes there. The
//! directories services create lazily are made here first, with that mode.
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

/// Creates the directories `dirs` in `dir` (0700), or restricts them to
/// their owner, and restricts the files `files` there (0600) when they
/// exist. Only what molded owns is touched: whatever else sits in a root an
/// administrator chose keeps its mode.
pub fn seal(dir: &Path, dirs: &[&str], files: &[&str]) -> anyhow::Result<()> {
    for c in dirs {
        let p = dir.join(c);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        restrict(&p, 0o700).with_context(|| format!("restricting {}", p.display()))?;
    }
    for f in files {
        let p = dir.join(f);
        match restrict(&p, 0o600) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("restricting {}", p.display()))),
        }
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
        fs::write(root.join("theirs"), "x").unwrap();
        fs::set_permissions(root.join("theirs"), fs::Permissions::from_mode(0o644)).unwrap();
        seal(&root, &["new", "old"], &["meta", "absent"]).unwrap();
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o711);
        assert_eq!(mode("old"), 0o700);
        assert_eq!(mode("new"), 0o700);
        assert_eq!(mode("meta"), 0o600);
        assert_eq!(mode("theirs"), 0o644, "what molded does not own keeps its mode");
    }
}
