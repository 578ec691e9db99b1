//! The OCI runtime spec of a pod's container, from its ContainerConfig, the
//! pod's sandbox and the image: process (command, env, user, terminal),
//! the pod's namespaces and files, mounts and devices, resources under the
//! pod's cgroup, and the security context (capabilities, seccomp, no new
//! privileges, read-only rootfs, masked paths, privileged).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode;
use molde_common::errdefs::Error;
use molde_common::spec::mounts::{bind, etc_files, unconfine};
use molde_common::spec::process;
use molde_common::spec::{all_devices_rule, default_device_rules, device, host_devices};
use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxHugepageLimit, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxResources, Mount, Spec, User,
};

use crate::image::ImageInfo;
use crate::sandbox::netns_mode;
use crate::store::SandboxRecord;

/// A pod container's `command` and `args` as [`process::argv`] reads them:
/// `command` is the entrypoint, `args` the cmd, each absent when empty.
fn overrides(c: &cri::ContainerConfig) -> (Option<&[String]>, Option<&[String]>) {
    (
        (!c.command.is_empty()).then_some(&c.command[..]),
        (!c.args.is_empty()).then_some(&c.args[..]),
    )
}

/// The argv the container runs, by Kubernetes' rule (docker's too).
pub fn argv(c: &cri::ContainerConfig, image: &oci_spec::image::Config) -> Vec<String> {
    let (entrypoint, cmd) = overrides(c);
    process::argv(image, entrypoint, cmd)
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
    /// The read-only view of an image for each mount (by its index in the
    /// config's mounts) that names one (`Mount.image`, an image volume).
    pub image_volumes: &'a HashMap<usize, Vec<molde_api::containerd::types::Mount>>,
    /// Where each mount (by index) the kubelet gave id mappings is mounted
    /// idmapped with the pod's user namespace.
    pub idmapped_volumes: &'a HashMap<usize, PathBuf>,
}

