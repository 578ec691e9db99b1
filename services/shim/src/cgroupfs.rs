//! The container's view of its cgroups, made read-only.
//!
//! The OCI spec asks for `/sys/fs/cgroup` read-only (`"ro"` in its mount
//! options), but libcontainer mounts cgroup v1 controllers read-write: a
//! container could raise its own `memory.limit_in_bytes` or `pids.max` and
//! create sub-cgroups. Once libcontainer has built the container's mount
//! namespace, and before its process starts, the shim enters that namespace
//! in a child process and remounts every mount at or under the cgroup mount
//! point read-only, keeping its other flags. cgroup v2 (already mounted
//! read-only by libcontainer) goes through the same step, so both layouts end
//! the same way.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;

use anyhow::{Context, Result, bail};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use oci_spec::runtime::Spec;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Whether the spec mounts the cgroup hierarchy read-only (docker's
/// default): the `cgroup` mount, or a view of it made of bind mounts.
pub fn wants_read_only(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        let at = m.destination().as_os_str() == CGROUP_ROOT;
        let under = m.destination().starts_with(CGROUP_ROOT) && !at;
        let ro = m.options().iter().flatten().any(|o| o == "ro");
        ro && ((at && m.typ().as_deref() == Some("cgroup")) || (under && m.typ().as_deref() == Some("bind")))
    })
}

/// Remounts read-only every mount at or under /sys/fs/cgroup in the mount
/// namespace of `pid` (the created, not yet started, container init).
pub fn make_read_only(pid: Pid) -> Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/mnt"))
        .with_context(|| format!("opening the mount namespace of container process {pid}"))?;
    // Read from here: inside, /proc belongs to the container's pid namespace.
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .with_context(|| format!("reading the mounts of container process {pid}"))?;
    let mut targets: Vec<(String, MsFlags)> = info.lines().filter_map(parse_line).collect();
    // Deepest first, so a parent's remount never hides what is left to do.
    targets.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let (r, w) = nix::unistd::pipe().context("creating a pipe")?;
    // SAFETY: the shim is single-threaded here (libcontainer has created the
    // container; no log reader runs yet), so the child may allocate freely.
    match unsafe { fork() }.context("forking to enter the container's mount namespace")? {
        ForkResult::Child => {
            drop(r);
            let code = match remount_in(&ns, &targets) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = nix::unistd::write(&w, format!("{e:#}").as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut File::from(r), &mut msg);
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
                    Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                        bail!("making /sys/fs/cgroup read-only in the container: {msg}")
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => bail!("waiting for the cgroup remount helper: {e}"),
                }
            }
        }
    }
}

fn remount_in(ns: &File, targets: &[(String, MsFlags)]) -> Result<()> {
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).context("entering the mount namespace")?;
    for (path, flags) in targets {
        let flags = *flags;
        let c = CString::new(path.as_str())?;
        mount(
            None::<&str>,
            c.as_c_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | flags,
            None::<&str>,
        )
        .with_context(|| format!("remounting {path} read-only"))?;
    }
    Ok(())
}

/// A mountinfo line's mount point, when at or under /sys/fs/cgroup, with the
/// per-mount flags to keep.
fn parse_line(line: &str) -> Option<(String, MsFlags)> {
    let mut f = line.split(' ');
    let point = unescape(f.nth(4)?);
    let opts = f.next()?;
    let under = point == CGROUP_ROOT
        || point
            .strip_prefix(CGROUP_ROOT)
            .is_some_and(|rest| rest.starts_with('/'));
    if !under {
        return None;
    }
    let mut flags = MsFlags::empty();
    for o in opts.split(',') {
        flags |= match o {
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    Some((point, flags))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_under_the_cgroup_root() {
        let tmpfs = "100 90 0:50 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755";
        let (p, f) = parse_line(tmpfs).unwrap();
        assert_eq!(p, "/sys/fs/cgroup");
        assert_eq!(f, MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
        let comount = "101 100 0:30 /molde/x /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(parse_line(comount).unwrap().0, "/sys/fs/cgroup/cpu,cpuacct");
        assert!(parse_line("102 90 0:51 / /sys/fs/cgroupx rw - tmpfs tmpfs rw").is_none());
        assert!(parse_line("103 90 0:52 / /proc rw - proc proc rw").is_none());
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
