//! Which devices a container may use: the device cgroup rules every
//! container starts from (deny everything, then the few devices a process
//! needs, as docker and containerd allow), the rule and node of a device a
//! user asked for, and the host's devices for a privileged container.
//!
//! The rules go into `linux.resources.devices`; the runtime turns them into
//! the v1 devices controller's allow/deny lists or, on cgroup v2, into the
//! BPF device program attached to the container's cgroup.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::errdefs::Error;

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// The rules every unprivileged container starts from: nothing, then mknod
/// of any node (using one is what needs a rule), and null, zero, full,
/// random, urandom, tty, console, ptmx, the pseudo-terminals and tun.
pub fn default_device_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{A, B, C};
    let mut rules = vec![
        rule(false, A, None, None, "rwm"),
        rule(true, C, None, None, "m"),
        rule(true, B, None, None, "m"),
    ];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (10, 200),
    ] {
        rules.push(rule(true, C, Some(major), Some(minor), "rwm"));
    }
    rules.push(rule(true, C, Some(136), None, "rwm"));
    rules
}

/// The rule of a privileged container: every device.
pub fn all_devices_rule() -> LinuxDeviceCgroup {
    rule(true, LinuxDeviceType::A, None, None, "rwm")
}

/// A host device as the container sees it at `container` (the host path
/// when empty), and the rule that lets it use the device with `permissions`
/// (some of `rwm`; all three when empty).
pub fn device(
    host: &str,
    container: &str,
    permissions: &str,
) -> Result<(LinuxDevice, LinuxDeviceCgroup), Error> {
    let permissions = if permissions.is_empty() {
        "rwm"
    } else {
        permissions
    };
    if !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(Error::InvalidArgument(format!(
            "device {host}: permissions {permissions:?}: expected some of r, w and m"
        )));
    }
    let target = if container.is_empty() { host } else { container };
    if !target.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "device {host}: the container path {target:?} must be absolute"
        )));
    }
    let md = std::fs::metadata(host).map_err(|e| Error::InvalidArgument(format!("device {host}: {e}")))?;
    let (node, _) = node(Path::new(target), &md)
        .ok_or_else(|| Error::InvalidArgument(format!("device {host}: not a device")))?;
    let r = rule(
        true,
        node.typ(),
        Some(node.major()),
        Some(node.minor()),
        permissions,
    );
    Ok((node, r))
}

/// The node of a character or block device, with its type.
fn node(at: &Path, md: &std::fs::Metadata) -> Option<(LinuxDevice, LinuxDeviceType)> {
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = md.rdev();
    let mut d = LinuxDevice::default();
    d.set_path(at.to_path_buf());
    d.set_typ(typ);
    d.set_major(libc::major(rdev) as i64);
    d.set_minor(libc::minor(rdev) as i64);
    d.set_file_mode(Some(md.mode() & 0o777));
    d.set_uid(Some(md.uid()));
    d.set_gid(Some(md.gid()));
    Some((d, typ))
}

/// Every device node under the host's /dev, for a privileged container, but
/// those the container's own /dev provides (its pseudo-terminals, shared
/// memory, message queues) and the host's console.
pub fn host_devices() -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

fn walk(dir: &Path, out: &mut Vec<LinuxDevice>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path: PathBuf = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            let skip = ["/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd"]
                .iter()
                .any(|s| path == Path::new(s))
                || e.file_name().to_string_lossy().starts_with('.');
            if !skip {
                walk(&path, out);
            }
        } else if path != Path::new("/dev/console")
            && let Some((d, _)) = node(&path, &md)
        {
            out.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_deny_first_then_allow_what_a_process_needs() {
        let rules = default_device_rules();
        assert!(!rules[0].allow());
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        let allowed: Vec<String> = rules[1..].iter().map(|r| r.to_string()).collect();
        for want in [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:9 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
        ] {
            assert!(allowed.iter().any(|a| a == want), "{want} in {allowed:?}");
        }
        // The kernel log (1:11) and kvm (10:232) are not among them.
        assert!(
            !allowed
                .iter()
                .any(|a| a.starts_with("c 1:11") || a.starts_with("c 10:232"))
        );
    }

    #[test]
    fn a_requested_device_gets_the_permissions_asked() {
        let (node, rule) = device("/dev/null", "/dev/mynull", "r").unwrap();
        assert_eq!(node.path(), Path::new("/dev/mynull"));
        assert_eq!((node.major(), node.minor()), (1, 3));
        assert_eq!(rule.to_string(), "c 1:3 r");
        assert!(device("/dev/null", "", "rx").is_err());
        assert!(device("/etc/hostname", "", "").is_err());
        assert!(device("/dev/null", "dev/null", "").is_err());
    }

    #[test]
    fn host_devices_lists_dev_without_pseudo_terminals() {
        let all = host_devices();
        assert!(all.iter().any(|d| d.path() == Path::new("/dev/null")));
        assert!(!all.iter().any(|d| d.path().starts_with("/dev/pts")));
    }
}
