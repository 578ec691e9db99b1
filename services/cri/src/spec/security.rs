//! A container's security context as the OCI spec says it: capabilities
//! (within what the host may grant), seccomp profiles and AppArmor.

use std::collections::HashSet;
use std::path::Path;

use k8s_cri::v1 as cri;
use molde_common::errdefs::Error;
use molde_common::spec::{all_capabilities, capability, default_capabilities, default_seccomp};
use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxSeccomp};

use super::bad;

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
        // The default profile allows what the container's capabilities grant.
        ProfileType::RuntimeDefault => {
            let held = capabilities(sc)?.bounding().clone().unwrap_or_default();
            Ok(Some(default_seccomp(&held)?))
        }
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
