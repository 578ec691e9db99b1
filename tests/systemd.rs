//! The systemd cgroup driver where systemd is PID 1: a Debian 12 booted with
//! systemd-nspawn (`deploy/make-nspawn-root.sh`, kept unchanged with
//! `--volatile=overlay`), molded started in it by its own unit file
//! (`deploy/molded.service`), and the CRI driven from here through the
//! socket the machine shares. systemd there must hold each container as a
//! transient scope with Delegate=yes and the container's limits as unit
//! properties, updated by UpdateContainerResources.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use molde_tests::image::{self, Compression, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;
use molde_tests::{bin, tests_dir};

/// One machine at a time: systemd-nspawn locks the root it boots.
static ONE_MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A booted machine; powered off (SIGTERM to nspawn) when dropped.
struct Machine {
    nspawn: Child,
    _turn: std::sync::MutexGuard<'static, ()>,
    leader: i32,
    dir: tempfile::TempDir,
}

/// What a machine shares with the host besides its root.
enum Shares {
    /// The suite's binaries at /opt/molde, molded's directories and a
    /// config for the systemd driver at /etc/molde (read-only).
    Molded,
    /// A directory of Debian packages at /opt/molde-deb; /etc stays the
    /// machine's, for the package's conffile.
    Packages(PathBuf),
}

impl Machine {
    fn boot() -> Machine {
        Machine::boot_sharing(Shares::Molded)
    }

