//! What every OCI runtime spec molde writes starts from, for `molde run`
//! (the runtime) and for pods (CRI): the capability set docker and
//! containerd give, their default seccomp profile, and rlimits clamped to
//! what this host allows.

use crate::errdefs::Error;

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building the runtime spec: {e}"))
}

/// The capabilities a container's process has: the set docker and
/// containerd give by default (enough for `chown`, reading any file as root,
/// `setuid` and the like), not the runtime spec's minimal three.
pub fn default_capabilities() -> Result<oci_spec::runtime::LinuxCapabilities, oci_spec::OciSpecError> {
    use oci_spec::runtime::Capability as C;
    let set: oci_spec::runtime::Capabilities = [
        C::Chown,
        C::DacOverride,
        C::Fsetid,
        C::Fowner,
        C::Mknod,
        C::NetRaw,
        C::Setgid,
        C::Setuid,
        C::Setfcap,
        C::Setpcap,
        C::NetBindService,
        C::SysChroot,
        C::Kill,
        C::AuditWrite,
    ]
    .into_iter()
    .collect();
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .build()
}

/// Keeps every rlimit at or below what this host allows: raising a hard limit
/// needs CAP_SYS_RESOURCE, which molded may lack (and a container start must
/// not fail for it). Clamped limits are logged.
pub fn clamp_rlimits(limits: Vec<oci_spec::runtime::PosixRlimit>) -> Vec<oci_spec::runtime::PosixRlimit> {
    use oci_spec::runtime::PosixRlimitType as T;
    limits
        .into_iter()
        .map(|mut l: oci_spec::runtime::PosixRlimit| {
            let res = match l.typ() {
                T::RlimitNofile => Some(libc::RLIMIT_NOFILE),
                T::RlimitNproc => Some(libc::RLIMIT_NPROC),
                T::RlimitStack => Some(libc::RLIMIT_STACK),
                T::RlimitCore => Some(libc::RLIMIT_CORE),
                T::RlimitMemlock => Some(libc::RLIMIT_MEMLOCK),
                _ => None,
            };
            if let Some(res) = res {
                let mut host = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                // SAFETY: getrlimit writes into the struct we lend it.
                if unsafe { libc::getrlimit(res, &mut host) } == 0 && host.rlim_max != libc::RLIM_INFINITY {
                    let max = host.rlim_max;
                    if l.hard() > max || l.soft() > max {
                        tracing::info!(limit = ?l.typ(), wanted = l.hard(), host_max = max, "rlimit clamped to the host's hard limit");
                        if let Ok(c) = oci_spec::runtime::PosixRlimitBuilder::default()
                            .typ(l.typ())
                            .hard(l.hard().min(max))
                            .soft(l.soft().min(max))
                            .build()
                        {
                            l = c;
                        }
                    }
                }
            }
            l
        })
        .collect()
}

/// A default seccomp profile: everything is allowed except syscalls a
/// container has no business making (loading kernel code, rebooting, swap,
/// clock changes, kernel keyrings, bpf, perf, namespaces and mounts of its
/// own), which fail with EPERM.
pub fn default_seccomp() -> Result<oci_spec::runtime::LinuxSeccomp, Error> {
    use oci_spec::runtime::{Arch, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};
    const DENIED: &[&str] = &[
        "acct",
        "add_key",
        "bpf",
        "clock_adjtime",
        "clock_settime",
        "create_module",
        "delete_module",
        "finit_module",
        "get_kernel_syms",
        "get_mempolicy",
        "init_module",
        "ioperm",
        "iopl",
        "kcmp",
        "kexec_file_load",
        "kexec_load",
        "keyctl",
        "lookup_dcookie",
        "mbind",
        "mount",
        "move_pages",
        "name_to_handle_at",
        "nfsservctl",
        "open_by_handle_at",
        "perf_event_open",
        "pivot_root",
        "process_vm_readv",
        "process_vm_writev",
        "quotactl",
        "reboot",
        "request_key",
        "set_mempolicy",
        "setns",
        "settimeofday",
        "swapoff",
        "swapon",
        "sysfs",
        "umount",
        "umount2",
        "unshare",
        "uselib",
        "userfaultfd",
        "ustat",
        "vm86",
        "vm86old",
    ];
    let arches = match std::env::consts::ARCH {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => vec![],
    };
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(arches)
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(DENIED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc_eperm())
                .build()
                .map_err(bad)?,
        ])
        .build()
        .map_err(bad)
}

fn libc_eperm() -> u32 {
    1
}
