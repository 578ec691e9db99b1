//! The container's seccomp filter for processes exec'd into it.
//!
//! libcontainer's tenant builder starts an exec'd process from a spec of its
//! own that keeps the container's namespaces, cgroup and capabilities but not
//! its seccomp profile. This executor loads that profile last, right before
//! the process's own `execve`, so what the container may not call, its exec'd
//! processes may not call either.
//!
//! Loading a filter takes `no_new_privs` or `CAP_SYS_ADMIN`. A container
//! without `no_new_privs` may lack `CAP_SYS_ADMIN`; its exec'd process is then
//! given `CAP_SYS_ADMIN` (and `CAP_SETPCAP`, to drop from the bounding set) for
//! the load only, and loses them before `execve`: it runs with exactly the
//! container's capabilities, as runc's exec leaves it.

use caps::{CapSet, Capability};
use libcontainer::capabilities::CapabilityExt;
use libcontainer::oci_spec::runtime::{Capability as SpecCapability, LinuxSeccomp, Process, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// What an exec'd process needs to load the container's filter: the profile
/// and the capabilities it lends the process for the load.
#[derive(Clone, Default)]
pub(crate) struct Filter {
    profile: Option<LinuxSeccomp>,
    lent: Vec<Capability>,
}

impl Filter {
    /// The container's profile (from its config.json) and, when the container
    /// runs without `no_new_privs` and without `CAP_SYS_ADMIN`, the
    /// capabilities to lend its exec'd process for the load.
    pub(crate) fn of(spec: &Spec) -> Filter {
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
            return Filter::default();
        };
        let process = spec.process().as_ref();
        let nnp = process.and_then(|p| p.no_new_privileges()).unwrap_or(false);
        let held: Vec<Capability> = process
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.effective().as_ref())
            .map(|set| set.iter().map(CapabilityExt::to_cap).collect())
            .unwrap_or_default();
        let lent = if nnp || held.contains(&Capability::CAP_SYS_ADMIN) {
            Vec::new()
        } else {
            [Capability::CAP_SYS_ADMIN, Capability::CAP_SETPCAP]
                .into_iter()
                .filter(|c| !held.contains(c))
                .collect()
        };
        Filter {
            profile: Some(profile),
            lent,
        }
    }

    /// The capabilities lent for the load, as libcontainer names them.
    pub(crate) fn lent(&self) -> Vec<String> {
        self.lent.iter().map(|c| c.to_string()).collect()
    }

    /// Adds the lent capabilities to every set of a whole process (an exec
    /// with a terminal is given as one).
    pub(crate) fn lend_to(&self, process: &mut Process) {
        if self.lent.is_empty() {
            return;
        }
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let add = |set: &Option<std::collections::HashSet<SpecCapability>>| {
            let mut set = set.clone().unwrap_or_default();
            set.extend(self.lent.iter().map(|c| SpecCapability::from_cap(*c)));
            set
        };
        let (b, e, p, i) = (
            add(caps.bounding()),
            add(caps.effective()),
            add(caps.permitted()),
            caps.inheritable().clone(),
        );
        caps.set_bounding(Some(b))
            .set_effective(Some(e))
            .set_permitted(Some(p))
            .set_inheritable(i);
        process.set_capabilities(Some(caps));
    }
}

/// Runs the process as libcontainer's default executor does, after loading the
/// filter and giving back the lent capabilities.
#[derive(Clone)]
pub(crate) struct FilteredExecutor(pub(crate) Filter);

impl FilteredExecutor {
    fn load(&self) -> Result<(), ExecutorError> {
        let Some(profile) = &self.0.profile else {
            return Ok(());
        };
        let fd = libcontainer::seccomp::initialize_seccomp(profile)
            .map_err(|e| ExecutorError::Other(format!("loading the container's seccomp profile: {e}")))?;
        if let Some(fd) = fd {
            // A notify profile: nobody listens for an exec'd process.
            // SAFETY: the fd was just returned to us and is not used again.
            unsafe { libc::close(fd) };
        }
        // Bounding first: dropping from it takes CAP_SETPCAP, dropped last.
        for set in [
            CapSet::Bounding,
            CapSet::Ambient,
            CapSet::Inheritable,
            CapSet::Effective,
            CapSet::Permitted,
        ] {
            for cap in &self.0.lent {
                caps::drop(None, set, *cap).map_err(|e| {
                    ExecutorError::Other(format!("giving back {cap} ({set:?}) after loading seccomp: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

impl Executor for FilteredExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        self.load()?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::{
        LinuxBuilder, LinuxCapabilitiesBuilder, LinuxSeccompAction, LinuxSeccompBuilder, ProcessBuilder,
        SpecBuilder,
    };

    fn spec(nnp: bool, caps: &[Capability]) -> Spec {
        let set: std::collections::HashSet<_> = caps.iter().map(|c| SpecCapability::from_cap(*c)).collect();
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .no_new_privileges(nnp)
                    .capabilities(
                        LinuxCapabilitiesBuilder::default()
                            .effective(set)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .linux(
                LinuxBuilder::default()
                    .seccomp(
                        LinuxSeccompBuilder::default()
                            .default_action(LinuxSeccompAction::ScmpActAllow)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn lends_only_what_the_load_needs() {
        // no_new_privs: the kernel lets anyone load a filter.
        assert!(Filter::of(&spec(true, &[])).lent.is_empty());
        // CAP_SYS_ADMIN held: nothing to lend.
        assert!(
            Filter::of(&spec(false, &[Capability::CAP_SYS_ADMIN]))
                .lent
                .is_empty()
        );
        // Neither: both, but not one the container already holds.
        assert_eq!(
            Filter::of(&spec(false, &[Capability::CAP_CHOWN])).lent(),
            vec!["CAP_SYS_ADMIN", "CAP_SETPCAP"]
        );
        assert_eq!(
            Filter::of(&spec(false, &[Capability::CAP_SETPCAP])).lent(),
            vec!["CAP_SYS_ADMIN"]
        );
        // No profile: no filter and nothing lent.
        let mut bare = spec(false, &[]);
        bare.set_linux(None);
        let f = Filter::of(&bare);
        assert!(f.profile.is_none() && f.lent.is_empty());
    }
}
