//! The OCI runtime spec of a pod's container, from its ContainerConfig, the
//! pod's sandbox and the image: process (command, env, user, terminal),
//! the pod's namespaces and files, mounts and devices, resources under the
//! pod's cgroup, and the security context (capabilities, seccomp, no new
//! privileges, read-only rootfs, masked paths, privileged).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode;
use molde_common::errdefs::Error;
use molde_common::spec::{clamp_rlimits, default_capabilities, default_seccomp};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxResources, LinuxSeccomp, Mount,
    Spec, User,
};

use crate::image::ImageInfo;
use crate::sandbox::netns_mode;
use crate::store::SandboxRecord;

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building the container's spec: {e}"))
}

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

fn capability(name: &str) -> Result<Capability, Error> {
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
fn check_apparmor(sc: &cri::LinuxContainerSecurityContext) -> Result<(), Error> {
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

/// `KEY=VALUE` lists merged by key, later ones winning.
fn merge_env(base: &[String], extra: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let key = e.split('=').next().unwrap_or("").to_string();
        match out.iter_mut().find(|o| o.split('=').next() == Some(key.as_str())) {
            Some(o) => *o = e,
            None => out.push(e),
        }
    }
    out
}

/// The argv the container runs, by Kubernetes' rule: `command` replaces the
/// image's entrypoint, `args` its cmd.
pub fn argv(c: &cri::ContainerConfig, image: &oci_spec::image::Config) -> Vec<String> {
    let entry = if c.command.is_empty() {
        image.entrypoint().clone().unwrap_or_default()
    } else {
        c.command.clone()
    };
    let args = if !c.args.is_empty() {
        c.args.clone()
    } else if c.command.is_empty() {
        image.cmd().clone().unwrap_or_default()
    } else {
        Vec::new()
    };
    entry.into_iter().chain(args).collect()
}

fn bind(dst: &str, src: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dst));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// What a container's spec is made from.
pub struct Inputs<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a SandboxRecord,
    pub image: &'a ImageInfo,
    pub image_name: &'a str,
    /// The user the process runs as (resolved from names by the caller).
    pub uid: u32,
    pub gid: u32,
    /// Groups the image gives the user, besides its primary one.
    pub groups: Vec<u32>,
    pub cgroup_driver: &'a str,
}

