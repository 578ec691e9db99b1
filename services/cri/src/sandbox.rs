//! Pod sandboxes, held by molde itself: no pause container, no image.
//!
//! RunPodSandbox pins the pod's namespaces — network (unless the pod uses the
//! host's), IPC and UTS (with the pod's hostname and sysctls) — as bind
//! mounts that nothing runs in, starts a tiny init only when the pod shares
//! one PID namespace, writes the files its containers share (`hostname`,
//! `hosts`, `resolv.conf`, a `shm` tmpfs) and attaches the network through
//! CNI: the first config of the conf dir, the pod's name, namespace and uid in
//! CNI_ARGS, its port mappings and the pod CIDR as capabilities. Whatever
//! fails part-way is undone.
//!
//! StopPodSandbox returns once the pod's processes are gone; the release of
//! its network (CNI DEL, then the namespace's pin) follows in the background,
//! written down first (`/v1/cri/teardowns/<id>`) so that a molded stopped
//! meanwhile finishes it when it starts. The plugins' DEL is most of a stop
//! (tens of milliseconds of iptables and IPAM), and nothing the kubelet does
//! next needs it done — but a new pod with host ports, which has every
//! release owed run first, so that no old pod's port rules are still in
//! place. When a release runs: `release.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::NamespaceMode;
use molde_common::cni::{Attachment, Cni, NetworkList, Pinned, loopback, pin_namespaces, unpin};
use molde_common::errdefs::{Error, OrLog};
use serde_json::json;

use crate::store::{self, SANDBOXES, SandboxRecord, TEARDOWNS};
use crate::{Cri, names};

/// The size of a pod's /dev/shm, as docker and containerd give it.
const SHM_SIZE: &str = "size=65536k";

pub fn netns_mode(c: &cri::PodSandboxConfig) -> (i32, i32, i32) {
    let o = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    (o.network, o.pid, o.ipc)
}

