//! A container's security context as the OCI spec says it: capabilities
//! (within what the host may grant), seccomp profiles and AppArmor.

use std::path::Path;

use k8s_cri::v1 as cri;
use molde_common::errdefs::Error;
use molde_common::spec::{container_capabilities, default_seccomp};
use oci_spec::runtime::{LinuxCapabilities, LinuxSeccomp};

/// The capabilities a container gets: the shared rule
/// (`molde_common::spec::container_capabilities`) on the config's adds and
/// drops.
pub fn capabilities(sc: &cri::LinuxContainerSecurityContext) -> Result<LinuxCapabilities, Error> {
    let (add, drop) = sc
        .capabilities
        .as_ref()
        .map(|c| (c.add_capabilities.clone(), c.drop_capabilities.clone()))
        .unwrap_or_default();
    container_capabilities(sc.privileged, &add, &drop)
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
