//! The OCI runtime spec of a container: oci-spec's defaults (namespaces,
//! capabilities, masked and read-only paths, /proc /dev /sys mounts) with the
//! process taken from the image config and the run options.

use molde_common::errdefs::Error;
use std::path::Path;

use oci_spec::runtime::{
    LinuxCapabilities, LinuxCpuBuilder, LinuxDevice, LinuxDeviceCgroup, LinuxMemoryBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder,
    RootBuilder, Spec, UserBuilder,
};

use crate::image::ProcessConfig;
use crate::user::Identity;
use molde_api::molde::services::runtime::v1::RunRequest;
use molde_common::spec::{mounts, process};

fn bad(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("building the runtime spec: {e}"))
}

/// `-v SOURCE:DEST[:ro]`: an absolute SOURCE is a host path, anything else a
/// named volume kept under `volumes` (created on first use).
pub fn volume_mount(v: &str, volumes: &Path) -> Result<Mount, Error> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [s, d] => (*s, *d, false),
        [s, d, "ro"] => (*s, *d, true),
        [s, d, "rw"] => (*s, *d, false),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "volume {v:?}: expected SOURCE:DEST[:ro]"
            )));
        }
    };
    if !dst.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "volume {v:?}: the container path must be absolute"
        )));
    }
    let source = if src.starts_with('/') {
        if !Path::new(src).exists() {
            return Err(Error::InvalidArgument(format!(
                "volume {v:?}: {src} does not exist on the host"
            )));
        }
        src.to_string()
    } else {
        if src.is_empty()
            || !src
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(Error::InvalidArgument(format!(
                "volume {v:?}: {src:?} is neither an absolute path nor a volume name"
            )));
        }
        let data = volumes.join(src).join("_data");
        std::fs::create_dir_all(&data).map_err(Error::io(format!("creating volume {src}")))?;
        data.display().to_string()
    };
    MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(source)
        .options(vec!["rbind".into(), if ro { "ro" } else { "rw" }.into()])
        .build()
        .map_err(bad)
}

/// Where `--init`'s init is in the container.
pub const INIT_PATH: &str = "/sbin/molde-init";

/// The init `--init` runs: Debian's statically linked tini (package
/// tini), which runs in any image.
fn init_binary() -> Result<String, Error> {
    ["/usr/bin/tini-static", "/usr/bin/docker-init"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .ok_or_else(|| {
            Error::FailedPrecondition(
                "--init needs a static tini on the host: install Debian's tini package (/usr/bin/tini-static)"
                    .into(),
            )
        })
}

/// `--ulimit NAME=SOFT[:HARD]` (HARD is SOFT when left out; -1 is unlimited).
pub fn ulimit(u: &str) -> Result<oci_spec::runtime::PosixRlimit, Error> {
    let bad_value = |why: &str| Error::InvalidArgument(format!("--ulimit {u:?}: {why}"));
    let (name, values) = u
        .split_once('=')
        .ok_or_else(|| bad_value("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
    let typ: oci_spec::runtime::PosixRlimitType = format!("RLIMIT_{}", name.to_ascii_uppercase())
        .parse()
        .map_err(|_| {
            bad_value(&format!(
                "{name:?} is not a limit (nofile, nproc, core, memlock, stack, …)"
            ))
        })?;
    let number = |v: &str| -> Result<u64, Error> {
        match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            _ => v
                .parse()
                .map_err(|_| bad_value(&format!("{v:?} is not a number"))),
        }
    };
    let (soft, hard) = match values.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => (number(values)?, number(values)?),
    };
    if soft > hard {
        return Err(bad_value("the soft limit is above the hard one"));
    }
    oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(bad)
}

/// `--tmpfs PATH[:OPTIONS]`, as docker reads it: `size=64m,mode=1777`,
/// `noexec`… (nosuid and nodev always).
pub fn tmpfs_mount(t: &str) -> Result<Mount, Error> {
    let (path, opts) = t.split_once(':').unwrap_or((t, ""));
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "--tmpfs {t:?}: the path must be absolute"
        )));
    }
    let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into()];
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let name = o.split_once('=').map_or(o, |(n, _)| n);
        if !matches!(
            name,
            "size" | "mode" | "uid" | "gid" | "nr_inodes" | "noexec" | "exec" | "ro" | "rw" | "suid" | "dev"
        ) {
            return Err(Error::InvalidArgument(format!(
                "--tmpfs {t:?}: unknown option {o:?}"
            )));
        }
        options.push(o.to_string());
    }
    if !options.iter().any(|o| o.starts_with("mode=")) {
        options.push("mode=1777".into());
    }
    MountBuilder::default()
        .destination(path)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options)
        .build()
        .map_err(bad)
}

