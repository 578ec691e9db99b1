//! The default seccomp profile, an allow-list generated from one data file
//! (`seccomp.toml` beside this module, which says where its rules come from)
//! for the capabilities a container holds.
//!
//! The profile is written here rather than taken from a crate: no maintained
//! crate ships Docker's default profile as OCI types, and the rules are data,
//! so they live in the data file and this module only reads and selects them.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use serde::Deserialize;

use crate::errdefs::Error;

const PROFILE: &str = include_str!("seccomp.toml");

/// What a syscall outside the list gets.
const EPERM: u32 = libc::EPERM as u32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    rule: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    names: Vec<String>,
    action: Action,
    #[serde(default)]
    errno: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    not_caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Action {
    Allow,
    Errno,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    index: usize,
    value: u64,
    op: Op,
    #[serde(default)]
    mask: u64,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    MaskedEq,
}

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building the default seccomp profile: {e}"))
}

fn capability(name: &str) -> Result<Capability, Error> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| bad(format!("seccomp.toml names an unknown capability {name:?}")))
}

/// The seccomp architectures of this host: its own and the 32-bit ones its
/// kernel also runs (their syscalls numbered apart, so each needs the list).
fn arches() -> Vec<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => vec![],
    }
}

/// The default profile for a container whose bounding set is `held`:
/// syscalls outside the list fail with EPERM, those a capability grants are
/// allowed only with it.
pub fn default_profile(held: &HashSet<Capability>) -> Result<LinuxSeccomp, Error> {
    profile_for(held, std::env::consts::ARCH)
}

fn profile_for(held: &HashSet<Capability>, arch: &str) -> Result<LinuxSeccomp, Error> {
    let profile: Profile = toml::from_str(PROFILE).map_err(bad)?;
    let holds_any = |names: &[String]| -> Result<bool, Error> {
        for n in names {
            if held.contains(&capability(n)?) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    let mut syscalls: Vec<LinuxSyscall> = Vec::new();
    for rule in &profile.rule {
        if !rule.arches.is_empty() && !rule.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !rule.caps.is_empty() && !holds_any(&rule.caps)? {
            continue;
        }
        if holds_any(&rule.not_caps)? {
            continue;
        }
        syscalls.push(syscall(rule)?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(arches())
        .syscalls(syscalls)
        .build()
        .map_err(bad)
}

fn syscall(rule: &Rule) -> Result<LinuxSyscall, Error> {
    let mut b = LinuxSyscallBuilder::default().names(rule.names.clone());
    b = match rule.action {
        Action::Allow => b.action(LinuxSeccompAction::ScmpActAllow),
        Action::Errno => b
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(rule.errno.ok_or_else(|| bad("an errno rule without `errno`"))?),
    };
    if !rule.args.is_empty() {
        let args = rule
            .args
            .iter()
            .map(|a| {
                let b = LinuxSeccompArgBuilder::default().index(a.index);
                match a.op {
                    Op::Eq => b.op(LinuxSeccompOperator::ScmpCmpEq).value(a.value),
                    Op::Ne => b.op(LinuxSeccompOperator::ScmpCmpNe).value(a.value),
                    // The runtime spec's masked-equal (as runc and Docker's
                    // profiles read it): (arg & value) == valueTwo.
                    Op::MaskedEq => b
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .value(a.mask)
                        .value_two(a.value),
                }
                .build()
                .map_err(bad)
            })
            .collect::<Result<Vec<_>, _>>()?;
        b = b.args(args);
    }
    b.build().map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_allowed(p: &LinuxSeccomp) -> HashSet<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().clone())
            .collect()
    }

    fn rule_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    fn defaults() -> HashSet<Capability> {
        crate::spec::default_capabilities()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
    }

    #[test]
    fn the_default_denies_with_eperm_and_allows_a_list() {
        let p = profile_for(&defaults(), "x86_64").unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        let allowed = names_allowed(&p);
        for ordinary in [
            "read",
            "openat",
            "execve",
            "futex",
            "socketpair",
            "arch_prctl",
            "rseq",
        ] {
            assert!(allowed.contains(ordinary), "{ordinary} is allowed");
        }
        // Not on the list, whatever the capabilities: refused by the default.
        for never in [
            "io_uring_setup",
            "io_uring_enter",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
        ] {
            assert!(rule_for(&p, never).is_empty(), "{never} has no rule");
        }
        // Another architecture's calls are not listed here.
        assert!(!allowed.contains("cacheflush"));
    }

    #[test]
    fn namespaces_and_mounts_need_cap_sys_admin() {
        let p = profile_for(&defaults(), "x86_64").unwrap();
        for admin in [
            "unshare",
            "setns",
            "mount",
            "fsopen",
            "fsmount",
            "move_mount",
            "bpf",
            "open_tree",
        ] {
            assert!(
                rule_for(&p, admin).is_empty(),
                "{admin} is refused without CAP_SYS_ADMIN"
            );
        }
        // clone only without namespace flags; clone3 answers ENOSYS.
        let clone = rule_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = &clone[0].args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (arg.index(), arg.value(), arg.value_two()),
            (0, 0x7e02_0000, Some(0))
        );
        let clone3 = rule_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));

        let mut admin = defaults();
        admin.insert(Capability::SysAdmin);
        let p = profile_for(&admin, "x86_64").unwrap();
        let allowed = names_allowed(&p);
        for a in ["unshare", "setns", "mount", "clone", "clone3", "fsopen"] {
            assert!(allowed.contains(a), "{a} is allowed with CAP_SYS_ADMIN");
        }
        // Unconditionally: no masked clone rule, no ENOSYS for clone3.
        assert!(rule_for(&p, "clone").iter().all(|r| r.args().is_none()));
        assert!(
            rule_for(&p, "clone3")
                .iter()
                .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        );
    }

    #[test]
    fn capabilities_bring_their_syscalls() {
        let mut held = defaults();
        assert!(!names_allowed(&profile_for(&held, "x86_64").unwrap()).contains("ptrace"));
        held.insert(Capability::SysPtrace);
        held.insert(Capability::SysTime);
        let allowed = names_allowed(&profile_for(&held, "x86_64").unwrap());
        assert!(allowed.contains("ptrace") && allowed.contains("process_vm_readv"));
        assert!(allowed.contains("settimeofday"));
        // CAP_SYS_CHROOT is a default capability, and chroot comes with it.
        assert!(allowed.contains("chroot"));
    }

    #[test]
    fn personality_and_socket_are_filtered_by_argument() {
        let p = profile_for(&defaults(), "x86_64").unwrap();
        let values: HashSet<u64> = rule_for(&p, "personality")
            .iter()
            .map(|r| r.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(values, HashSet::from([0, 8, 0x20000, 0x20008, 0xffff_ffff]));
        let socket = rule_for(&p, "socket");
        let arg = &socket[0].args().as_ref().unwrap()[0];
        assert_eq!((arg.op(), arg.value()), (LinuxSeccompOperator::ScmpCmpNe, 40));
    }

    #[test]
    fn each_architecture_gets_its_own_extras() {
        let arm = names_allowed(&profile_for(&defaults(), "aarch64").unwrap());
        assert!(arm.contains("cacheflush") && !arm.contains("arch_prctl"));
    }
}
