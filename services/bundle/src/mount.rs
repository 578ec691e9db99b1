//! Mounting a snapshot: the mounts a snapshotter describes (one bind or one
//! overlay) at a target directory.
//!
//! The kernel copies at most one page of mount options (4096 bytes on x86_64)
//! and silently cuts the rest, so an overlay of an image with many layers
//! would get a wrong root filesystem (the last lower kept is a truncated
//! path) or fail with a misleading error. Overlay options are therefore
//! written relative to the common parent of the lower, upper and work
//! directories (the snapshotter's directory), and the mount is made from a
//! thread that has a working directory of its own (`unshare(CLONE_FS)`) and
//! stands in that parent, as containerd's mount helper does. Where the
//! options still do not fit, the mount is refused with an error that says so.

use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, mount, mount_bind_recursive, mount_remount};
use serde::{Deserialize, Serialize};

/// A mount as a snapshotter describes it (containerd's `Mount`, without the target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default)]
    pub options: Vec<String>,
}

/// The file in a container's bundle that lists its rootfs mounts.
pub const MOUNTS_FILE: &str = "mounts.json";

/// Writes the rootfs mounts into `bundle`.
pub fn write(bundle: &Path, mounts: &[Mount]) -> io::Result<()> {
    std::fs::write(bundle.join(MOUNTS_FILE), serde_json::to_vec(mounts)?)
}

/// Reads the rootfs mounts `write` left in `bundle`.
pub fn read(bundle: &Path) -> io::Result<Vec<Mount>> {
    let raw = std::fs::read(bundle.join(MOUNTS_FILE))
        .map_err(|e| with_context(e, format!("reading {MOUNTS_FILE}")))?;
    serde_json::from_slice(&raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("parsing {MOUNTS_FILE}: {e}")))
}

/// The kernel's limit on lower layers of one overlay mount.
const OVERLAY_MAX_LOWERS: usize = 500;

/// Mounts a snapshot's mounts at `target`; read-only when asked or when the
/// snapshot says `ro`.
pub fn mount_all(mounts: &[Mount], target: &Path, read_only: bool) -> io::Result<()> {
    let m = match mounts {
        [m] => m,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("expected one mount, the snapshotter gave {}", mounts.len()),
            ));
        }
    };
    let read_only = read_only || m.options.iter().any(|o| o == "ro");
    match m.kind.as_str() {
        "bind" | "rbind" => {
            mount_bind_recursive(Path::new(&m.source), target).map_err(|e| {
                with_context(
                    e.into(),
                    format!("bind-mounting {} at {}", m.source, target.display()),
                )
            })?;
            if read_only {
                // A bind mount takes MS_RDONLY only on a remount.
                mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
                    .map_err(|e| with_context(e.into(), format!("making {} read-only", target.display())))?;
            }
            Ok(())
        }
        "overlay" => mount_overlay(&m.options, target, read_only),
        other => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot mount a {other:?} snapshot"),
        )),
    }
}