/// The annotation that tells the shim to create a missing working directory
/// owned by the process's user.
pub use molde_bundle::WORKDIR_OWNER;

/// The cgroup a container runs in.
pub fn cgroup_path(ns: &str, id: &str) -> String {
    use molde_bundle::cgroup::{Driver, placement};
    placement(Driver::Cgroupfs, "/molde", "/molde", "", &format!("{ns}-{id}"))
        .display()
        .to_string()
}

pub fn build(
    ns: &str,
    id: &str,
    img: &ProcessConfig,
    req: &RunRequest,
    who: &Identity,
    volumes: &Path,
) -> Result<Spec, Error> {
    let hostname = if req.hostname.is_empty() {
        id.chars().take(12).collect()
    } else {
        req.hostname.clone()
    };
    let security = Security::of(req)?;
    let user = UserBuilder::default()
        .uid(who.uid)
        .gid(who.gid)
        .additional_gids(who.additional_gids.clone())
        .build()
        .map_err(bad)?;
    let asked = process::Request {
        entrypoint: req.entrypoint_set.then_some(&req.entrypoint[..]),
        cmd: (!req.args.is_empty()).then_some(&req.args[..]),
        env: &req.env,
        hostname: &hostname,
        workdir: &req.workdir,
        terminal: false,
    };
    let mut process = process::process(img, &asked, user, security.capabilities.clone())
        .map_err(|e| e.context(format!("image {}", req.image)))?;
    process.set_no_new_privileges(Some(security.no_new_privileges));
    if !req.ulimits.is_empty() {
        let mut limits = process.rlimits().clone().unwrap_or_default();
        for u in &req.ulimits {
            let l = ulimit(u)?;
            limits.retain(|x| x.typ() != l.typ());
            limits.push(l);
        }
        process.set_rlimits(Some(limits));
    }
    if req.init {
        // tini as PID 1, the command its child: `tini -- ARGS`.
        let mut args = vec![INIT_PATH.to_string(), "--".to_string()];
        args.extend(process.args().clone().unwrap_or_default());
        process.set_args(Some(args));
    }
    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(req.read_only)
            .build()
            .map_err(bad)?,
    ));
    spec.set_hostname(Some(hostname));
    if req.workdir_for_user {
        let mut a = spec.annotations().clone().unwrap_or_default();
        a.insert(WORKDIR_OWNER.to_string(), "user".to_string());
        spec.set_annotations(Some(a));
    }
    let mut all = spec.mounts().clone().unwrap_or_default();
    if req.shm_size != 0 {
        if req.shm_size < 0 {
            return Err(Error::InvalidArgument(format!(
                "--shm-size {}: must be positive",
                req.shm_size
            )));
        }
        for m in all
            .iter_mut()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
        {
            let mut opts: Vec<String> = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| !o.starts_with("size="))
                .collect();
            opts.push(format!("size={}k", (req.shm_size as u64).div_ceil(1024)));
            m.set_options(Some(opts));
        }
    }
    if req.init {
        let host = init_binary()?;
        all.push(
            MountBuilder::default()
                .destination(INIT_PATH)
                .typ("bind")
                .source(host)
                .options(vec!["bind".into(), "ro".into(), "nosuid".into(), "nodev".into()])
                .build()
                .map_err(bad)?,
        );
    }
    for v in &req.volumes {
        all.push(volume_mount(v, volumes)?);
    }
    for t in &req.tmpfs {
        all.push(tmpfs_mount(t)?);
    }
    spec.set_mounts(Some(all));
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(cgroup_path(ns, id).into()));
        let mut res = LinuxResourcesBuilder::default();
        if req.memory_bytes > 0 {
            res = res.memory(
                LinuxMemoryBuilder::default()
                    .limit(req.memory_bytes)
                    .swap(req.memory_bytes)
                    .build()
                    .map_err(bad)?,
            );
        }
        if req.cpus > 0.0 {
            let period = 100_000u64;
            res = res.cpu(
                LinuxCpuBuilder::default()
                    .period(period)
                    .quota((req.cpus * period as f64) as i64)
                    .build()
                    .map_err(bad)?,
            );
        }
        if req.pids_limit > 0 {
            res = res.pids(
                LinuxPidsBuilder::default()
                    .limit(req.pids_limit)
                    .build()
                    .map_err(bad)?,
            );
        }
        let (devices, rules) = security.devices(req)?;
        res = res.devices(rules);
        linux.set_devices(Some(devices));
        linux.set_resources(Some(res.build().map_err(bad)?));
        linux.set_seccomp(security.seccomp);
        match req.network.as_str() {
            // bridge: the runtime points the namespace at the one CNI set up.
            "" | "none" | "bridge" => {}
            "host" => {
                if let Some(ns) = linux.namespaces_mut() {
                    ns.retain(|n| n.typ() != LinuxNamespaceType::Network);
                }
            }
            // A user network: checked by name when the container is made.
            _ => {}
        }
    }
    if req.privileged {
        mounts::unconfine(&mut spec);
    }
    Ok(spec)
}