pub fn build(i: &Inputs<'_>) -> Result<Spec, Error> {
    let c = i.config;
    let linux_cfg = c.linux.clone().unwrap_or_default();
    let sc = linux_cfg.security_context.clone().unwrap_or_default();
    check_apparmor(&sc)?;
    let pod_dir = PathBuf::from(&i.sandbox.dir);
    let (net_mode, pid_mode, ipc_mode) = netns_mode(&i.sandbox.config);
    let host_net = net_mode == NamespaceMode::Node as i32;
    let hostname = std::fs::read_to_string(pod_dir.join("hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default();

    let mut user = User::default();
    user.set_uid(i.uid);
    user.set_gid(i.gid);
    // The process's own group, the image's memberships (unless the pod's
    // SupplementalGroupsPolicy is Strict), then the pod's supplemental
    // groups, as containerd lists them.
    let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
    let image_groups: &[u32] = if strict { &[] } else { &i.groups };
    let gids = std::iter::once(i.gid)
        .chain(image_groups.iter().copied())
        .chain(sc.supplemental_groups.iter().map(|g| *g as u32));
    user.set_additional_gids(Some(molde_common::user::dedup(gids.collect())));
    let env: Vec<String> = c
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    let (entrypoint, cmd) = overrides(c);
    let asked = process::Request {
        entrypoint,
        cmd,
        env: &env,
        hostname: &hostname,
        workdir: &c.working_dir,
        terminal: c.tty,
    };
    let name = c.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    let mut process = process::process(&i.image.process, &asked, user, capabilities(&sc)?)
        .map_err(|e| e.context(format!("container {name:?}")))?;
    process.set_no_new_privileges(Some(sc.no_new_privs));
    let res_cfg = linux_cfg.resources.clone().unwrap_or_default();
    if res_cfg.oom_score_adj != 0 {
        process.set_oom_score_adj(Some(clamp_oom_score_adj(res_cfg.oom_score_adj) as i32));
    }
    let mut spec = Spec::default();
    if sc.privileged {
        unconfine(&mut spec);
    }
    spec.set_process(Some(process));
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(match &i.sandbox.userns {
        // Where the container's root, once in the pod's user namespace, can
        // reach it (the bundle is root's alone).
        Some(_) => crate::userns::rootfs_dir(&pod_dir, i.id),
        None => PathBuf::from("rootfs"),
    });
    root.set_readonly(Some(sc.readonly_rootfs));
    spec.set_root(Some(root));
    // The pod's UTS namespace (or the host's) already has its hostname.
    spec.set_hostname(None);

    // Mounts: the defaults, the pod's files, then the config's.
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
    let shm = if ipc_mode == NamespaceMode::Node as i32 {
        PathBuf::from("/dev/shm")
    } else {
        pod_dir.join("shm")
    };
    let wanted: HashSet<&str> = c.mounts.iter().map(|m| m.container_path.as_str()).collect();
    mounts.push(bind("/dev/shm", &shm, &["rbind", "nosuid", "nodev", "noexec"]));
    mounts.extend(etc_files(&pod_dir, sc.readonly_rootfs, |dst| {
        wanted.contains(dst)
    }));
    let mut propagation = "";
    for (idx, m) in c.mounts.iter().enumerate() {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount {:?}: the container path must be absolute",
                m.container_path
            )));
        }
        if let Some(view) = i.image_volumes.get(&idx) {
            mounts.push(image_volume(&m.container_path, view)?);
            continue;
        }
        let src = PathBuf::from(&m.host_path);
        if !src.exists() {
            // As containerd does: a missing host path becomes a directory.
            std::fs::create_dir_all(&src).map_err(|e| {
                Error::InvalidArgument(format!("mount {}: creating the host path: {e}", m.host_path))
            })?;
        }
        let prop = match cri::MountPropagation::try_from(m.propagation) {
            // The root's propagation in the runtime spec's words (recursive
            // always): a slave root lets host mounts in, a shared one both ways.
            Ok(cri::MountPropagation::PropagationHostToContainer) => {
                propagation::check(&src, "slave")?;
                propagation = if propagation == "shared" {
                    "shared"
                } else {
                    "slave"
                };
                "rslave"
            }
            Ok(cri::MountPropagation::PropagationBidirectional) => {
                propagation::check(&src, "shared")?;
                propagation = "shared";
                "rshared"
            }
            _ => "rprivate",
        };
        let mut opts = vec!["rbind", prop];
        opts.push(if m.readonly { "ro" } else { "rw" });
        if m.recursive_read_only {
            // As the kubelet asks it: read-only all the way down (the
            // runtime's `rro`: mount_setattr with AT_RECURSIVE), only for a
            // read-only, private mount.
            if !m.readonly {
                return Err(Error::InvalidArgument(format!(
                    "mount {}: recursive_read_only needs readonly",
                    m.container_path
                )));
            }
            if prop != "rprivate" {
                return Err(Error::InvalidArgument(format!(
                    "mount {}: recursive_read_only needs private propagation",
                    m.container_path
                )));
            }
            opts.push("rro");
        }
        // A volume the kubelet idmaps is bound from its idmapped mount.
        let src = i.idmapped_volumes.get(&idx).unwrap_or(&src);
        mounts.push(bind(&m.container_path, src, &opts));
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
    if let Some(u) = &i.sandbox.userns {
        // The pod's user namespace, joined first; its maps written out for
        // the shim, which idmaps the rootfs with them.
        let mut ns = LinuxNamespace::default();
        ns.set_typ(LinuxNamespaceType::User);
        ns.set_path(Some(PathBuf::from(&u.path)));
        namespaces.insert(0, ns);
        let map = |m: crate::userns::IdMap| {
            oci_spec::runtime::LinuxIdMappingBuilder::default()
                .container_id(m.container)
                .host_id(m.host)
                .size(m.size)
                .build()
                .expect("all fields set")
        };
        linux.set_uid_mappings(Some(vec![map(u.uid)]));
        linux.set_gid_mappings(Some(vec![map(u.gid)]));
    }
    let joins_pid = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_some());
    linux.set_namespaces(Some(namespaces));

    let parent = i
        .sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let cgroup = cgroups_path(i.cgroup_driver, &parent, i.id);
    if joins_pid && let Some(view) = molde_common::spec::cgroup_v1_view(&cgroup) {
        own_cgroup_view(&mut spec, view, sc.privileged);
    }
    linux.set_cgroups_path(Some(cgroup));

    let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
    limits(&mut resources, &res_cfg);
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

    // Devices: deny all but the defaults, then the config's with the
    // permissions asked; a privileged container gets every device of the host.
    let mut devices: Vec<LinuxDevice> = Vec::new();
    let mut rules: Vec<LinuxDeviceCgroup> = default_device_rules();
    if sc.privileged {
        devices = host_devices();
        rules.push(all_devices_rule());
    }
    for d in &c.devices {
        let (dev, rule) = device(&d.host_path, &d.container_path, &d.permissions)?;
        devices.retain(|have| have.path() != dev.path());
        devices.push(dev);
        rules.push(rule);
    }
    if sc.privileged {
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

/// The CPU and memory limits of CRI resources, into an OCI LinuxResources.
pub fn limits(resources: &mut LinuxResources, res_cfg: &cri::LinuxContainerResources) {
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
}

/// Puts the container's own cgroup v1 view (see
/// `molde_common::spec::cgroup_v1_view`) where the spec's `cgroup` mount was;
/// writable for a privileged container.
fn own_cgroup_view(spec: &mut Spec, view: Vec<Mount>, privileged: bool) {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let Some(at) = mounts
        .iter()
        .position(|m| m.destination() == Path::new("/sys/fs/cgroup") && m.typ().as_deref() == Some("cgroup"))
    else {
        return;
    };
    let view = view.into_iter().map(|mut m| {
        if privileged {
            let opts = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o != "ro")
                .collect();
            m.set_options(Some(opts));
        }
        m
    });
    mounts.splice(at..=at, view);
    spec.set_mounts(Some(mounts));
}

