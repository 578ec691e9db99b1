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
use libcontainer::oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompOperator};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

/// The annotation that marks a config.json whose masked-equal comparisons
/// were already put in libcontainer's order.
const ARGS_ORDER: &str = "io.molde.seccomp.masked-eq";

/// Puts the spec's masked-equal comparisons in the order libcontainer reads
/// them; true when the spec changed (the caller saves it).
///
/// The runtime spec's `SCMP_CMP_MASKED_EQ` means `(arg & value) ==
/// valueTwo` (runc reads it so, and Docker's and containerd's profiles are
/// written so); libcontainer 0.7 hands `valueTwo` to libseccomp as the mask
/// and `value` as the datum, which makes a rule such as "clone without
/// namespace flags" allow every clone. Every config.json the shim runs
/// (molde's own, a CRI Localhost profile, a containerd client's) passes
/// through here once, marked by an annotation so it is never swapped twice.
pub(crate) fn order_args_for_libcontainer(spec: &mut Spec) -> bool {
    if spec
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(ARGS_ORDER))
    {
        return false;
    }
    let Some(seccomp) = spec.linux_mut().as_mut().and_then(|l| l.seccomp_mut().as_mut()) else {
        return false;
    };
    let mut changed = false;
    let mut syscalls = seccomp.syscalls().clone().unwrap_or_default();
    for call in &mut syscalls {
        let Some(args) = call.args().clone() else { continue };
        let swapped = args
            .iter()
            .map(|a| {
                if a.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
                    return *a;
                }
                changed = true;
                LinuxSeccompArgBuilder::default()
                    .index(a.index())
                    .op(a.op())
                    .value(a.value_two().unwrap_or(0))
                    .value_two(a.value())
                    .build()
                    .unwrap_or(*a)
            })
            .collect::<Vec<_>>();
        call.set_args(Some(swapped));
    }
    if !changed {
        return false;
    }
    seccomp.set_syscalls(Some(syscalls));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(ARGS_ORDER.to_string(), "libcontainer".to_string());
    spec.set_annotations(Some(annotations));
    true
}

/// What an exec'd process needs to load the container's filter: the profile
/// and the capabilities it lends the process for the load.
#[derive(Clone, Default)]
pub(crate) struct Filter {
    profile: Option<LinuxSeccomp>,
    lent: Vec<Capability>,
    /// The container is in a user namespace it joined by path (a pod's
    /// own), which the exec'd process must enter too.
    pub(crate) userns: bool,
}

impl Filter {
    /// The container's profile (from its config.json) and, when the container
    /// runs without `no_new_privs` and without `CAP_SYS_ADMIN`, the
    /// capabilities to lend its exec'd process for the load.
    pub(crate) fn of(spec: &Spec) -> Filter {
        let userns = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter().any(|n| {
                    n.typ() == libcontainer::oci_spec::runtime::LinuxNamespaceType::User && n.path().is_some()
                })
            });
        let Some(profile) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
            return Filter {
                userns,
                ..Filter::default()
            };
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
            userns,
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

/// Moves an exec'd process into its container's user namespace (a pod's
/// own), which libcontainer's tenant builder does not join: the ids and
/// capabilities libcontainer gave it are kept, now counted in that namespace
/// (uid 0 is the pod's root, not the host's). The container's init is PID 1
/// of the PID namespace the process already joined, so its user namespace is
/// `/proc/1/ns/user`; the process may enter it because the namespace
/// belongs to the host's root, which the process still is.
fn enter_container_userns() -> Result<(), ExecutorError> {
    let fail = |what: &str, e: std::io::Error| {
        ExecutorError::Other(format!("entering the pod's user namespace: {what}: {e}"))
    };
    // Bounding first; then the order capset allows from a full set:
    // inheritable and ambient while everything is permitted, effective
    // before permitted (effective must stay within permitted).
    let sets = [
        CapSet::Bounding,
        CapSet::Inheritable,
        CapSet::Ambient,
        CapSet::Effective,
        CapSet::Permitted,
    ];
    let saved: Vec<_> = sets
        .iter()
        .map(|&s| caps::read(None, s).map_err(|e| fail("reading capabilities", std::io::Error::other(e))))
        .collect::<Result<_, _>>()?;
    let ns = std::fs::File::open("/proc/1/ns/user").map_err(|e| fail("opening /proc/1/ns/user", e))?;
    // SAFETY: plain syscalls on this single-threaded process's own
    // credentials; `groups` is sized by the first getgroups call.
    unsafe {
        let (uid, gid) = (libc::geteuid(), libc::getegid());
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut groups = vec![0 as libc::gid_t; n.max(0) as usize];
        if n > 0 && libc::getgroups(n, groups.as_mut_ptr()) < 0 {
            return Err(fail("reading groups", std::io::Error::last_os_error()));
        }
        if libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWUSER) != 0 {
            return Err(fail("setns", std::io::Error::last_os_error()));
        }
        // Full capabilities in the namespace now; keep them across the id
        // change, then cut them back to what libcontainer gave.
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0
            || libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(gid, gid, gid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(fail(
                "taking the container's ids",
                std::io::Error::last_os_error(),
            ));
        }
    }
    let bounding = &saved[0];
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                fail(
                    &format!("dropping {cap} from the bounding set"),
                    std::io::Error::other(e),
                )
            })?;
        }
    }
    for (set, want) in sets.iter().zip(&saved).skip(1) {
        caps::set(None, *set, want)
            .map_err(|e| fail(&format!("setting {set:?}"), std::io::Error::other(e)))?;
    }
    Ok(())
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
        if self.0.userns {
            enter_container_userns()?;
        }
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
    fn masked_equal_comparisons_are_swapped_once() {
        let mut s = spec(true, &[]);
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .value(0x7e02_0000u64)
            .value_two(0u64)
            .build()
            .unwrap();
        let eq = LinuxSeccompArgBuilder::default()
            .index(1usize)
            .op(LinuxSeccompOperator::ScmpCmpEq)
            .value(8u64)
            .build()
            .unwrap();
        let call = libcontainer::oci_spec::runtime::LinuxSyscallBuilder::default()
            .names(vec!["clone".to_string()])
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(vec![arg, eq])
            .build()
            .unwrap();
        if let Some(sc) = s.linux_mut().as_mut().and_then(|l| l.seccomp_mut().as_mut()) {
            sc.set_syscalls(Some(vec![call]));
        }
        let args = |s: &Spec| {
            s.linux()
                .as_ref()
                .unwrap()
                .seccomp()
                .as_ref()
                .unwrap()
                .syscalls()
                .as_ref()
                .unwrap()[0]
                .args()
                .clone()
                .unwrap()
        };
        assert!(order_args_for_libcontainer(&mut s));
        let a = args(&s);
        assert_eq!((a[0].value(), a[0].value_two()), (0, Some(0x7e02_0000)));
        // Other comparisons are left alone.
        assert_eq!((a[1].value(), a[1].value_two()), (8, None));
        // Marked: a second pass (a restart) changes nothing.
        assert!(!order_args_for_libcontainer(&mut s));
        assert_eq!(args(&s)[0].value_two(), Some(0x7e02_0000));
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