/// Writes the container's /etc/hosts, /etc/hostname and /etc/resolv.conf into
/// the bundle and bind-mounts them, as docker does. With the host network the
/// host's own files are used.
/// What the container's /etc/resolv.conf and /etc/hosts get besides the
/// defaults: docker's --dns, --dns-search, --add-host.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Replace the host's nameservers when not empty.
    pub nameservers: Vec<String>,
    /// Replace the host's search domains when not empty.
    pub search: Vec<String>,
    /// `options ndots:0`: single names are asked as they are first (a
    /// user network's DNS answers its containers' names).
    pub ndots0: bool,
    /// NAME:IP entries for /etc/hosts.
    pub hosts: Vec<String>,
}

/// resolv.conf from the host's (`base`) with `r`'s changes.
pub fn resolv_conf(base: &str, r: &Resolver) -> String {
    let mut out = String::new();
    let servers: Vec<String> = if r.nameservers.is_empty() {
        base.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .collect()
    } else {
        r.nameservers.clone()
    };
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let search: Vec<String> = if r.search.is_empty() {
        base.lines()
            .filter_map(|l| l.trim().strip_prefix("search"))
            .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    } else {
        r.search.clone()
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let mut options: Vec<String> = base
        .lines()
        .filter_map(|l| l.trim().strip_prefix("options"))
        .flat_map(|s| s.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|o| !(r.ndots0 && o.starts_with("ndots:")))
        .collect();
    if r.ndots0 {
        options.push("ndots:0".into());
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Checks `--add-host NAME:IP` entries and gives them as hosts lines.
pub fn host_lines(entries: &[String]) -> Result<String, Error> {
    let mut out = String::new();
    for e in entries {
        let (name, ip) = e
            .split_once(':')
            .ok_or_else(|| Error::InvalidArgument(format!("--add-host {e:?}: expected NAME:IP")))?;
        if name.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "--add-host {e:?}: expected NAME:IP with an IP address"
            )));
        }
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(out)
}

pub fn add_etc_files(
    spec: &mut Spec,
    bundle: &Path,
    address: Option<&str>,
    host_network: bool,
    resolver: &Resolver,
) -> std::io::Result<()> {
    let hostname = spec.hostname().clone().unwrap_or_default();
    let etc = bundle.join("etc");
    std::fs::create_dir_all(&etc)?;
    let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(a) = address {
        hosts.push_str(&format!("{a}\t{hostname}\n"));
    } else {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    let extra_hosts = host_lines(&resolver.hosts).map_err(std::io::Error::other)?;
    // systemd-resolved's stub (127.0.0.53) is not reachable from a container.
    let host_resolv = ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .filter(|c| !c.contains("127.0.0.53"))
        })
        .unwrap_or_default();
    let files: Vec<(&str, String)> = if host_network {
        vec![
            (
                "hosts",
                std::fs::read_to_string("/etc/hosts").unwrap_or(hosts) + &extra_hosts,
            ),
            (
                "resolv.conf",
                resolv_conf(
                    &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                    resolver,
                ),
            ),
            ("hostname", format!("{hostname}\n")),
        ]
    } else {
        vec![
            ("hosts", hosts + &extra_hosts),
            ("resolv.conf", resolv_conf(&host_resolv, resolver)),
            ("hostname", format!("{hostname}\n")),
        ]
    };
    for (name, content) in files {
        std::fs::write(etc.join(name), content)?;
    }
    let mut all = spec.mounts().clone().unwrap_or_default();
    all.extend(mounts::etc_files(&etc, false, |_| false));
    spec.set_mounts(Some(all));
    Ok(())
}

