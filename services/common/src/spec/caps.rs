//! Capabilities by name, and every capability this host can grant.

use std::collections::HashSet;

use oci_spec::runtime::Capability;

use crate::errdefs::Error;

/// Every capability, by number (for privileged containers, up to what this kernel knows).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A capability by name, with or without its `CAP_` prefix, in any case.
pub fn capability(name: &str) -> Result<Capability, Error> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| Error::InvalidArgument(format!("capability {name:?}: no such capability")))
}

/// The capabilities molded itself may pass on: its bounding set (root may
/// lack some, e.g. CAP_SYS_RESOURCE on some hosts, and cannot grant those).
fn host_bounding() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Every capability this kernel knows and molded may pass on: what a
/// privileged container gets.
pub fn all_capabilities() -> HashSet<Capability> {
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(37);
    let bounding = host_bounding();
    ALL_CAPS
        .iter()
        .enumerate()
        .take(last + 1)
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .filter_map(|(_, c)| capability(c).ok())
        .collect()
}

/// The capabilities a container gets, as docker and containerd decide
/// them: the defaults (every one the host has, privileged), with `add` and
/// `drop` (`ALL` in either; what is added by name survives a drop of ALL);
/// what the host cannot grant is left out, and said.
pub fn container_capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
) -> Result<oci_spec::runtime::LinuxCapabilities, Error> {
    let all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut set: HashSet<Capability> = if privileged || add.iter().any(all) {
        all_capabilities()
    } else {
        super::default_capabilities()
            .map_err(|e| Error::Internal(format!("default capabilities: {e}")))?
            .bounding()
            .clone()
            .unwrap_or_default()
    };
    for a in add.iter().filter(|a| !all(a)) {
        set.insert(capability(a)?);
    }
    if drop.iter().any(all) {
        set.clear();
        for a in add.iter().filter(|a| !all(a)) {
            set.insert(capability(a)?);
        }
    } else {
        for d in drop {
            set.remove(&capability(d)?);
        }
    }
    let host = all_capabilities();
    let (keep, missing): (HashSet<Capability>, HashSet<Capability>) =
        set.into_iter().partition(|c| host.contains(c));
    if !missing.is_empty() {
        tracing::info!(capabilities = ?missing, "capabilities this host does not have are not granted");
    }
    let mut c = oci_spec::runtime::LinuxCapabilities::default();
    c.set_bounding(Some(keep.clone()));
    c.set_effective(Some(keep.clone()));
    c.set_permitted(Some(keep));
    c.set_inheritable(None);
    c.set_ambient(None);
    Ok(c)
}