impl Cri {
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("sandboxes").join(id)
    }

    /// The directory of a pod in a user namespace of its own: beside
    /// `<state>/cri`, in `<state>/cri-userns` (0711), and owned by the pod's
    /// root (0700), because its containers open their namespace pins, bind
    /// their files and find their rootfs there as that user, after joining
    /// the user namespace; no other user may enter it.
    fn userns_dir(&self, id: &str) -> PathBuf {
        self.config
            .state
            .parent()
            .unwrap_or(&self.config.state)
            .join("cri-userns")
            .join(id)
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.config.state.join("netns").join(id)
    }

    fn cni(&self) -> Cni {
        Cni {
            bin_dirs: self.config.cni_bin_dirs.clone(),
            idle: false,
        }
    }

    /// The network list pods attach to: the first config of the conf dir.
    pub fn network(&self) -> Option<(PathBuf, NetworkList)> {
        NetworkList::first_in(&self.config.cni_conf_dir)
    }

    pub fn sandboxes(&self) -> Result<Vec<SandboxRecord>, Error> {
        store::list(&*self.store, SANDBOXES)
    }

    /// The sandbox `id` names (a unique prefix will do).
    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        let all = self.sandboxes()?;
        let id = names::resolve(all.iter().map(|s| s.id.as_str()), id, "pod sandbox")?;
        Ok(all.into_iter().find(|s| s.id == id).expect("resolved"))
    }

    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig, handler: String) -> Result<String, Error> {
        // Stopped pods' releases wait while a pod is made.
        let _making = self.releases.making();
        let meta = names::check_sandbox_metadata(config.metadata.as_ref())?.clone();
        crate::limits::check_metadata(
            &format!("pod sandbox {:?}", meta.name),
            &config.labels,
            &config.annotations,
        )?;
        if !handler.is_empty() && handler != "runc" && handler != "molde" {
            return Err(Error::NotFound(format!(
                "runtime handler {handler:?} (molde has \"runc\", the default)"
            )));
        }
        let userns = crate::userns::requested(&config)?;
        if userns.is_some() {
            let (net, pid, ipc) = netns_mode(&config);
            if [net, pid, ipc].contains(&(NamespaceMode::Node as i32)) {
                return Err(Error::InvalidArgument(
                    "a pod in a user namespace of its own cannot use the host's network, PID or IPC namespace".into(),
                ));
            }
        }
        let id = crate::new_id();
        let name = names::sandbox_name(&meta);
        if let Some(holder) = store::reserve(&*self.store, "sandbox", &name, &id)? {
            return Err(Error::AlreadyExists(format!(
                "pod sandbox name {name:?} is reserved for {holder}"
            )));
        }
        let mut rec = SandboxRecord {
            id: id.clone(),
            config: config.clone(),
            created_at: crate::now_nanos(),
            ready: false,
            netns: String::new(),
            ipc: String::new(),
            uts: String::new(),
            pid_init: 0,
            ips: Vec::new(),
            cni_list: String::new(),
            cni_result: Default::default(),
            dir: if userns.is_some() {
                self.userns_dir(&id)
            } else {
                self.sandbox_dir(&id)
            }
            .display()
            .to_string(),
            runtime_handler: handler,
            userns: userns.map(|(uid, gid)| crate::userns::PodUserns {
                path: self.userns_dir(&id).join("user").display().to_string(),
                uid,
                gid,
            }),
        };
        match self.set_up(&mut rec).await {
            Ok(()) => {}
            Err(e) => {
                self.tear_down(&rec, true).await;
                store::delete(&*self.store, SANDBOXES, &id).or_log("removing a failed pod's record");
                store::release(&*self.store, "sandbox", &name, &id).or_log("releasing a pod's name");
                return Err(e);
            }
        }
        rec.ready = true;
        store::put(&*self.store, SANDBOXES, &id, &rec)?;
        tracing::info!(pod = %name, id = %id, ip = ?rec.ips.first(), "pod sandbox running");
        Ok(id)
    }

    async fn set_up(&self, rec: &mut SandboxRecord) -> Result<(), Error> {
        let c = rec.config.clone();
        let (net, pid, ipc) = netns_mode(&c);
        let host_net = net == NamespaceMode::Node as i32;
        let host_ipc = ipc == NamespaceMode::Node as i32;
        let dir = PathBuf::from(&rec.dir);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        if let Some(u) = &rec.userns {
            crate::userns::own_dir(&dir, u)
                .map_err(Error::io(format!("handing {} to the pod's root", dir.display())))?;
        }
        // Saved first: a crash from here on leaves a record that removal cleans up.
        store::put(&*self.store, SANDBOXES, &rec.id, rec)?;

        // The pod's hostname; without one (or on the host's network), the node's.
        let hostname = if host_net || c.hostname.is_empty() {
            rustix::system::uname().nodename().to_string_lossy().into_owned()
        } else {
            c.hostname.clone()
        };
        if hostname.len() > 64 {
            return Err(Error::InvalidArgument(format!(
                "hostname {hostname:?} is longer than 64 characters"
            )));
        }
        write_files(&dir, &hostname, c.dns_config.as_ref(), host_net)?;
        if host_ipc {
            rec.ipc = String::new();
        } else {
            let shm = dir.join("shm");
            std::fs::create_dir_all(&shm).map_err(Error::io("creating the pod's shm"))?;
            let data = std::ffi::CString::new(format!("mode=1777,{SHM_SIZE}")).expect("no NUL");
            rustix::mount::mount(
                "shm",
                &shm,
                "tmpfs",
                rustix::mount::MountFlags::NOSUID
                    | rustix::mount::MountFlags::NODEV
                    | rustix::mount::MountFlags::NOEXEC,
                Some(data.as_c_str()),
            )
            .map_err(|e| Error::Internal(format!("mounting the pod's shm: {e}")))?;
        }

        // The namespaces the pod pins, and the sysctls that land in them.
        let mut kinds = Vec::new();
        if !host_net {
            kinds.push(Pinned::Net);
            kinds.push(Pinned::Uts);
        }
        if !host_ipc {
            kinds.push(Pinned::Ipc);
        }
        let sysctls: Vec<(String, String)> = c
            .linux
            .as_ref()
            .map(|l| l.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (k, _) in &sysctls {
            let belongs = (k.starts_with("net.") && !host_net)
                || ((k.starts_with("kernel.shm")
                    || k.starts_with("kernel.msg")
                    || k.starts_with("kernel.sem")
                    || k.starts_with("fs.mqueue."))
                    && !host_ipc);
            if !belongs {
                return Err(Error::InvalidArgument(format!(
                    "sysctl {k}: not one a pod may set (net.* in its own network, kernel.shm*/msg*/sem* and fs.mqueue.* in its own IPC namespace)"
                )));
            }
        }
        let netns = self.netns_path(&rec.id);
        if let Some(u) = &rec.userns {
            let netns = dir.join("net");
            crate::userns::create(
                &self.config.pod_init,
                u.uid,
                u.gid,
                &hostname,
                &sysctls,
                &crate::userns::Pins {
                    user: PathBuf::from(&u.path),
                    net: netns.clone(),
                    ipc: dir.join("ipc"),
                    uts: dir.join("uts"),
                },
            )?;
            rec.netns = netns.display().to_string();
            rec.uts = dir.join("uts").display().to_string();
            rec.ipc = dir.join("ipc").display().to_string();
            store::put(&*self.store, SANDBOXES, &rec.id, rec)?;
        } else if !kinds.is_empty() {
            let pins = |k: Pinned| match k {
                Pinned::Net => netns.clone(),
                Pinned::Ipc => dir.join("ipc"),
                Pinned::Uts => dir.join("uts"),
            };
            pin_namespaces(&kinds, (!host_net).then_some(hostname.as_str()), &sysctls, pins)?;
            if kinds.contains(&Pinned::Net) {
                rec.netns = netns.display().to_string();
                rec.uts = dir.join("uts").display().to_string();
            }
            if kinds.contains(&Pinned::Ipc) {
                rec.ipc = dir.join("ipc").display().to_string();
            }
            store::put(&*self.store, SANDBOXES, &rec.id, rec)?;
        }
        if pid == NamespaceMode::Pod as i32 {
            rec.pid_init = self.start_pod_init(rec.userns.as_ref())?;
            store::put(&*self.store, SANDBOXES, &rec.id, rec)?;
        }
        if !host_net {
            self.attach(rec).await?;
        }
        Ok(())
    }

    /// CNI ADD of the pod's network namespace (eth0 on the node's network, lo).
    async fn attach(&self, rec: &mut SandboxRecord) -> Result<(), Error> {
        let (file, list) = self.network().ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "no network config in {}: the pod's network cannot be set up",
                self.config.cni_conf_dir.display()
            ))
        })?;
        rec.cni_list = std::fs::read_to_string(&file).unwrap_or_default();
        store::put(&*self.store, SANDBOXES, &rec.id, rec)?;
        // Host ports: no stopped pod's port rules may still be in place.
        if rec.config.port_mappings.iter().any(|p| p.host_port > 0) {
            self.releases.all_done().await;
        }
        let a = self.attachment(rec);
        let result = self.cni().add(&list, &a).await?;
        rec.cni_result = result.clone();
        rec.ips = result.ips();
        store::put(&*self.store, SANDBOXES, &rec.id, rec)?;
        let lo = Attachment {
            ifname: "lo".into(),
            capabilities: Default::default(),
            ..a
        };
        self.cni().add(&loopback(), &lo).await?;
        Ok(())
    }

    fn attachment(&self, rec: &SandboxRecord) -> Attachment {
        let meta = rec.config.metadata.clone().unwrap_or_default();
        let mut a = Attachment {
            container_id: rec.id.clone(),
            netns: PathBuf::from(&rec.netns),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), meta.namespace.clone()),
                ("K8S_POD_NAME".into(), meta.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), rec.id.clone()),
                ("K8S_POD_UID".into(), meta.uid.clone()),
            ],
            capabilities: Default::default(),
        };
        let ports: Vec<serde_json::Value> = rec
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                let mut m =
                    json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto});
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        if !ports.is_empty() {
            a.capabilities.insert("portMappings".into(), json!(ports));
        }
        let cidr = self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !cidr.is_empty() {
            a.capabilities
                .insert("ipRanges".into(), json!([[{"subnet": cidr}]]));
        }
        a
    }

    /// Starts the init that holds a pod's shared PID namespace; its pid.
    fn start_pod_init(&self, userns: Option<&crate::userns::PodUserns>) -> Result<i32, Error> {
        let mut cmd = std::process::Command::new(&self.config.pod_init);
        cmd.arg("pod-init")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        // In a pod's own user namespace the init enters it first, as its
        // root, so the PID namespace it makes belongs to it (the containers
        // mount their /proc there).
        let ns = userns
            .map(|u| std::fs::File::open(&u.path))
            .transpose()
            .map_err(Error::io("opening the pod's user namespace"))?;
        if let Some(ns) = &ns {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let fd = ns.as_raw_fd();
            // SAFETY: between fork and exec only setns and setres[ug]id,
            // async-signal-safe syscalls; `ns` stays open until after spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWUSER) != 0
                        || libc::setresgid(0, 0, 0) != 0
                        || libc::setresuid(0, 0, 0) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let out = cmd.output().map_err(Error::io(format!(
            "starting the pod's init ({})",
            self.config.pod_init.display()
        )))?;
        drop(ns);
        let pid: i32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| Error::Internal("the pod's init did not say its pid".into()))?;
        Ok(pid)
    }

    /// Undoes what a sandbox holds: its network (CNI DEL), its init, and with
    /// `all` its pins, shm and files.
    async fn tear_down(&self, rec: &SandboxRecord, all: bool) {
        self.tear_down_with(self.cni(), rec, all).await
    }

    async fn tear_down_with(&self, cni: Cni, rec: &SandboxRecord, all: bool) {
        if !rec.netns.is_empty() && Path::new(&rec.netns).exists() {
            if !rec.cni_list.is_empty() {
                match NetworkList::parse(&rec.cni_list, "the pod's network") {
                    Ok(list) => {
                        let a = self.attachment(rec);
                        cni.del(&list, &a, &rec.cni_result).await;
                    }
                    Err(e) => {
                        tracing::warn!(pod = %rec.id, error = %e, "the pod's network list no longer parses")
                    }
                }
            }
            unpin(&[PathBuf::from(&rec.netns)]);
        }
        if rec.pid_init > 0 {
            kill_init(rec.pid_init);
        }
        if all {
            let dir = PathBuf::from(&rec.dir);
            unpin(&[dir.join("ipc"), dir.join("uts"), dir.join("user")]);
            if rec.userns.is_some() {
                crate::userns::unmount_rootfs_dirs(&dir);
            }
            let shm = dir.join("shm");
            if shm.exists()
                && let Err(e) = rustix::mount::unmount(&shm, rustix::mount::UnmountFlags::DETACH)
                && e != rustix::io::Errno::INVAL
            {
                tracing::warn!(pod = %rec.id, error = %e, "unmounting the pod's shm failed");
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir).or_log("removing the pod's directory");
            }
        }
    }

    /// Releases a stopped pod's network (`rec` as it was when it stopped):
    /// CNI DEL, then its namespace's pin, then the note that it was owed.
    async fn release_network(&self, rec: &SandboxRecord) {
        let idle = Cni {
            idle: true,
            ..self.cni()
        };
        self.tear_down_with(idle, rec, false).await;
        store::delete(&*self.store, TEARDOWNS, &rec.id).or_log("removing a released pod network's note");
        tracing::debug!(id = %rec.id, "pod network released");
    }

    /// Releases the network of `rec` in the background, when its turn
    /// comes (`release.rs`).
    fn release_network_later(self: &Arc<Self>, rec: SandboxRecord) {
        let stopped = tokio::time::Instant::now();
        self.releases.owe();
        let me = self.clone();
        tokio::spawn(async move {
            let _turn = me.releases.turn(stopped).await;
            me.release_network(&rec).await;
        });
    }

    /// Releases, in the background, the networks of pods that stopped
    /// before molded did (at start); how many there are.
    pub fn release_owed_networks(self: &Arc<Self>) -> Result<usize, Error> {
        let owed: Vec<SandboxRecord> = store::list(&*self.store, TEARDOWNS)?;
        let n = owed.len();
        for rec in owed {
            tracing::info!(id = %rec.id, "releasing the network of a pod stopped before molded did");
            self.release_network_later(rec);
        }
        Ok(n)
    }

    /// Stops a pod: its containers are killed, its init ends, its network is
    /// released (in the background, see the module's note). Stopping a
    /// stopped (or removed) pod does nothing.
    pub async fn stop_sandbox(self: &Arc<Self>, id: &str) -> Result<(), Error> {
        let _pod = self.lock_pod(id).await;
        let mut rec = match self.sandbox(id) {
            Ok(r) => r,
            // Stopping a pod that was removed: there is nothing left to stop.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in self.containers_of(&rec.id)? {
            self.stop_container_quietly(&c.id, 0).await;
        }
        if rec.ready || !rec.netns.is_empty() || rec.pid_init > 0 {
            // A pod in a user namespace keeps its network's pin in its own
            // directory, which RemovePodSandbox removes: released here.
            let later = !rec.netns.is_empty() && rec.userns.is_none();
            if later {
                // The init ends here: the note names no pid that a restart
                // could find reused.
                let owed = SandboxRecord {
                    pid_init: 0,
                    ..rec.clone()
                };
                store::put(&*self.store, TEARDOWNS, &rec.id, &owed)?;
                if rec.pid_init > 0 {
                    kill_init(rec.pid_init);
                }
                self.release_network_later(owed);
            } else {
                self.tear_down(&rec, false).await;
            }
            rec.ready = false;
            rec.netns = String::new();
            rec.pid_init = 0;
            store::put(&*self.store, SANDBOXES, &rec.id, &rec)?;
            tracing::info!(id = %rec.id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// Removes a pod and its containers; removing one that is gone does nothing.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), Error> {
        let pod = self.lock_pod(id).await;
        let rec = match self.sandbox(id) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in self.containers_of(&rec.id)? {
            self.remove_container(&c.id).await?;
        }
        self.tear_down(&rec, true).await;
        store::delete(&*self.store, SANDBOXES, &rec.id)?;
        if let Some(m) = &rec.config.metadata {
            store::release(&*self.store, "sandbox", &names::sandbox_name(m), &rec.id)?;
        }
        tracing::info!(id = %rec.id, "pod sandbox removed");
        drop(pod);
        self.forget_pod(&rec.id);
        self.forget_readings(&rec.id);
        Ok(())
    }

    pub fn sandbox_status(&self, rec: &SandboxRecord) -> cri::PodSandboxStatus {
        let (net, pid, ipc) = netns_mode(&rec.config);
        let mut ips = rec.ips.iter();
        cri::PodSandboxStatus {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: if rec.ready {
                cri::PodSandboxState::SandboxReady as i32
            } else {
                cri::PodSandboxState::SandboxNotready as i32
            },
            created_at: rec.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: net,
                        pid,
                        ipc,
                        ..Default::default()
                    }),
                }),
            }),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            runtime_handler: rec.runtime_handler.clone(),
        }
    }

    pub fn sandbox_info(&self, rec: &SandboxRecord) -> HashMap<String, String> {
        let info = json!({
            "id": rec.id,
            "netNamespacePath": rec.netns,
            "ipcNamespacePath": rec.ipc,
            "utsNamespacePath": rec.uts,
            "pid": rec.pid_init,
            "cniResult": rec.cni_result.to_value(),
            "config": rec.config,
            "runtimeHandler": rec.runtime_handler,
        });
        [("info".to_string(), info.to_string())].into()
    }
}