/// Mounts a snapshot at `target` as a container in the user namespace at
/// `userns` sees it rightly: every layer through an idmapped mount of that
/// namespace's map (a file root owns in the image is owned by the
/// namespace's root), the upper directory handed to the namespace's root
/// (`owner`, the host ids its uid and gid 0 map to), so what the container
/// writes is owned on the host by the ids it is mapped to. Overlay takes
/// idmapped lower layers (Linux 5.19); an overlay mount itself cannot be
/// idmapped.
pub fn mount_all_idmapped(
    mounts: &[Mount],
    target: &Path,
    userns: &Path,
    owner: (u32, u32),
) -> io::Result<()> {
    let ns = std::fs::File::open(userns)
        .map_err(|e| with_context(e, format!("opening the user namespace {}", userns.display())))?;
    let [m] = mounts else {
        return mount_all(mounts, target, false);
    };
    match m.kind.as_str() {
        "overlay" => {
            // The idmapped layers stay detached: overlay reaches each one
            // through its descriptor (short paths, whatever their number),
            // and keeps them once mounted.
            let mut held = Vec::new();
            let mut options = Vec::new();
            for o in &m.options {
                if let Some(l) = o.strip_prefix("lowerdir=") {
                    let mut lowers = Vec::new();
                    for dir in l.split(':') {
                        let fd = idmapped_tree(Path::new(dir), &ns)?;
                        lowers.push(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
                        held.push(fd);
                    }
                    options.push(format!("lowerdir={}", lowers.join(":")));
                } else {
                    if let Some(upper) = o.strip_prefix("upperdir=") {
                        hand_over(Path::new(upper), owner)?;
                    }
                    options.push(o.clone());
                }
            }
            let read_only = m.options.iter().any(|o| o == "ro");
            mount_overlay(&options, target, read_only)
        }
        "bind" | "rbind" => {
            hand_over(Path::new(&m.source), owner)?;
            let fd = idmapped_tree(Path::new(&m.source), &ns)?;
            rustix::mount::move_mount(
                &fd,
                "",
                rustix::fs::CWD,
                target,
                rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
            )
            .map_err(|e| {
                with_context(
                    e.into(),
                    format!("attaching the idmapped rootfs at {}", target.display()),
                )
            })
        }
        _ => mount_all(mounts, target, false),
    }
}

/// Mounts the tree at `dir` at `at` (an existing directory) with its ids
/// seen through the map of the user namespace at `userns`: what the
/// namespace's root writes there is stored as root's on disk, and a file
/// root owns on disk is its root's inside.
pub fn bind_idmapped(dir: &Path, at: &Path, userns: &Path) -> io::Result<()> {
    let ns = std::fs::File::open(userns)
        .map_err(|e| with_context(e, format!("opening the user namespace {}", userns.display())))?;
    let fd = idmapped_tree(dir, &ns)?;
    rustix::mount::move_mount(
        &fd,
        "",
        rustix::fs::CWD,
        at,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        with_context(
            e.into(),
            format!("attaching the idmapped {} at {}", dir.display(), at.display()),
        )
    })
}

/// A detached copy of the tree at `dir` whose ids are seen through the map
/// of the user namespace `ns`.
fn idmapped_tree(dir: &Path, ns: &std::fs::File) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let fd = rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| with_context(e.into(), format!("cloning {}", dir.display())))?;
    // `struct mount_attr` of the kernel's uapi; mount_setattr has no wrapper
    // in rustix.
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: std::os::fd::AsRawFd::as_raw_fd(ns) as u64,
    };
    // SAFETY: mount_setattr reads `attr` (of the size given) and changes only
    // the detached tree `fd` names.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(with_context(
            io::Error::last_os_error(),
            format!(
                "idmapping {} (its filesystem may not support idmapped mounts)",
                dir.display()
            ),
        ));
    }
    Ok(fd)
}

/// Gives a new container's writable directory (still as the snapshotter
/// made it, root's) to the user namespace's root.
fn hand_over(dir: &Path, (uid, gid): (u32, u32)) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if std::os::unix::fs::MetadataExt::uid(&meta) == 0 && std::os::unix::fs::MetadataExt::gid(&meta) == 0 {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            with_context(
                e,
                format!("handing {} to the user namespace's root", dir.display()),
            )
        })?;
    }
    Ok(())
}

fn with_context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Overlay options written relative to a directory, ready to mount from it.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    /// Where the relative paths start; `/` when they are absolute.
    base: PathBuf,
    data: String,
    lowers: usize,
}

fn mount_overlay(options: &[String], target: &Path, read_only: bool) -> io::Result<()> {
    let target = std::path::absolute(target)?;
    let opts = relative_options(options);
    if opts.lowers > OVERLAY_MAX_LOWERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the image has {} layers; an overlay mount takes at most {OVERLAY_MAX_LOWERS}",
                opts.lowers
            ),
        ));
    }
    let limit = rustix::param::page_size() - 1;
    if opts.data.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the image has {} layers: their overlay mount options take {} bytes even relative \
                 to {}, over the kernel's limit of {limit} (one page)",
                opts.lowers,
                opts.data.len(),
                opts.base.display()
            ),
        ));
    }
    let flags = if read_only {
        MountFlags::RDONLY
    } else {
        MountFlags::empty()
    };
    let data = std::ffi::CString::new(opts.data).map_err(io::Error::other)?;
    let base = opts.base;
    if base == Path::new("/") {
        return mount("overlay", &target, "overlay", flags, data.as_c_str())
            .map_err(|e| with_context(e.into(), format!("mounting overlay at {}", target.display())));
    }
    // A thread of its own, so the working directory it moves to is no one else's.
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS only gives this thread its own root, working
            // directory and umask; no file descriptor table is unshared.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(|e| with_context(e.into(), "giving the mount thread its own directory".into()))?;
            rustix::process::chdir(&base)
                .map_err(|e| with_context(e.into(), format!("entering {}", base.display())))?;
            mount("overlay", &target, "overlay", flags, data.as_c_str())
                .map_err(|e| with_context(e.into(), format!("mounting overlay at {}", target.display())))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}