pub use molde_common::spec::default_seccomp;

/// Sets in `base` the limits `new` gives (memory, CPU, pids), keeping the
/// rest: `molde update` changes only what it names.
pub fn merge_resources(
    base: &mut oci_spec::runtime::LinuxResources,
    new: &oci_spec::runtime::LinuxResources,
) {
    if let Some(limit) = new.memory().as_ref().and_then(|m| m.limit()) {
        let mut m = (*base.memory()).unwrap_or_default();
        m.set_limit(Some(limit));
        base.set_memory(Some(m));
    }
    if let Some(c) = new.cpu() {
        let mut cpu = base.cpu().clone().unwrap_or_default();
        if let Some(q) = c.quota() {
            cpu.set_quota(Some(q));
        }
        if let Some(p) = c.period() {
            cpu.set_period(Some(p));
        }
        if let Some(s) = c.shares() {
            cpu.set_shares(Some(s));
        }
        if let Some(s) = c.cpus() {
            cpu.set_cpus(Some(s.clone()));
        }
        if let Some(m) = c.mems() {
            cpu.set_mems(Some(m.clone()));
        }
        base.set_cpu(Some(cpu));
    }
    if let Some(p) = new.pids() {
        base.set_pids(Some(*p));
    }
}

/// What `--privileged`, `--security-opt` and `--device` make of a
/// container's capabilities, seccomp filter, no_new_privs and devices.
struct Security {
    capabilities: LinuxCapabilities,
    seccomp: Option<LinuxSeccomp>,
    no_new_privileges: bool,
}

impl Security {
    fn of(req: &RunRequest) -> Result<Security, Error> {
        let capabilities =
            molde_common::spec::container_capabilities(req.privileged, &req.cap_add, &req.cap_drop)?;
        let held = capabilities.bounding().clone().unwrap_or_default();
        // Privileged containers run unfiltered, as docker's do.
        let mut seccomp = if req.privileged {
            None
        } else {
            Some(default_seccomp(&held)?)
        };
        let mut no_new_privileges = !req.privileged;
        for opt in &req.security_opt {
            let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt, ""));
            match key {
                "seccomp" if value == "unconfined" => seccomp = None,
                "seccomp" => {
                    let profile: LinuxSeccomp = serde_json::from_str(value).map_err(|e| {
                        Error::InvalidArgument(format!("--security-opt seccomp: not a seccomp profile: {e}"))
                    })?;
                    seccomp = Some(profile);
                }
                "no-new-privileges" => {
                    no_new_privileges = match value {
                        "" | "true" => true,
                        "false" => false,
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "--security-opt no-new-privileges={other}: expected true or false"
                            )));
                        }
                    }
                }
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "--security-opt {opt:?}: molde knows seccomp=unconfined|PROFILE and no-new-privileges"
                    )));
                }
            }
        }
        Ok(Security {
            capabilities,
            seccomp,
            no_new_privileges,
        })
    }

    /// The device nodes and cgroup rules: the defaults, every host device
    /// when privileged, and each `--device HOST[:CONTAINER[:PERMISSIONS]]`.
    fn devices(&self, req: &RunRequest) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), Error> {
        let mut rules = molde_common::spec::default_device_rules();
        let mut nodes = Vec::new();
        if req.privileged {
            nodes = molde_common::spec::host_devices();
            rules.push(molde_common::spec::all_devices_rule());
        }
        for d in &req.devices {
            let mut parts = d.splitn(3, ':');
            let host = parts.next().unwrap_or_default();
            let (container, perms) = match (parts.next(), parts.next()) {
                // HOST:PERMS when the second part is not a path.
                (Some(p), None) if !p.starts_with('/') => ("", p),
                (c, p) => (c.unwrap_or_default(), p.unwrap_or_default()),
            };
            let (node, rule) = molde_common::spec::device(host, container, perms)
                .map_err(|e| e.context(format!("--device {d}")))?;
            nodes.retain(|n: &LinuxDevice| n.path() != node.path());
            nodes.push(node);
            rules.push(rule);
        }
        Ok((nodes, rules))
    }
}

#[cfg(test)]
mod tests;

/// The smallest memory limit a container starts under.
pub const MIN_MEMORY: i64 = 4 << 20;
/// Starting a container takes two processes in its cgroup for a moment: the
/// one that starts it (libcontainer's intermediate process) and its init.
pub const MIN_PIDS: i64 = 2;