/// The container's cgroup: under the pod's parent. With the systemd driver
/// the parent is a slice name (`kubepods-besteffort-pod1.slice`), expanded to
/// where systemd keeps that slice (`/kubepods.slice/kubepods-besteffort.slice/
/// kubepods-besteffort-pod1.slice`) and the container gets a scope in it;
/// the shim writes the cgroup files there itself.
pub fn cgroups_path(driver: &str, parent: &str, id: &str) -> PathBuf {
    use molde_bundle::cgroup::{Driver, placement};
    // The daemon refuses any other driver name when it reads its config.
    let driver = Driver::parse(driver).unwrap_or(Driver::Cgroupfs);
    placement(driver, parent, "/k8s.io", "cri-molde", id)
}

/// An image volume: the image's rootfs (a read-only view snapshot, one
/// directory or an overlay of its layers) at `dst`, read-only, without
/// devices or set-uid programs.
fn image_volume(dst: &str, view: &[molde_api::containerd::types::Mount]) -> Result<Mount, Error> {
    let [m] = view else {
        return Err(Error::Internal(format!(
            "image volume {dst}: the snapshotter gave {} mounts for its view",
            view.len()
        )));
    };
    let mut options: Vec<String> = m
        .options
        .iter()
        .filter(|o| !matches!(o.as_str(), "ro" | "rw"))
        .cloned()
        .collect();
    options.extend(["ro", "nosuid", "nodev"].map(String::from));
    let kind = if m.r#type == "bind" || m.r#type == "rbind" {
        "bind"
    } else {
        m.r#type.as_str()
    };
    oci_spec::runtime::MountBuilder::default()
        .destination(dst)
        .typ(kind)
        .source(&m.source)
        .options(options)
        .build()
        .map_err(|e| Error::Internal(format!("image volume {dst}: {e}")))
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

mod propagation;
mod security;

use security::check_apparmor;
pub use security::{capabilities, seccomp};

#[cfg(test)]
mod tests;