pub fn build(i: &Inputs<'_>) -> Result<Spec, Error> {
    let c = i.config;
    let linux_cfg = c.linux.clone().unwrap_or_default();
    let sc = linux_cfg.security_context.clone().unwrap_or_default();
    check_apparmor(&sc)?;
    let args = argv(c, &i.image.process);
    if args.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "container {:?}: no command, and the image has none",
            c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("")
        )));
    }
    let pod_dir = PathBuf::from(&i.sandbox.dir);
    let (net_mode, pid_mode, ipc_mode) = netns_mode(&i.sandbox.config);
    let host_net = net_mode == NamespaceMode::Node as i32;
    let hostname = std::fs::read_to_string(pod_dir.join("hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();

    let mut env = i.image.process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    env = merge_env(&env, [format!("HOSTNAME={hostname}")]);
    env = merge_env(&env, c.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    let cwd = if !c.working_dir.is_empty() {
        c.working_dir.clone()
    } else {
        i.image
            .process
            .working_dir()
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };

    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_terminal(Some(c.tty));
    let mut user = User::default();
    user.set_uid(i.uid);
    user.set_gid(i.gid);
    let mut gids: Vec<u32> = i.groups.clone();
    for g in &sc.supplemental_groups {
        if !gids.contains(&(*g as u32)) {
            gids.push(*g as u32);
        }
    }
    if !gids.is_empty() {
        user.set_additional_gids(Some(gids));
    }
    process.set_user(user);
    process.set_capabilities(Some(capabilities(&sc)?));
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_rlimits(Some(clamp_rlimits(process.rlimits().clone().unwrap_or_default())));
    let res_cfg = linux_cfg.resources.clone().unwrap_or_default();
    if res_cfg.oom_score_adj != 0 {
        process.set_oom_score_adj(Some(clamp_oom_score_adj(res_cfg.oom_score_adj) as i32));
    }
    spec.set_process(Some(process));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(sc.readonly_rootfs));
    spec.set_root(Some(root));
    // The pod's UTS namespace (or the host's) already has its hostname.
    spec.set_hostname(None);

    // Mounts: the defaults, the pod's files, then the config's.
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
    if sc.privileged {
        for m in mounts.iter_mut() {
            if m.destination() == Path::new("/sys") || m.destination() == Path::new("/sys/fs/cgroup") {
                let opts: Vec<String> = m
                    .options()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|o| o != "ro")
                    .collect();
                m.set_options(Some(opts));
            }
        }
    }
    let shm = if ipc_mode == NamespaceMode::Node as i32 {
        PathBuf::from("/dev/shm")
    } else {
        pod_dir.join("shm")
    };
    let wanted: HashSet<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    mounts.push(bind("/dev/shm", &shm, &["rbind", "nosuid", "nodev", "noexec"]));
    for (dst, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        if !wanted.contains(dst) {
            let ro = if sc.readonly_rootfs { "ro" } else { "rw" };
            mounts.push(bind(dst, &pod_dir.join(file), &["rbind", "rprivate", ro]));
        }
    }
    let mut propagation = "";
    for m in &c.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: the container path must be absolute",
                m.container_path
            )));
        }
        let src = PathBuf::from(&m.host_path);
        if !src.exists() {
            // As containerd does: a missing host path becomes a directory.
            std::fs::create_dir_all(&src).map_err(|e| {
                Error::InvalidArgument(format!("mount {}: creating the host path: {e}", m.host_path))
            })?;
        }
        let prop = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationHostToContainer) => {
                propagation = if propagation == "rshared" {
                    "rshared"
                } else {
                    "rslave"
                };
                "rslave"
            }
            Ok(cri::MountPropagation::PropagationBidirectional) => {
                propagation = "rshared";
                "rshared"
            }
            _ => "rprivate",
        };
        let mut opts = vec!["rbind", prop];
        opts.push(if m.readonly { "ro" } else { "rw" });
        mounts.push(bind(&m.container_path, &src, &opts));
    }
    spec.set_mounts(Some(mounts));

    let mut annotations: HashMap<String, String> = c.annotations.clone();
    let pod = i.sandbox.config.metadata.clone().unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        (
            "io.kubernetes.cri.container-name",
            c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        ),
        ("io.kubernetes.cri.sandbox-id", i.sandbox.id.clone()),
        ("io.kubernetes.cri.sandbox-name", pod.name.clone()),
        ("io.kubernetes.cri.sandbox-namespace", pod.namespace.clone()),
        ("io.kubernetes.cri.sandbox-uid", pod.uid.clone()),
        ("io.kubernetes.cri.image-name", i.image_name.to_string()),
    ] {
        annotations.insert(k.to_string(), v);
    }
    spec.set_annotations(Some(annotations));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    for mut ns in linux.namespaces().clone().unwrap_or_default() {
        let path: Option<PathBuf> = match ns.typ() {
            LinuxNamespaceType::Network if host_net => continue,
            LinuxNamespaceType::Network => {
                Some(PathBuf::from(&i.sandbox.netns)).filter(|p| !p.as_os_str().is_empty())
            }
            LinuxNamespaceType::Uts if host_net => continue,
            LinuxNamespaceType::Uts => {
                Some(PathBuf::from(&i.sandbox.uts)).filter(|p| !p.as_os_str().is_empty())
            }
            LinuxNamespaceType::Ipc if ipc_mode == NamespaceMode::Node as i32 => continue,
            LinuxNamespaceType::Ipc => {
                Some(PathBuf::from(&i.sandbox.ipc)).filter(|p| !p.as_os_str().is_empty())
            }
            LinuxNamespaceType::Pid => {
                let own = sc.namespace_options.as_ref().map(|o| o.pid).unwrap_or(pid_mode);
                if own == NamespaceMode::Node as i32 || pid_mode == NamespaceMode::Node as i32 {
                    continue;
                }
                if pid_mode == NamespaceMode::Pod as i32 && i.sandbox.pid_init > 0 {
                    Some(PathBuf::from(format!("/proc/{}/ns/pid", i.sandbox.pid_init)))
                } else {
                    None
                }
            }
            _ => None,
        };
        ns.set_path(path);
        namespaces.push(ns);
    }
    linux.set_namespaces(Some(namespaces));

    let parent = i
        .sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    linux.set_cgroups_path(Some(cgroups_path(i.cgroup_driver, &parent, i.id)));

    let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
    if res_cfg.cpu_period > 0
        || res_cfg.cpu_quota > 0
        || res_cfg.cpu_shares > 0
        || !res_cfg.cpuset_cpus.is_empty()
        || !res_cfg.cpuset_mems.is_empty()
    {
        let mut cpu = LinuxCpu::default();
        if res_cfg.cpu_period > 0 {
            cpu.set_period(Some(res_cfg.cpu_period as u64));
        }
        if res_cfg.cpu_quota > 0 {
            cpu.set_quota(Some(res_cfg.cpu_quota));
        }
        if res_cfg.cpu_shares > 0 {
            cpu.set_shares(Some(res_cfg.cpu_shares as u64));
        }
        if !res_cfg.cpuset_cpus.is_empty() {
            cpu.set_cpus(Some(res_cfg.cpuset_cpus.clone()));
        }
        if !res_cfg.cpuset_mems.is_empty() {
            cpu.set_mems(Some(res_cfg.cpuset_mems.clone()));
        }
        resources.set_cpu(Some(cpu));
    }
    if res_cfg.memory_limit_in_bytes > 0 {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(res_cfg.memory_limit_in_bytes));
        if res_cfg.memory_swap_limit_in_bytes > 0 {
            mem.set_swap(Some(res_cfg.memory_swap_limit_in_bytes));
        }
        resources.set_memory(Some(mem));
    }
    if !res_cfg.hugepage_limits.is_empty() {
        let limits = res_cfg
            .hugepage_limits
            .iter()
            .map(|h| {
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone());
                l.set_limit(h.limit as i64);
                l
            })
            .collect();
        resources.set_hugepage_limits(Some(limits));
    }
    if !res_cfg.unified.is_empty() {
        resources.set_unified(Some(res_cfg.unified.clone()));
    }

    // Devices: the config's, and for privileged containers every device of the host.
    let mut devices: Vec<LinuxDevice> = linux.devices().clone().unwrap_or_default();
    let mut rules: Vec<LinuxDeviceCgroup> = resources.devices().clone().unwrap_or_default();
    for d in &c.devices {
        let (dev, rule) = device(&d.host_path, &d.container_path, &d.permissions)?;
        devices.push(dev);
        rules.push(rule);
    }
    if sc.privileged {
        let mut all = LinuxDeviceCgroup::default();
        all.set_allow(true);
        all.set_access(Some("rwm".into()));
        rules.push(all);
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    } else {
        if !sc.masked_paths.is_empty() {
            linux.set_masked_paths(Some(sc.masked_paths.clone()));
        }
        if !sc.readonly_paths.is_empty() {
            linux.set_readonly_paths(Some(sc.readonly_paths.clone()));
        }
    }
    linux.set_devices(Some(devices));
    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    let profile = seccomp(&sc)?;
    if profile.is_some() && !sc.no_new_privs {
        // youki's libcontainer loads a seccomp filter after the process gave
        // up CAP_SYS_ADMIN, which the kernel then refuses unless no new
        // privileges are allowed: a filtered process gets no_new_privs.
        let keeps_admin = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .and_then(|c| c.effective().clone())
            .is_some_and(|e| e.contains(&Capability::SysAdmin));
        if !keeps_admin && let Some(p) = spec.process_mut() {
            p.set_no_new_privileges(Some(true));
        }
    }
    linux.set_seccomp(profile);
    if !propagation.is_empty() {
        linux.set_rootfs_propagation(Some(propagation.into()));
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The container's cgroup: under the pod's parent (cgroupfs paths), or a
/// systemd scope name in the pod's slice.
pub fn cgroups_path(driver: &str, parent: &str, id: &str) -> PathBuf {
    if driver == "systemd" {
        let slice = Path::new(parent)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| s.ends_with(".slice"))
            .unwrap_or_else(|| "system.slice".into());
        return PathBuf::from(format!("{slice}:cri-molde:{id}"));
    }
    let parent = if parent.is_empty() { "/k8s.io" } else { parent };
    Path::new(parent).join(id)
}