/// Refuses limits a container could not run under, or that the host cannot
/// give, each by its flag.
pub fn check_limits(req: &RunRequest, host_cpus: usize) -> Result<(), Error> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if req.memory_bytes < 0 || (req.memory_bytes > 0 && req.memory_bytes < MIN_MEMORY) {
        return bad(format!(
            "--memory {}: the minimum is 4m ({MIN_MEMORY} bytes)",
            req.memory_bytes
        ));
    }
    if !req.cpus.is_finite() || req.cpus < 0.0 || (req.cpus > 0.0 && req.cpus < 0.01) {
        return bad(format!("--cpus {}: must be at least 0.01", req.cpus));
    }
    if req.cpus > host_cpus as f64 {
        return bad(format!(
            "--cpus {}: the range of CPUs is from 0.01 to {host_cpus}.00, as there are only {host_cpus} CPUs available",
            req.cpus
        ));
    }
    if req.pids_limit > 0 && req.pids_limit < MIN_PIDS {
        return bad(format!(
            "--pids-limit {}: a container cannot start with fewer than {MIN_PIDS} processes \
             (its init and, for a moment, the process that starts it)",
            req.pids_limit
        ));
    }
    Ok(())
}

/// On a cgroup v2 host (`/sys/fs/cgroup` is cgroup2), a limit needs its
/// controller in the root's `cgroup.controllers`; a request for one the host
/// does not offer is refused by name here rather than failing deep in the
/// runtime. cgroup v1 and hybrid hosts are left to the runtime.
pub fn check_controllers(req: &RunRequest, cgroup_root: &Path) -> Result<(), Error> {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
    let Ok(fs) = statfs(cgroup_root) else {
        return Ok(());
    };
    if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Ok(());
    }
    let offered = std::fs::read_to_string(cgroup_root.join("cgroup.controllers")).unwrap_or_default();
    match missing_controller(req, &offered) {
        None => Ok(()),
        Some((flag, controller)) => Err(Error::FailedPrecondition(format!(
            "{flag} needs cgroup v2's {controller} controller, which this host does not offer \
             ({}/cgroup.controllers: {:?})",
            cgroup_root.display(),
            offered.trim()
        ))),
    }
}

/// The first limit in `req` whose controller is not in `offered` (the
/// contents of a `cgroup.controllers` file), as (flag, controller).
fn missing_controller(req: &RunRequest, offered: &str) -> Option<(&'static str, &'static str)> {
    let has = |c: &str| offered.split_whitespace().any(|o| o == c);
    [
        (req.memory_bytes > 0, "--memory", "memory"),
        (req.cpus > 0.0, "--cpus", "cpu"),
        (req.pids_limit > 0, "--pids-limit", "pids"),
    ]
    .into_iter()
    .find(|(wanted, _, c)| *wanted && !has(c))
    .map(|(_, flag, c)| (flag, c))
}

#[cfg(test)]
mod controller_tests {
    use super::*;

    #[test]
    fn limits_a_container_cannot_run_under_are_refused() {
        let with = |f: &dyn Fn(&mut RunRequest)| {
            let mut r = RunRequest::default();
            f(&mut r);
            check_limits(&r, 2).map_err(|s| s.message().to_string())
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|r| r.memory_bytes = -1).unwrap_err().contains("--memory"));
        assert!(
            with(&|r| r.memory_bytes = 1 << 10)
                .unwrap_err()
                .contains("minimum")
        );
        assert!(with(&|r| r.cpus = 3.0).unwrap_err().contains("only 2 CPUs"));
        assert!(with(&|r| r.cpus = f64::NAN).is_err());
        assert!(with(&|r| r.cpus = 2.0).is_ok());
        assert!(with(&|r| r.pids_limit = 1).unwrap_err().contains("fewer than 2"));
        assert!(with(&|r| r.pids_limit = 2).is_ok());
    }

    #[test]
    fn limits_need_their_controllers() {
        let req = RunRequest {
            memory_bytes: 32 << 20,
            pids_limit: 10,
            ..Default::default()
        };
        assert_eq!(missing_controller(&req, "cpuset cpu io memory pids\n"), None);
        assert_eq!(
            missing_controller(&req, "cpu io pids"),
            Some(("--memory", "memory"))
        );
        assert_eq!(missing_controller(&req, "memory"), Some(("--pids-limit", "pids")));
        assert_eq!(missing_controller(&RunRequest::default(), ""), None);
    }
}