    fn boot_sharing(shares: Shares) -> Machine {
        let root = PathBuf::from(
            std::env::var("MOLDE_NSPAWN_ROOT").unwrap_or_else(|_| "/var/cache/molde/nspawn-root".into()),
        );
        let made = Command::new(tests_dir().join("../deploy/make-nspawn-root.sh"))
            .arg(&root)
            .status()
            .expect("running deploy/make-nspawn-root.sh");
        assert!(made.success(), "deploy/make-nspawn-root.sh failed");
        let turn = ONE_MACHINE.lock().unwrap_or_else(|e| e.into_inner());
        clear_stale_payload();
        let dir = tempfile::Builder::new()
            .prefix("molde-nspawn-")
            .tempdir()
            .unwrap();
        for d in ["run", "lib", "etc"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let molded = bin("molded");
        let bin_dir = molded.parent().unwrap();
        std::fs::write(
            dir.path().join("etc/config.toml"),
            "root = \"/var/lib/molde\"\nstate = \"/run/molde/state\"\naddress = \"/run/molde/molde.sock\"\n\
             [cri]\naddress = \"/run/molde/cri.sock\"\ncgroup_driver = \"systemd\"\n",
        )
        .unwrap();
        let source = tests_dir().join("..").canonicalize().unwrap();
        let bind = |from: &Path, to: &str| format!("{}:{to}", from.display());
        let binds = match shares {
            Shares::Molded => vec![
                format!("--bind-ro={}", bind(bin_dir, "/opt/molde")),
                format!("--bind={}", bind(&dir.path().join("run"), "/run/molde")),
                format!("--bind={}", bind(&dir.path().join("lib"), "/var/lib/molde")),
                format!("--bind-ro={}", bind(&dir.path().join("etc"), "/etc/molde")),
                format!("--bind-ro={}", bind(&source, "/opt/molde-src")),
            ],
            Shares::Packages(debs) => vec![format!("--bind-ro={}", bind(&debs, "/opt/molde-deb"))],
        };
        let nspawn = Command::new("systemd-nspawn")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            // The container device programs are BPF, which nspawn filters by default.
            .args([
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--volatile=overlay",
                "--system-call-filter=bpf",
                "-D",
            ])
            .arg(&root)
            .args(&binds)
            .arg("-b")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn (package systemd-container)");
        let mut m = Machine {
            leader: 0,
            nspawn,
            _turn: turn,
            dir,
        };
        for _ in 0..300 {
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", m.nspawn.id()))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
                m.leader = pid;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(m.leader > 0, "systemd-nspawn started no machine");
        for _ in 0..300 {
            let state = m.sh("systemctl is-system-running || true");
            if matches!(state.trim(), "running" | "degraded") {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the machine did not boot: {}",
            m.sh("systemctl is-system-running; systemctl --failed")
        );
    }

    /// Runs a shell command inside the machine; its stdout.
    fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.leader.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("nsenter");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// molded's log in the machine.
    fn journal(&self) -> String {
        self.sh("journalctl -u molded.service --no-pager | tail -40")
    }

    /// `systemctl show UNIT -p NAME` → the value.
    fn property(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show {unit} -p {name} --value"))
            .trim()
            .to_string()
    }
}

/// systemd-nspawn --keep-unit runs its machine in a `payload` cgroup below
/// its own; one that was killed leaves it behind, and the next nspawn then
/// cannot make it (EBUSY). An empty one is removed, deepest first.
fn clear_stale_payload() {
    let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
    else {
        return;
    };
    let mount = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    let payload = Path::new(mount).join(own.trim_start_matches('/')).join("payload");
    fn remove(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    if payload.is_dir() {
        remove(&payload);
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM asks the machine's systemd to power off.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

#[test]
fn systemd_holds_each_container_as_a_delegated_scope_with_its_limits() {
    let machine = Machine::boot();
    // Installed as an operator would: deploy/install.sh with prebuilt
    // binaries, then the unit (Type=notify: started once it serves).
    let installed = machine.sh("bash /opt/molde-src/deploy/install.sh --bin-dir /opt/molde /usr/local 2>&1");
    assert!(installed.contains("installed into /usr/local"), "{installed}");
    // Root cannot raise its open-file limit past the hard limit on these
    // machines (no CAP_SYS_RESOURCE): a drop-in brings the unit's down to it.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(1 << 20);
    machine.sh(&format!(
        "mkdir -p /etc/systemd/system/molded.service.d && printf '[Service]\\nLimitNOFILE={hard}\\n' \
         > /etc/systemd/system/molded.service.d/nofile.conf && systemctl daemon-reload"
    ));
    machine.sh("systemctl start molded.service");
    assert_eq!(machine.property("molded.service", "ActiveState"), "active");
    assert_eq!(machine.property("molded.service", "Type"), "notify");
    let sock = machine.dir.path().join("run/cri.sock");
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sock.exists(),
        "molded did not start in the machine: {}",
        machine.sh("systemctl status molded.service; journalctl -u molded.service --no-pager | tail -30")
    );
    assert_eq!(machine.property("molded.service", "Delegate"), "yes");

    let reg = Registry::start();
    let work = machine.dir.path().join("image");
    let l = image::layout(&work, &[tar(&busybox_rootfs())], Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, "systemd/busybox:1");
    let busybox = format!("{}/systemd/busybox:1", reg.host);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt
        .block_on(molde_api::client::connect(&molde_api::client::Address::Unix(
            sock,
        )))
        .unwrap();
    let mut runtime = RuntimeServiceClient::new(ch.clone());
    let images = ImageServiceClient::new(ch);
    let config = rt
        .block_on(runtime.runtime_config(cri::RuntimeConfigRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Systemd as i32,
        "the kubelet learns the driver from RuntimeConfig"
    );
    let pull = || {
        rt.block_on(images.clone().pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: busybox.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    };
    // A minimal Debian has no CA certificates: a pull says so (molded
    // does not fall over), and works once they are there.
    let err = pull().expect_err("a registry client without CA certificates");
    assert!(err.message().contains("ca-certificates"), "{}", err.message());
    assert_eq!(machine.sh("systemctl is-active molded.service").trim(), "active");
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        machine.dir.path().join("etc/ca.crt"),
    )
    .unwrap();
    machine.sh("mkdir -p /etc/ssl/certs && cp /etc/molde/ca.crt /etc/ssl/certs/ca-certificates.crt");
    pull().unwrap_or_else(|e| panic!("PullImage: {e}\n{}", machine.journal()));

    // As a kubelet with cgroupDriver: systemd names a pod's parent.
    let slice = "kubepods-besteffort-podtest1.slice";
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "scoped".into(),
            uid: "uid-scoped".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: slice.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .block_on(runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", machine.journal()))
        .into_inner()
        .pod_sandbox_id;
    let c = rt
        .block_on(runtime.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "sleeper".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: busybox.clone(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                linux: Some(cri::LinuxContainerConfig {
                    resources: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: 64 << 20,
                        // What a kubelet with swap off sends on cgroup v2.
                        memory_swap_limit_in_bytes: 64 << 20,
                        cpu_shares: 512,
                        cpu_quota: 50_000,
                        cpu_period: 100_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        }))
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", machine.journal()))
        .into_inner()
        .container_id;
    rt.block_on(runtime.start_container(cri::StartContainerRequest {
        container_id: c.clone(),
    }))
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", machine.journal()));

    let unit = format!("cri-molde-{c}.scope");
    assert_eq!(
        machine.property(&unit, "ActiveState"),
        "active",
        "{}",
        machine.sh(&format!("systemctl status {unit}"))
    );
    assert_eq!(machine.property(&unit, "Delegate"), "yes");
    assert_eq!(machine.property(&unit, "Slice"), slice);
    assert_eq!(
        machine.property(&unit, "ControlGroup"),
        format!("/kubepods.slice/kubepods-besteffort.slice/{slice}/{unit}")
    );
    // The limits are the unit's own (systemd 252 on this hybrid host uses
    // the legacy names; a unified host gets MemoryMax and CPUWeight).
    let unified = machine.sh("stat -f -c %T /sys/fs/cgroup").trim() == "cgroup2fs";
    let memory = if unified { "MemoryMax" } else { "MemoryLimit" };
    assert_eq!(machine.property(&unit, memory), (64u64 << 20).to_string());
    assert_eq!(machine.property(&unit, "CPUQuotaPerSecUSec"), "500ms");
    if unified {
        // Memory and swap equal: no swap, systemd's MemorySwapMax=0.
        assert_eq!(machine.property(&unit, "MemorySwapMax"), "0");
    }
    if !unified {
        assert_eq!(machine.property(&unit, "CPUShares"), "512");
    }
    // The container's init is in the scope's cgroup, under its limit.
    let cg = machine.property(&unit, "ControlGroup");
    let memory_dir = format!("/sys/fs/cgroup/{}{cg}", if unified { "" } else { "memory" });
    let procs = machine.sh(&format!("cat {memory_dir}/cgroup.procs"));
    let comm = procs
        .split_whitespace()
        .map(|p| machine.sh(&format!("cat /proc/{p}/comm")).trim().to_string())
        .collect::<Vec<_>>();
    assert_eq!(comm, ["sleep"], "the scope holds the container's process");
    // systemd writes the limits into the cgroup where the machine has the
    // controller (a machine on a hybrid host gets none under cgroup v2).
    let limit_file = format!(
        "{memory_dir}/{}",
        if unified {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        }
    );
    let enforced = machine.sh(&format!("test -e {limit_file} && echo yes")).trim() == "yes";
    let read_limit = || machine.sh(&format!("cat {limit_file}")).trim().to_string();
    if enforced {
        assert_eq!(read_limit(), (64u64 << 20).to_string());
    }

    // A live update goes to systemd as unit properties, and to the cgroup.
    rt.block_on(
        runtime.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .expect("UpdateContainerResources");
    assert_eq!(machine.property(&unit, memory), (96u64 << 20).to_string());
    if enforced {
        assert_eq!(read_limit(), (96u64 << 20).to_string());
    }

    // Stopped and removed: systemd lets the scope go.
    rt.block_on(runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .expect("StopPodSandbox");
    rt.block_on(runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .expect("RemovePodSandbox");
    let mut state = String::new();
    for _ in 0..100 {
        state = machine.property(&unit, "ActiveState");
        if state != "active" && state != "deactivating" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        state,
        "inactive",
        "{}\n{}",
        machine.sh(&format!("systemctl status {unit} --no-pager 2>&1")),
        machine.journal()
    );

    // deploy/uninstall.sh takes away what install.sh put there, and stops
    // molded; the data stays.
    let removed = machine.sh("bash /opt/molde-src/deploy/uninstall.sh 2>&1");
    assert!(removed.contains("its data stays"), "{removed}");
    assert_eq!(
        machine.sh("ls /usr/local/bin/molded /etc/systemd/system/molded.service /usr/share/doc/molde 2>&1 | grep -c 'No such file'").trim(),
        "3"
    );
    assert_ne!(machine.property("molded.service", "ActiveState"), "active");
    assert_eq!(
        machine.sh("test -d /var/lib/molde/content && echo kept").trim(),
        "kept"
    );
}

/// deploy/make-deb.sh's package, from the binaries the suite built, in a
/// fresh Debian 12 booted with systemd: dpkg installs it, systemd starts
/// molded, molde talks to it, the manual pages and completions are where
/// man and the shells look; removing keeps the administrator's config,
/// purging takes it.
#[test]
fn the_debian_package_installs_starts_and_purges() {
    let target = bin("molded").parent().unwrap().parent().unwrap().to_path_buf();
    let out = tempfile::Builder::new().prefix("molde-deb-").tempdir().unwrap();
    let made = Command::new(tests_dir().join("../deploy/make-deb.sh"))
        .args(["--profile", "dev", "--no-build"])
        .arg(out.path())
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("deploy/make-deb.sh");
    assert!(
        made.status.success(),
        "make-deb.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let deb = PathBuf::from(
        String::from_utf8_lossy(&made.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    );
    assert!(deb.is_file(), "{}", deb.display());
    let deb_name = deb.file_name().unwrap().to_string_lossy().into_owned();

    let m = Machine::boot_sharing(Shares::Packages(out.path().to_path_buf()));
    let installed = m.sh(&format!("dpkg -i /opt/molde-deb/{deb_name} 2>&1; echo rc=$?"));
    assert!(installed.trim_end().ends_with("rc=0"), "{installed}");
    let mut state = String::new();
    for _ in 0..100 {
        state = m.property("molded.service", "ActiveState");
        if state == "active" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "active", "{}", m.journal());
    assert_eq!(m.sh("systemctl is-enabled molded").trim(), "enabled");
    let exec = m.property("molded.service", "ExecStart");
    assert!(exec.contains("path=/usr/bin/molded "), "{exec}");
    // The CLI on PATH reaches the daemon on the default socket.
    let version = m.sh("molde version 2>&1");
    assert!(version.to_lowercase().contains("server"), "{version}");
    assert!(
        m.sh("molde ps -a 2>&1").contains("CONTAINER ID"),
        "{}",
        m.sh("molde ps -a 2>&1")
    );
    // Manual pages: molde's, one per command, molded's in section 8.
    for page in [
        "man1/molde.1.gz",
        "man1/molde-run.1.gz",
        "man1/molde-network-create.1.gz",
        "man8/molded.8.gz",
    ] {
        let text = m.sh(&format!("zcat /usr/share/man/{page}"));
        assert!(text.starts_with(".ie") || text.contains(".TH "), "{page}: {text}");
    }
    assert!(
        m.sh("zcat /usr/share/man/man1/molde-run.1.gz")
            .contains("\\-\\-publish")
    );
    // Completions where bash, zsh and fish look for them.
    let complete = m.sh("bash -c '. /usr/share/bash-completion/completions/molde; complete -p molde'");
    assert!(complete.contains("molde"), "{complete}");
    assert!(
        m.sh("head -1 /usr/share/zsh/vendor-completions/_molde")
            .starts_with("#compdef molde")
    );
    assert!(
        m.sh("cat /usr/share/fish/vendor_completions.d/molde.fish")
            .contains("complete -c molde")
    );
    // The config is a conffile, and valid.
    assert!(
        m.sh("dpkg-query -W -f='${Conffiles}' molde")
            .contains("/etc/molde/config.toml"),
        "{}",
        m.sh("dpkg-query -W -f='${Conffiles}' molde")
    );
    let checked = m.sh("molded config check /etc/molde/config.toml 2>&1; echo rc=$?");
    assert!(checked.trim_end().ends_with("rc=0"), "{checked}");

    // Removed: molded stopped, binaries and units gone, the edited config kept.
    m.sh("echo '# the administrator was here' >> /etc/molde/config.toml");
    let removed = m.sh("dpkg -r molde 2>&1; echo rc=$?");
    assert!(removed.trim_end().ends_with("rc=0"), "{removed}");
    assert_ne!(m.property("molded.service", "ActiveState"), "active");
    assert_eq!(
        m.sh("ls /usr/bin/molded /usr/bin/molde /usr/lib/systemd/system/molded.service 2>&1 | grep -c 'No such file'")
            .trim(),
        "3"
    );
    assert!(
        m.sh("cat /etc/molde/config.toml")
            .contains("the administrator was here")
    );
    // Purged: the config too.
    let purged = m.sh("dpkg --purge molde 2>&1; echo rc=$?");
    assert!(purged.trim_end().ends_with("rc=0"), "{purged}");
    assert_eq!(m.sh("test -e /etc/molde/config.toml || echo gone").trim(), "gone");
}