/// The overlay data string with every directory relative to their common
/// parent; options other than directories (and `ro`/`rw`, which are flags)
/// are kept as they are.
fn relative_options(options: &[String]) -> Options {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut lowers = 0;
    for o in options {
        if let Some(l) = o.strip_prefix("lowerdir=") {
            for p in l.split(':') {
                dirs.push(PathBuf::from(p));
                lowers += 1;
            }
        } else if let Some(p) = o.strip_prefix("upperdir=").or_else(|| o.strip_prefix("workdir=")) {
            dirs.push(PathBuf::from(p));
        }
    }
    let base = common_parent(&dirs);
    // Below the base, every directory is a non-empty relative path.
    let rel = |p: &str| -> String {
        match Path::new(p).strip_prefix(&base) {
            Ok(r) if base != Path::new("/") => r.display().to_string(),
            _ => p.to_string(),
        }
    };
    let data: Vec<String> = options
        .iter()
        .filter(|o| *o != "ro" && *o != "rw")
        .map(|o| {
            if let Some(l) = o.strip_prefix("lowerdir=") {
                let v: Vec<String> = l.split(':').map(rel).collect();
                format!("lowerdir={}", v.join(":"))
            } else if let Some(p) = o.strip_prefix("upperdir=") {
                format!("upperdir={}", rel(p))
            } else if let Some(p) = o.strip_prefix("workdir=") {
                format!("workdir={}", rel(p))
            } else {
                o.clone()
            }
        })
        .collect();
    Options {
        base,
        data: data.join(","),
        lowers,
    }
}

/// The deepest directory above every one of `dirs` (all absolute); `/` when
/// they share none or one is not absolute.
fn common_parent(dirs: &[PathBuf]) -> PathBuf {
    let root = PathBuf::from("/");
    let Some(first) = dirs.first() else {
        return root;
    };
    if dirs
        .iter()
        .any(|d| !d.is_absolute() || d.components().any(|c| c == Component::ParentDir))
    {
        return root;
    }
    let mut common: Vec<Component> = first
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for d in &dirs[1..] {
        let parent: Vec<Component> = d.parent().map(|p| p.components().collect()).unwrap_or_default();
        let n = common.iter().zip(&parent).take_while(|(a, b)| a == b).count();
        common.truncate(n);
    }
    if common.is_empty() {
        return root;
    }
    common.iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_paths_become_relative_to_the_snapshot_directory() {
        let opts = relative_options(&o(&[
            "workdir=/var/lib/molde/snapshots/overlayfs/c/work",
            "upperdir=/var/lib/molde/snapshots/overlayfs/c/fs",
            "lowerdir=/var/lib/molde/snapshots/overlayfs/b/fs:/var/lib/molde/snapshots/overlayfs/a/fs",
            "index=off",
            "ro",
        ]));
        assert_eq!(opts.base, Path::new("/var/lib/molde/snapshots/overlayfs"));
        assert_eq!(
            opts.data,
            "workdir=c/work,upperdir=c/fs,lowerdir=b/fs:a/fs,index=off"
        );
        assert_eq!(opts.lowers, 2);
    }

    #[test]
    fn directories_without_a_common_parent_stay_as_they_are() {
        let opts = relative_options(&o(&["lowerdir=/a/x:/b/y", "ro"]));
        assert_eq!(opts.base, Path::new("/"));
        assert_eq!(opts.data, "lowerdir=/a/x:/b/y");
        let opts = relative_options(&o(&["lowerdir=rel/x:/b/y"]));
        assert_eq!(opts.data, "lowerdir=rel/x:/b/y");
    }

    #[test]
    fn a_lower_that_holds_others_is_still_named() {
        let opts = relative_options(&o(&["upperdir=/s/1/fs", "lowerdir=/s/1:/s/2/fs"]));
        assert_eq!(opts.base, Path::new("/s"));
        assert_eq!(opts.data, "upperdir=1/fs,lowerdir=1:2/fs");
    }

    #[test]
    fn too_many_layers_are_refused_with_the_reason() {
        let lowers: Vec<String> = (0..400)
            .map(|i| format!("/var/lib/molde/snapshots/overlayfs/{i:020}/fs"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let err = mount_all(
            &[Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![format!("lowerdir={}", lowers.join(":"))],
            }],
            dir.path(),
            true,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("400 layers") && msg.contains("one page"), "{msg}");
    }
}