/// Ends a pod's init (and with it every process of its PID namespace).
fn kill_init(pid: i32) {
    // The pid is ours only while it still runs our init.
    let ours = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split('\0').any(|a| a == "pod-init"));
    if ours {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
            .or_log("killing a pod's init");
    }
}

/// The files a pod's containers share.
fn write_files(
    dir: &Path,
    hostname: &str,
    dns: Option<&cri::DnsConfig>,
    host_net: bool,
) -> Result<(), Error> {
    let w = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(Error::io(format!("writing the pod's {name}")))
    };
    w("hostname", format!("{hostname}\n"))?;
    w(
        "hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n".into(),
    )?;
    let resolv = match dns {
        Some(d) if !host_net || !d.servers.is_empty() => {
            let mut t = String::new();
            if !d.searches.is_empty() {
                t.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for s in &d.servers {
                t.push_str(&format!("nameserver {s}\n"));
            }
            if !d.options.is_empty() {
                t.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            t
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    w("resolv.conf", resolv)?;
    // Readable by the containers' users, whoever they are.
    for f in ["hostname", "hosts", "resolv.conf"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))
            .or_log("opening a pod file to its containers");
    }
    Ok(())
}

/// The pod's PID namespace holder: run as `molded pod-init`. It enters a new
/// PID namespace, forks its init (PID 1 there), prints the init's pid and
/// exits; the init reaps orphans until the pod is stopped (SIGKILL).
pub fn pod_init_main() -> ! {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use nix::unistd::{ForkResult, fork};
    // SAFETY: unshare only changes which PID namespace this process's next child is born in.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        eprintln!("pod-init: unshare: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    // SAFETY: single-threaded here; the child only calls async-signal-safe functions before its loop.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            println!("{child}");
            std::process::exit(0);
        }
        Ok(ForkResult::Child) => {
            // The pipe the pid went out on must close for the caller to read it.
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors of this process only.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
            extern "C" fn reaped(_: libc::c_int) {}
            // SAFETY: a handler that does nothing, so SIGCHLD interrupts pause().
            unsafe {
                let _ = signal(Signal::SIGCHLD, SigHandler::Handler(reaped));
            }
            let _ = nix::unistd::setsid();
            loop {
                match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => {
                        nix::unistd::pause();
                    }
                    Ok(_) => {}
                }
            }
        }
        Err(e) => {
            eprintln!("pod-init: fork: {e}");
            std::process::exit(1);
        }
    }
}
