//! The OCI runtime spec a container gets, one set of rules for `molde run`
//! (the runtime, and the builder's RUN through it) and for pods (CRI): the
//! process from image config and request ([`process`]), the mounts besides
//! the spec's defaults ([`mounts`]), the capability set docker and
//! containerd give, their default seccomp profile (an allow-list, in
//! `spec/seccomp.toml`), devices, and rlimits clamped to what this host
//! allows. The runtime's and CRI's `spec.rs` only translate their request
//! into these.

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

mod caps;
mod devices;
pub mod mounts;
pub mod process;
mod seccomp;
pub use caps::{all_capabilities, capability, container_capabilities};
pub use devices::{all_devices_rule, default_device_rules, device, host_devices};
pub use seccomp::default_profile as default_seccomp;

/// The mounts that give a container its own cgroup v1 view without
/// libcontainer's `cgroup` mount: a tmpfs at /sys/fs/cgroup and, for every
/// controller hierarchy this host mounts there, the container's cgroup
/// directory bound at that hierarchy's place (read-only), its aliases
/// (`cpu` for `cpu,cpuacct`) too. `None` on a cgroup v2 host.
///
/// A container that joins another PID namespace (a pod's) needs this:
/// libcontainer's own v1 mount reads `/proc/<its pid in that namespace>`
/// from the host's /proc, which names another process or none at all, and
/// the container then fails to start. The directories exist by the time the
/// container's mounts are made: libcontainer creates the cgroups first.
pub fn cgroup_v1_view(cgroups_path: &std::path::Path) -> Option<Vec<oci_spec::runtime::Mount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let aliases: Vec<(String, String)> = std::fs::read_dir(CGROUP_ROOT)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                target.file_name()?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    cgroup_v1_mounts(&info, &aliases, cgroups_path)
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// [`cgroup_v1_view`] from a mountinfo text and the aliases (symlink name,
/// target) found in /sys/fs/cgroup.
fn cgroup_v1_mounts(
    mountinfo: &str,
    aliases: &[(String, String)],
    cgroups_path: &std::path::Path,
) -> Option<Vec<oci_spec::runtime::Mount>> {
    use oci_spec::runtime::MountBuilder;
    let rel = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    // Controller hierarchies (not named ones such as name=systemd, whose
    // cgroup for the container is not libcontainer's to create).
    let mut hierarchies: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let (fstype, _src, opts) = (r.next()?, r.next()?, r.next()?);
            if fstype != "cgroup" || opts.split(',').any(|o| o.starts_with("name=")) {
                return None;
            }
            let point = left.split(' ').nth(4)?;
            let name = point.strip_prefix(CGROUP_ROOT)?.strip_prefix('/')?;
            (!name.is_empty() && !name.contains('/')).then(|| name.to_string())
        })
        .collect();
    if hierarchies.is_empty() {
        return None;
    }
    hierarchies.sort();
    hierarchies.dedup();
    let mut mounts = vec![
        MountBuilder::default()
            .destination(CGROUP_ROOT)
            .typ("tmpfs")
            .source("tmpfs")
            .options(
                ["nosuid", "nodev", "noexec", "mode=755"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .ok()?,
    ];
    let bind = |name: &str, hierarchy: &str| {
        let source = std::path::Path::new(CGROUP_ROOT).join(hierarchy).join(rel);
        MountBuilder::default()
            .destination(format!("{CGROUP_ROOT}/{name}"))
            .typ("bind")
            .source(source)
            .options(
                ["bind", "nosuid", "nodev", "noexec", "ro"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .ok()
    };
    for h in &hierarchies {
        mounts.push(bind(h, h)?);
    }
    for (alias, target) in aliases {
        if hierarchies.contains(target) && !hierarchies.contains(alias) {
            mounts.push(bind(alias, target)?);
        }
    }
    Some(mounts)
}

#[cfg(test)]
mod cgroup_view_tests {
    use super::*;

    #[test]
    fn a_v1_host_gives_one_bind_per_hierarchy_and_alias() {
        let info = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:17 - cgroup cgroup rw,memory
40 25 0:40 / /proc rw - proc proc rw";
        let aliases = [
            ("cpu".to_string(), "cpu,cpuacct".to_string()),
            ("cpuacct".to_string(), "cpu,cpuacct".to_string()),
        ];
        let mounts = cgroup_v1_mounts(info, &aliases, std::path::Path::new("/k8s.io/abc")).unwrap();
        let got: Vec<(String, String)> = mounts
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.source().as_ref().unwrap().display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/sys/fs/cgroup", "tmpfs"),
                (
                    "/sys/fs/cgroup/cpu,cpuacct",
                    "/sys/fs/cgroup/cpu,cpuacct/k8s.io/abc"
                ),
                ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/memory/k8s.io/abc"),
                ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct/k8s.io/abc"),
                ("/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct/k8s.io/abc"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert!(
            mounts[1..]
                .iter()
                .all(|m| m.options().as_ref().unwrap().contains(&"ro".to_string()))
        );
        // A pure cgroup v2 host: nothing to emulate.
        let v2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw";
        assert!(cgroup_v1_mounts(v2, &[], std::path::Path::new("/x")).is_none());
    }
}
