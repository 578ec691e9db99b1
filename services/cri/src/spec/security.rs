//! A container's security context as the OCI spec says it: capabilities
//! (within what the host may grant), seccomp profiles and AppArmor.

use std::collections::HashSet;
use std::path::Path;

use k8s_cri::v1 as cri;
use molde_common::errdefs::Error;
use molde_common::spec::{default_capabilities, default_seccomp};
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxSeccomp};

use super::bad;

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

pub(super) fn capability(name: &str) -> Result<Capability, Error> {
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

fn all_capabilities() -> HashSet<Capability> {
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

/// Drops what this host cannot grant, saying so.
fn within_host(set: HashSet<Capability>) -> HashSet<Capability> {
    let allowed = all_capabilities();
    let (keep, dropped): (HashSet<Capability>, HashSet<Capability>) =
        set.into_iter().partition(|c| allowed.contains(c));
    if !dropped.is_empty() {
        tracing::info!(capabilities = ?dropped, "capabilities this host does not have are not granted");
    }
    keep
}

fn caps(set: HashSet<Capability>) -> LinuxCapabilities {
    let mut c = LinuxCapabilities::default();
    c.set_bounding(Some(set.clone()));
    c.set_effective(Some(set.clone()));
    c.set_permitted(Some(set));
    c.set_inheritable(None);
    c.set_ambient(None);
    c
}

/// The capabilities a container gets: the defaults (or all, privileged),
/// with the config's adds and drops (`ALL` in either).
pub fn capabilities(sc: &cri::LinuxContainerSecurityContext) -> Result<LinuxCapabilities, Error> {
    let mut set: HashSet<Capability> = if sc.privileged {
        all_capabilities()
    } else {
        default_capabilities()
            .map_err(bad)?
            .bounding()
            .clone()
            .unwrap_or_default()
    };
    if let Some(c) = &sc.capabilities {
        if c.add_capabilities.iter().any(|a| a.eq_ignore_ascii_case("ALL")) {
            set = all_capabilities();
        } else {
            for a in &c.add_capabilities {
                set.insert(capability(a)?);
            }
        }
        if c.drop_capabilities.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
            set.clear();
            // What is added explicitly survives a drop of ALL, as containerd does.
            for a in c
                .add_capabilities
                .iter()
                .filter(|a| !a.eq_ignore_ascii_case("ALL"))
            {
                set.insert(capability(a)?);
            }
        } else {
            for d in &c.drop_capabilities {
                set.remove(&capability(d)?);
            }
        }
    }
    Ok(caps(within_host(set)))
}

/// The seccomp profile a container runs under; None for unconfined.
// The deprecated `seccomp_profile_path` is still what older kubelets send.
#[allow(deprecated)]
pub fn seccomp(sc: &cri::LinuxContainerSecurityContext) -> Result<Option<LinuxSeccomp>, Error> {
    use cri::security_profile::ProfileType;
    if sc.privileged {
        return Ok(None);
    }
    let (kind, local) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::Unconfined),
            p.localhost_ref.clone(),
        ),
        None => match sc.seccomp_profile_path.as_str() {
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
            p if p.starts_with("localhost/") => (ProfileType::Localhost, p["localhost/".len()..].to_string()),
            "" | "unconfined" => (ProfileType::Unconfined, String::new()),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile {other:?}: expected runtime/default, unconfined or localhost/PATH"
                )));
            }
        },
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(default_seccomp()?)),
        ProfileType::Localhost => {
            let text = std::fs::read_to_string(&local)
                .map_err(|e| Error::InvalidArgument(format!("seccomp profile {local}: {e}")))?;
            let profile: LinuxSeccomp = serde_json::from_str(&text)
                .map_err(|e| Error::InvalidArgument(format!("seccomp profile {local}: {e}")))?;
            Ok(Some(profile))
        }
    }
}

/// Refuses an AppArmor profile on a host without AppArmor (the runtime
/// default means "none" there).
#[allow(deprecated)]
pub(super) fn check_apparmor(sc: &cri::LinuxContainerSecurityContext) -> Result<(), Error> {
    use cri::security_profile::ProfileType;
    let wants = match &sc.apparmor {
        Some(p) => p.profile_type == ProfileType::Localhost as i32,
        None => sc.apparmor_profile.starts_with("localhost/"),
    };
    if wants && !Path::new("/sys/kernel/security/apparmor").exists() {
        return Err(Error::InvalidArgument(
            "an AppArmor profile was asked for, but AppArmor is not enabled on this host".into(),
        ));
    }
    Ok(())
}