/// Root may not lower this process's oom_score_adj on every host (no
/// CAP_SYS_RESOURCE): a container never gets less than molded has.
fn clamp_oom_score_adj(want: i64) -> i64 {
    let own: i64 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let want = want.clamp(-1000, 1000);
    if want < own && !can_lower_oom_score() {
        tracing::info!(
            wanted = want,
            given = own,
            "oom_score_adj clamped to what this host allows"
        );
        return own;
    }
    want
}

fn can_lower_oom_score() -> bool {
    // CAP_SYS_RESOURCE is bit 24 of the effective set.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1 << 24) != 0)
}

/// A host device as the container sees it, and the cgroup rule that allows it.
fn device(host: &str, container: &str, permissions: &str) -> Result<(LinuxDevice, LinuxDeviceCgroup), Error> {
    let md = std::fs::metadata(host).map_err(|e| Error::InvalidArgument(format!("device {host}: {e}")))?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(Error::InvalidArgument(format!("device {host}: not a device")));
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(if container.is_empty() { host } else { container }));
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(Some(md.mode() & 0o777));
    d.set_uid(Some(0));
    d.set_gid(Some(0));
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(true);
    r.set_typ(Some(typ));
    r.set_major(Some(major));
    r.set_minor(Some(minor));
    r.set_access(Some(if permissions.is_empty() {
        "rwm".into()
    } else {
        permissions.into()
    }));
    Ok((d, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut img = oci_spec::image::Config::default();
        img.set_entrypoint(Some(vec!["/entry".into()]));
        img.set_cmd(Some(vec!["default".into()]));
        let mut c = cri::ContainerConfig::default();
        assert_eq!(argv(&c, &img), ["/entry", "default"]);
        c.args = vec!["a".into()];
        assert_eq!(argv(&c, &img), ["/entry", "a"]);
        c.command = vec!["/bin/sh".into()];
        c.args.clear();
        assert_eq!(argv(&c, &img), ["/bin/sh"]);
        c.args = vec!["-c".into(), "x".into()];
        assert_eq!(argv(&c, &img), ["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn capabilities_add_and_drop_with_all() {
        let sc = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let has =
            |c: &LinuxCapabilities, n: &str| c.bounding().as_ref().unwrap().contains(&capability(n).unwrap());
        let c = capabilities(&sc(&["NET_ADMIN"], &["CHOWN"])).unwrap();
        assert!(has(&c, "CAP_NET_ADMIN") && !has(&c, "CHOWN") && has(&c, "KILL"));
        let c = capabilities(&sc(&[], &["ALL"])).unwrap();
        assert!(c.bounding().as_ref().unwrap().is_empty());
        let c = capabilities(&sc(&["SYS_TIME"], &["ALL"])).unwrap();
        assert_eq!(c.bounding().as_ref().unwrap().len(), 1);
        let c = capabilities(&sc(&["ALL"], &[])).unwrap();
        assert!(has(&c, "SYS_ADMIN"));
        assert!(capabilities(&sc(&["NOT_A_CAP"], &[])).is_err());
    }

    #[test]
    fn cgroups_go_under_the_pods_parent() {
        assert_eq!(
            cgroups_path("cgroupfs", "/kubepods/besteffort/pod1", "c1"),
            PathBuf::from("/kubepods/besteffort/pod1/c1")
        );
        assert_eq!(cgroups_path("cgroupfs", "", "c1"), PathBuf::from("/k8s.io/c1"));
        assert_eq!(
            cgroups_path("systemd", "/kubepods.slice/kubepods-pod1.slice", "c1"),
            PathBuf::from("kubepods-pod1.slice:cri-molde:c1")
        );
    }

    #[test]
    fn seccomp_profiles_by_type() {
        use cri::security_profile::ProfileType;
        let sc = |t: ProfileType| cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: "/nonexistent.json".into(),
            }),
            ..Default::default()
        };
        assert!(seccomp(&sc(ProfileType::RuntimeDefault)).unwrap().is_some());
        assert!(seccomp(&sc(ProfileType::Unconfined)).unwrap().is_none());
        assert!(seccomp(&sc(ProfileType::Localhost)).is_err());
        assert!(
            seccomp(&cri::LinuxContainerSecurityContext::default())
                .unwrap()
                .is_none()
        );
    }
}
