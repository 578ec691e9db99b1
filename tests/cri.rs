//! CRI: pods and containers driven as the kubelet drives them, through a
//! client of the same `k8s-cri` crate molde's CRI service is built on, on
//! molded's CRI socket; real pods on a CNI bridge (Debian's plugins), images
//! from a real registry.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use molde_tests::Daemon;
use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
use molde_tests::registry::{Registry, free_port_outside_ephemeral};
use tonic::transport::Channel;

/// The test network: a bridge and subnet of its own (not podman's 10.88/16,
/// not molde run's 10.89/16).
const CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "molde-cri-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "mcritest0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.91.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
  ]
}"#;

struct Node {
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
    /// The molded hosting every other service, when CRI runs in a process of its own.
    _backend: Option<Daemon>,
    reg: Registry,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// `<registry>/cri/busybox:1`
    busybox: String,
    logs: PathBuf,
}

impl Node {
    fn start() -> Node {
        Self::start_with(true)
    }

    fn start_with(network: bool) -> Node {
        Self::start_full(network, Registry::start(), |_, _| String::new())
    }

    /// A node whose config gets `extra(daemon dir, registry)` appended.
    fn start_full(network: bool, reg: Registry, extra: impl Fn(&Path, &Registry) -> String) -> Node {
        Self::start_on(Daemon::prepare(&[]), None, network, reg, extra)
    }

    /// CRI alone in one molded (`--service cri`), every other service in another.
    fn start_split() -> Node {
        let mut backend = Daemon::prepare(&[
            "--service",
            "content",
            "--service",
            "snapshotter",
            "--service",
            "transfer",
            "--service",
            "runtime",
        ]);
        backend.spawn();
        let mut cri = Daemon::prepare(&["--service", "cri"]);
        let at = format!("unix://{}", backend.sock.display());
        for svc in ["content", "snapshotter", "transfer", "runtime"] {
            cri.args(&["--remote".into(), format!("{svc}={at}")]);
        }
        Self::start_on(cri, Some(backend), true, Registry::start(), |_, _| String::new())
    }

    fn start_on(
        mut daemon: Daemon,
        backend: Option<Daemon>,
        network: bool,
        reg: Registry,
        extra: impl Fn(&Path, &Registry) -> String,
    ) -> Node {
        let net_d = daemon.dir.path().join("net.d");
        std::fs::create_dir_all(&net_d).unwrap();
        if network {
            std::fs::write(net_d.join("10-test.conflist"), CONFLIST).unwrap();
        }
        let config = daemon.dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[cri]\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"/usr/lib/cni\", \"{}\"]\n{}",
                net_d.display(),
                daemon.dir.path().join("cni-bin").display(),
                extra(daemon.dir.path(), &reg)
            ),
        )
        .unwrap();
        daemon.args(&["--config".into(), config.display().to_string()]);
        daemon.spawn();
        let work = daemon.dir.path().join("image");
        let mut rootfs = busybox_rootfs();
        for applet in [
            "wget", "httpd", "hostname", "ps", "pidof", "unshare", "tail", "grep", "stty", "readlink",
        ] {
            rootfs.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
        let l = image::layout(&work, &[tar(&rootfs)], Compression::Gzip, host_arch());
        // push_layout sends the registry's own credentials, if it has any.
        reg.push_layout(&l.dir, "cri/busybox:1");
        let busybox = format!("{}/cri/busybox:1", reg.host);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sock = daemon.dir.path().join("cri.sock");
        let ch = rt
            .block_on(molde_api::client::connect(&molde_api::client::Address::Unix(
                sock,
            )))
            .expect("the CRI socket answers");
        let logs = daemon.dir.path().join("logs");
        Node {
            _backend: backend,
            // The kubelet's message limit (grpc-go's default is 4 MiB).
            runtime: RuntimeServiceClient::new(ch.clone()).max_decoding_message_size(16 << 20),
            images: ImageServiceClient::new(ch).max_decoding_message_size(16 << 20),
            rt,
            daemon,
            reg,
            busybox,
            logs,
        }
    }

    fn pull(&mut self, image: &str) -> String {
        self.pull_with(image, None).expect("PullImage")
    }

    fn pull_with(&mut self, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, tonic::Status> {
        let r = self.rt.block_on(self.images.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        }));
        r.map(|r| r.into_inner().image_ref)
    }

    fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: format!("{name}-host"),
            log_directory: self.logs.join(name).display().to_string(),
            labels: [("app".to_string(), name.to_string())].into(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/molde-cri-test/pod-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run_pod(&mut self, config: cri::PodSandboxConfig) -> String {
        self.rt
            .block_on(self.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            }))
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    }

    fn container_config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}/0.log"),
            labels: [("container".to_string(), name.to_string())].into(),
            ..Default::default()
        }
    }

    fn create(
        &mut self,
        pod: &str,
        config: cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        self.rt
            .block_on(self.runtime.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            }))
            .map(|r| r.into_inner().container_id)
    }

    fn start_container(&mut self, id: &str) {
        self.rt
            .block_on(self.runtime.start_container(cri::StartContainerRequest {
                container_id: id.into(),
            }))
            .expect("StartContainer");
    }

    /// Creates and starts a container; its id.
    fn run(&mut self, pod: &str, pod_config: &cri::PodSandboxConfig, config: cri::ContainerConfig) -> String {
        let id = self.create(pod, config, pod_config).expect("CreateContainer");
        self.start_container(&id);
        id
    }

    fn exec(&mut self, id: &str, cmd: &[&str], timeout: i64) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.rt
            .block_on(self.runtime.exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            }))
            .map(|r| r.into_inner())
    }

    /// Runs a command in a container; its stdout, which must succeed.
    fn sh(&mut self, id: &str, script: &str) -> String {
        let r = self.exec(id, &["sh", "-c", script], 30).expect("ExecSync");
        assert_eq!(r.exit_code, 0, "{script}: {}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    fn status(&mut self, id: &str) -> cri::ContainerStatus {
        self.rt
            .block_on(self.runtime.container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .expect("ContainerStatus")
            .into_inner()
            .status
            .unwrap()
    }

    fn pod_status(&mut self, id: &str) -> cri::PodSandboxStatus {
        self.rt
            .block_on(self.runtime.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            }))
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .unwrap()
    }

    fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        for _ in 0..300 {
            let s = self.status(id);
            if s.state == cri::ContainerState::ContainerExited as i32 {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("container {id} did not exit within 30s");
    }

    fn stop_and_remove_pod(&mut self, id: &str) {
        self.rt
            .block_on(self.runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .expect("StopPodSandbox");
        self.rt
            .block_on(self.runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            }))
            .expect("RemovePodSandbox");
    }

    fn netns_pins(&self) -> Vec<PathBuf> {
        molde_tests::files_under(&self.daemon.state.join("cri/netns"))
    }

    /// Waits for the networks of stopped pods to be released: molded
    /// releases them (CNI DEL, then the namespace's pin) after
    /// StopPodSandbox returns.
    fn wait_networks_released(&self) {
        molde_tests::eventually(30, "the stopped pods' networks released", || {
            self.netns_pins().is_empty()
        });
    }
}

/// A failed test still leaves no pod behind: what it ran is removed (network
/// attachments, namespace pins, shm mounts) before its molded stops.
impl Drop for Node {
    fn drop(&mut self) {
        let mut rt = self.runtime.clone();
        let _ = self.rt.block_on(async move {
            let pods = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items;
            for p in pods {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: p.id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.id })
                    .await?;
            }
            Ok::<(), tonic::Status>(())
        });
        // The pods' networks are released in the background: waited for
        // (bounded, without a panic in a drop), or their namespace pins,
        // veths and addresses outlive the test.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !self.netns_pins().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn eventually_get(addr: &str) -> String {
    let mut last = None;
    for _ in 0..100 {
        match http_get(addr) {
            Ok(body) if body.contains("200") => return body,
            other => last = Some(other),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET {addr}: {last:?}");
}

/// Serves `text` over HTTP on `port` (busybox httpd), in the foreground.
fn server(port: u16, text: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /www && echo {text} > /www/index.html && echo serving && exec httpd -f -p {port} -h /www"
        ),
    ]
}

#[test]
fn a_pod_of_two_containers_shares_its_network_files_and_logs() {
    let mut n = Node::start();
    let image_ref = n.pull(&n.busybox.clone());
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let host_port = free_port_outside_ephemeral();
    let mut pc = n.pod_config("web");
    pc.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pc.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let pod = n.run_pod(pc.clone());
    let st = n.pod_status(&pod);
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = st.network.clone().unwrap().ip;
    assert!(ip.starts_with("10.91."), "pod ip {ip}");

    let srv_cfg = cri::ContainerConfig {
        command: server(8080, "pod-says-hi"),
        ..n.container_config("server", &[])
    };
    let srv = n.run(&pod, &pc, srv_cfg);
    let client = n.run(&pod, &pc, n.container_config("client", &["sleep", "3600"]));
    assert_eq!(n.status(&srv).state, cri::ContainerState::ContainerRunning as i32);

    // One network: the client reaches the server on localhost.
    let mut got = String::new();
    for _ in 0..50 {
        let r = n
            .exec(&client, &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"], 10)
            .unwrap();
        got = String::from_utf8_lossy(&r.stdout).into_owned();
        if got.contains("pod-says-hi") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got.trim(), "pod-says-hi");
    // The pod's IP answers from the host, and so does the port mapping.
    assert!(eventually_get(&format!("{ip}:8080")).contains("pod-says-hi"));
    assert!(eventually_get(&format!("127.0.0.1:{host_port}")).contains("pod-says-hi"));
    // The pod's files: hostname, DNS.
    assert_eq!(n.sh(&client, "hostname").trim(), "web-host");
    let resolv = n.sh(&client, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // ExecSync reports stderr and the exit code.
    let r = n
        .exec(&client, &["sh", "-c", "echo oops >&2; exit 3"], 10)
        .unwrap();
    assert_eq!((r.exit_code, r.stderr.as_slice()), (3, b"oops\n".as_slice()));

    // The log, in the kubelet's format, where the kubelet asked for it.
    let log = n.logs.join("web/server/0.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let first = text.lines().next().unwrap();
    let parts: Vec<&str> = first.splitn(4, ' ').collect();
    assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{first}");
    assert_eq!(&parts[1..], ["stdout", "F", "serving"], "{first}");
    assert_eq!(n.status(&srv).log_path, log.display().to_string());
    // A last line the program never ended is a partial record: the kubelet
    // adds no newline it did not write.
    n.run(
        &pod,
        &pc,
        n.container_config("printer", &["sh", "-c", "printf 'first\\nsecond'"]),
    );
    let log = n.logs.join("web/printer/0.log");
    molde_tests::eventually(10, "the printer's last record", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("second"))
    });
    let records: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(records, ["stdout F first", "stdout P second"]);

    // Listing by pod and by label.
    let listed =
        n.rt.block_on(n.runtime.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                label_selector: [("container".to_string(), "client".to_string())].into(),
                ..Default::default()
            }),
        }))
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [client.as_str()]
    );

    // Stop: the server gets SIGTERM and exits; its status says so.
    n.rt.block_on(n.runtime.stop_container(cri::StopContainerRequest {
        container_id: srv.clone(),
        timeout: 10,
    }))
    .unwrap();
    let s = n.wait_exited(&srv);
    assert!(s.finished_at >= s.started_at && s.started_at > 0, "{s:?}");
    assert_ne!(s.reason, "");

    // Nothing is left once the pod is gone.
    assert_eq!(n.netns_pins().len(), 1);
    n.stop_and_remove_pod(&pod);
    n.wait_networks_released();
    assert!(!n.daemon.state.join("cri/sandboxes").join(&pod).exists());
    let left =
        n.rt.block_on(n.runtime.list_containers(cri::ListContainersRequest::default()))
            .unwrap()
            .into_inner()
            .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(http_get(&format!("127.0.0.1:{host_port}")).is_err());
    // Removing again is not an error.
    n.stop_and_remove_pod(&pod);
}

#[test]
fn security_context_user_readonly_rootfs_capabilities_seccomp_and_no_new_privs() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("secure");
    let pod = n.run_pod(pc.clone());
    let mut c = n.container_config("locked", &["sleep", "3600"]);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 1001 }),
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(cri::Capability {
                drop_capabilities: vec!["ALL".into()],
                ..Default::default()
            }),
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
    });
    let id = n.run(&pod, &pc, c);
    assert_eq!(n.sh(&id, "id -u; id -g"), "1000\n1001\n");
    // The container's own process (exec'd ones are checked below).
    let status = n.sh(&id, "cat /proc/$(pidof sleep)/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2");
    let r = n.exec(&id, &["touch", "/written"], 10).unwrap();
    assert_ne!(r.exit_code, 0, "a read-only rootfs was written");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{:?}",
        r
    );

    // The default seccomp profile allows unshare to a container given
    // CAP_SYS_ADMIN (as Docker's does), and to no other (below).
    let mut rootc = n.container_config(
        "root",
        &["sh", "-c", "unshare -u true; echo unshare=$?; exec sleep 3600"],
    );
    rootc.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            capabilities: Some(cri::Capability {
                add_capabilities: vec!["SYS_ADMIN".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
    });
    let root = n.run(&pod, &pc, rootc);
    let log = n.logs.join("secure/root/0.log");
    molde_tests::eventually(10, "the root container's log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("unshare="))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stdout F unshare=0"), "{text}");

    // A process exec'd into the container is filtered as the container is.
    let out = n.sh(&root, "unshare -u true 2>/dev/null; echo unshare=$?");
    assert_eq!(out.trim(), "unshare=0");

    // Without no_new_privs and without CAP_SYS_ADMIN the exec'd process is
    // filtered too, and keeps exactly the container's capabilities.
    let mut plain = n.container_config("plain", &["sleep", "3601"]);
    plain.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
    });
    let plain = n.run(&pod, &pc, plain);

    let out = n.sh(&plain, "unshare -u true 2>/dev/null; echo unshare=$?");
    assert_eq!(out.trim(), "unshare=1");
    let caps = |pid: &str, n: &mut Node| -> Vec<String> {
        n.sh(
            &plain,
            &format!("grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/{pid}/status"),
        )
        .lines()
        .map(str::to_string)
        .collect()
    };
    // The pod shares a PID namespace: its PID 1 is the pod's holder.
    let main = n.sh(&plain, "grep -l '360[1]' /proc/[0-9]*/cmdline");
    let main = main
        .trim()
        .trim_start_matches("/proc/")
        .trim_end_matches("/cmdline")
        .to_string();
    let (own, execd) = (caps(&main, &mut n), caps("self", &mut n));
    assert!(own.iter().any(|l| l.starts_with("CapBnd")), "{own:?}");
    assert_eq!(own, execd);
    n.stop_and_remove_pod(&pod);
}

/// Containers that join their pod's PID namespace get pids there that the
/// host's /proc knows nothing of (or names another process by): every one
/// starts, sees its own cgroup at /sys/fs/cgroup, and cannot write to it.
#[test]
fn containers_of_a_shared_pid_pod_start_whatever_pid_they_get_and_see_their_own_cgroup() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("sharedpid");
    let pod = n.run_pod(pc.clone());
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let (file, limit) = if v1 {
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", 48u64 << 20)
    } else {
        ("/sys/fs/cgroup/memory.max", 48u64 << 20)
    };
    // Started one after another, they get consecutive pids in the pod (2,
    // 3, 4, ...): some of those name no process on the host.
    let ids: Vec<String> = (0..14)
        .map(|i| {
            let mut c = n.container_config(&format!("c{i}"), &["sleep", "3600"]);
            c.linux = Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: limit as i64,
                    ..Default::default()
                }),
                security_context: None,
            });
            n.run(&pod, &pc, c)
        })
        .collect();
    for id in &ids {
        let seen = n.sh(
            id,
            &format!("cat {file}; (echo 1 > {file}) 2>/dev/null && echo wrote; true"),
        );
        assert_eq!(seen.trim(), limit.to_string(), "its own limit, read-only");
    }
    // A container whose init exits while a child it started still holds its
    // output: in the shared namespace the child outlives the init. The
    // container ends with the init, and the child with it.
    let leaver = n.run(
        &pod,
        &pc,
        n.container_config("leaver", &["sh", "-c", "sleep 1234567 & echo started; exit 3"]),
    );
    let s = n.wait_exited(&leaver);
    assert_eq!(s.exit_code, 3, "{s:?}");
    molde_tests::eventually(10, "the init's child to be gone", || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x001234567"))
        })
    });
    n.stop_and_remove_pod(&pod);
}

#[test]
fn exec_sync_times_out_killing_only_its_process_and_an_oom_kill_says_so() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("limits");
    let pod = n.run_pod(pc.clone());
    let id = n.run(&pod, &pc, n.container_config("sleeper", &["sleep", "3600"]));
    let err = n.exec(&id, &["sleep", "30"], 1).unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("timed out"), "{err:?}");
    // The container runs on, and the timed-out process is gone.
    assert_eq!(n.status(&id).state, cri::ContainerState::ContainerRunning as i32);
    assert!(!n.sh(&id, "ps").contains("sleep 30"));

    let mut hog = n.container_config("hog", &["sh", "-c", "tail /dev/zero"]);
    hog.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let hog = n.run(&pod, &pc, hog);
    let s = n.wait_exited(&hog);
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_ne!(s.exit_code, 0);
    n.stop_and_remove_pod(&pod);
}

#[test]
fn bad_requests_get_the_codes_the_kubelet_expects_and_leave_nothing() {
    let mut n = Node::start();
    let bad =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    let pc = n.pod_config("dup");
    let pod = n.run_pod(pc.clone());
    let again =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pc.clone()),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    assert!(
        again.message().contains(&pod),
        "the error names the pod holding the name: {again:?}"
    );

    // A missing image: NotFound, and no container, snapshot or name is left.
    let missing = n
        .create(
            &pod,
            cri::ContainerConfig {
                image: Some(cri::ImageSpec {
                    image: "127.0.0.1:1/nothing:here".into(),
                    ..Default::default()
                }),
                ..n.container_config("c", &["true"])
            },
            &pc,
        )
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    n.pull(&n.busybox.clone());
    let id = n.create(&pod, n.container_config("c", &["true"]), &pc).unwrap();
    let dup = n
        .create(&pod, n.container_config("c", &["true"]), &pc)
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    assert!(dup.message().contains(&id), "{dup:?}");
    // The losing create's container (made before the name was taken) is
    // gone again: the runtime holds the first one's task only.
    let tasks: Vec<String> = std::fs::read_dir(n.daemon.state.join("runtime/k8s.io"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| !f.starts_with('.'))
        .collect();
    assert_eq!(tasks, std::slice::from_ref(&id));

    for (what, code) in [
        (
            n.rt.block_on(n.runtime.container_status(cri::ContainerStatusRequest {
                container_id: "0123456789abcdef".into(),
                verbose: false,
            }))
            .map(|_| ()),
            tonic::Code::NotFound,
        ),
        (
            n.rt.block_on(n.runtime.start_container(cri::StartContainerRequest {
                container_id: "0123456789abcdef".into(),
            }))
            .map(|_| ()),
            tonic::Code::NotFound,
        ),
    ] {
        assert_eq!(what.unwrap_err().code(), code);
    }
    // Stopping what does not exist is done already (the CRI's idempotence).
    n.rt.block_on(n.runtime.stop_container(cri::StopContainerRequest {
        container_id: "0123456789abcdef".into(),
        timeout: 0,
    }))
    .expect("StopContainer of an unknown id is OK");
    n.rt.block_on(n.runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "7b2a1f0e-unknown".into(),
    }))
    .expect("StopPodSandbox of an unknown id is OK");

    // A stopped pod takes no new containers.
    n.rt.block_on(n.runtime.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .unwrap();
    let stopped = n
        .create(&pod, n.container_config("late", &["true"]), &pc)
        .unwrap_err();
    assert_eq!(stopped.code(), tonic::Code::FailedPrecondition, "{stopped:?}");
    n.stop_and_remove_pod(&pod);
    n.wait_networks_released();
}

#[test]
fn status_says_the_network_is_not_ready_without_a_cni_config() {
    let mut n = Node::start_with(false);
    let st =
        n.rt.block_on(n.runtime.status(cri::StatusRequest { verbose: false }))
            .unwrap()
            .into_inner()
            .status
            .unwrap();
    let cond: HashMap<String, (bool, String)> = st
        .conditions
        .into_iter()
        .map(|c| (c.r#type, (c.status, c.reason)))
        .collect();
    assert!(cond["RuntimeReady"].0);
    assert_eq!(cond["NetworkReady"], (false, "NetworkPluginNotReady".to_string()));
    let v =
        n.rt.block_on(n.runtime.version(cri::VersionRequest::default()))
            .unwrap()
            .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("molde", "v1")
    );
    // A host-network pod needs no CNI config.
    let mut pc = n.pod_config("hostnet");
    pc.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = n.run_pod(pc.clone());
    n.pull(&n.busybox.clone());
    let port = free_port_outside_ephemeral();
    let srv_cfg = cri::ContainerConfig {
        command: server(port, "from-the-host-network"),
        ..n.container_config("srv", &[])
    };
    n.run(&pod, &pc, srv_cfg);
    assert!(eventually_get(&format!("127.0.0.1:{port}")).contains("from-the-host-network"));
    n.stop_and_remove_pod(&pod);
    // A pod on the network fails clearly and leaves nothing.
    let err =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(n.pod_config("nonet")),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert!(err.message().contains("no network config"), "{err:?}");
    assert!(n.netns_pins().is_empty());
    let pods =
        n.rt.block_on(n.runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()))
            .unwrap()
            .into_inner()
            .items;
    assert!(pods.is_empty(), "{pods:?}");
}

#[test]
fn cri_images_live_in_k8s_io_and_are_listed_removed_and_described() {
    let mut n = Node::start();
    let id = n.pull(&n.busybox.clone());
    let images =
        n.rt.block_on(n.images.list_images(cri::ListImagesRequest::default()))
            .unwrap()
            .into_inner()
            .images;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].repo_tags, [n.busybox.clone()]);
    assert!(images[0].repo_digests[0].starts_with(&format!("{}/cri/busybox@sha256:", n.reg.host)));
    assert!(images[0].size > 0);
    assert!(
        n.daemon
            .molde(&["-n", "k8s.io", "images"])
            .ok()
            .contains("cri/busybox")
    );
    // Status by id, by tag and by digest reference.
    for spec in [id.clone(), n.busybox.clone(), images[0].repo_digests[0].clone()] {
        let st =
            n.rt.block_on(n.images.image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: spec.clone(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .unwrap()
            .into_inner();
        assert_eq!(st.image.map(|i| i.id), Some(id.clone()), "{spec}");
    }
    let fs =
        n.rt.block_on(n.images.image_fs_info(cri::ImageFsInfoRequest {}))
            .unwrap()
            .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 0);
    assert!(Path::new(&usage.fs_id.as_ref().unwrap().mountpoint).is_dir());
    n.rt.block_on(n.images.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: id.clone(),
            ..Default::default()
        }),
    }))
    .unwrap();
    let st =
        n.rt.block_on(n.images.image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: id,
                ..Default::default()
            }),
            verbose: false,
        }))
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());
}

#[test]
fn pulls_with_basic_auth_and_through_a_registry_k8s_io_mirror_and_users_by_name() {
    let reg = Registry::start_with_auth("kube", "s3cret");
    let mut n = Node::start_full(true, reg, |dir, reg| {
        // registry.k8s.io comes from the loopback registry, and only from it.
        let certs = dir.join("certs.d/registry.k8s.io");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::write(
            certs.join("hosts.toml"),
            format!(
                "server = \"http://{0}\"\n\n[host.\"http://{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                reg.host
            ),
        )
        .unwrap();
        format!(
            "[registry]\nconfig_path = \"{}\"\n",
            dir.join("certs.d").display()
        )
    });
    let image = n.busybox.clone();
    let denied = n.pull_with(&image, None).unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated, "{denied:?}");
    let wrong = n
        .pull_with(
            &image,
            Some(cri::AuthConfig {
                username: "kube".into(),
                password: "wrong".into(),
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    use base64::Engine;
    let auth = cri::AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("kube:s3cret"),
        ..Default::default()
    };
    let id = n.pull_with(&image, Some(auth.clone())).unwrap();
    // The same image under registry.k8s.io's name, through the mirror.
    let mirrored = n.pull_with("registry.k8s.io/cri/busybox:1", Some(auth)).unwrap();
    assert_eq!(mirrored, id);
    assert!(
        n.daemon
            .molde(&["-n", "k8s.io", "images"])
            .ok()
            .contains("registry.k8s.io/cri/busybox")
    );

    // A user by name, from the image's /etc/passwd.
    let pc = n.pod_config("users");
    let pod = n.run_pod(pc.clone());
    let mut c = n.container_config("named", &["sleep", "3600"]);
    c.image = Some(cri::ImageSpec {
        image: "registry.k8s.io/cri/busybox:1".into(),
        ..Default::default()
    });
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "nobody".into(),
            ..Default::default()
        }),
    });
    let named = n.run(&pod, &pc, c);
    assert_eq!(
        n.sh(
            &named,
            "cat /proc/$(pidof sleep)/status | grep -E '^(Uid|Gid)' | cut -f2"
        ),
        "65534\n65534\n"
    );
    let mut missing = n.container_config("ghost", &["true"]);
    missing.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_username: "ghost".into(),
            ..Default::default()
        }),
    });
    let err = n.create(&pod, missing, &pc).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("ghost"), "{err:?}");
    n.stop_and_remove_pod(&pod);
}

#[test]
fn pods_run_on_through_a_kill_9_of_molded_and_are_stopped_and_removed_after() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("survivor");
    let pod = n.run_pod(pc.clone());
    let c = n.run(&pod, &pc, n.container_config("long", &["sleep", "3600"]));
    // Created, not started: its shim holds it through the restart.
    let later = n
        .create(&pod, n.container_config("later", &["sleep", "3600"]), &pc)
        .expect("CreateContainer");
    // Created and removed without a start.
    let never = n
        .create(&pod, n.container_config("never", &["sleep", "3600"]), &pc)
        .expect("CreateContainer");
    assert_eq!(
        n.status(&never).state,
        cri::ContainerState::ContainerCreated as i32
    );
    n.rt.block_on(n.runtime.remove_container(cri::RemoveContainerRequest {
        container_id: never.clone(),
    }))
    .expect("RemoveContainer");
    assert!(
        shims_of(&never).is_empty(),
        "the created container's shim is left"
    );
    assert!(!mounted(&never), "the created container's rootfs is left mounted");
    // Each container's shim reads as the one started for it, whether molded
    // started it or handed the container to a spare (a held container's
    // init, not yet exec'd, reads as its shim too); and a spare waits.
    for id in [&c, &later] {
        let shims = shims_of(id);
        assert!(
            !shims.is_empty()
                && shims
                    .iter()
                    .all(|s| s.contains(&format!("molde-shim start --id k8s.io-{id}"))),
            "the shim of {id}: {shims:?}"
        );
    }
    let state = n.daemon.state.display().to_string();
    let spares = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .filter(|cmd| cmd.contains("molde-shim spare") && cmd.contains(&state))
            .count()
    };
    molde_tests::eventually(30, "a spare shim", || spares() == 1);

    n.daemon.kill9();
    // The spare of the killed molded ends with it; the containers' shims run on.
    molde_tests::eventually(30, "the spare to end", || spares() == 0);
    assert!(!shims_of(&c).is_empty(), "the running container's shim is gone");
    n.daemon.restart();
    assert_eq!(
        n.pod_status(&pod).state,
        cri::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(n.status(&c).state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(n.sh(&c, "echo still-here"), "still-here\n");
    assert_eq!(
        n.status(&later).state,
        cri::ContainerState::ContainerCreated as i32
    );
    n.start_container(&later);
    assert_eq!(n.sh(&later, "echo started-after"), "started-after\n");
    n.stop_and_remove_pod(&pod);
    n.wait_networks_released();
    // No shim of any container is left running, nor a rootfs mounted.
    for id in [&c, &later] {
        assert!(shims_of(id).is_empty(), "a shim is left: {:?}", shims_of(id));
        assert!(!mounted(id), "a rootfs is left mounted");
    }
}

/// StopPodSandbox returns once the pod's processes are gone and its network
/// is released after; a molded killed while it releases it releases it
/// again when it starts.
#[test]
fn a_stopped_pods_network_is_released_after_the_stop_and_through_a_kill_9() {
    let mut n = Node::start();
    // A plugin chained last (its DEL runs first) whose DEL waits for a gate
    // the test opens, noting when it begins and when it ends.
    let dir = n.daemon.dir.path().to_path_buf();
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("molde-test-gated-del");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nconf=$(cat)\ncase \"$CNI_COMMAND\" in\n\
             ADD) printf '%s' \"$conf\" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[\"prevResult\"]))' ;;\n\
             DEL) echo \"$CNI_CONTAINERID\" >> {d}/del-begun\n\
             i=0; while [ ! -e {d}/gate ] && [ -d {d} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n\
             echo \"$CNI_CONTAINERID\" >> {d}/del-done ;;\n\
             esac\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut list: serde_json::Value = serde_json::from_str(CONFLIST).unwrap();
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "molde-test-gated-del"}));
    std::fs::write(dir.join("net.d/10-test.conflist"), list.to_string()).unwrap();
    let lines = |f: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(f))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };

    let pod = n.run_pod(n.pod_config("gated"));
    let ip = n.pod_status(&pod).network.unwrap().ip;
    assert!(!ip.is_empty());
    // The stop returns while the plugin's DEL waits at its gate (a stop
    // that waited for the release would wait for ever: bounded here).
    let mut rt = n.runtime.clone();
    let stop = n.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(60),
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .await
    });
    stop.expect("StopPodSandbox answers before the network is released")
        .expect("StopPodSandbox");
    n.stop_and_remove_pod(&pod);
    molde_tests::eventually(30, "the release to begin", || lines("del-begun") == [pod.clone()]);
    assert!(lines("del-done").is_empty());
    assert_eq!(n.netns_pins().len(), 1, "the pin goes after the DEL");
    // Killed mid-release: the release is begun again at the next start.
    n.daemon.kill9();
    n.daemon.restart();
    molde_tests::eventually(30, "the release to begin again", || lines("del-begun").len() == 2);
    std::fs::write(dir.join("gate"), "").unwrap();
    n.wait_networks_released();
    molde_tests::eventually(30, "both DELs to end", || lines("del-done").len() == 2);
    let held = std::fs::read_to_string(format!("/var/lib/cni/networks/molde-cri-test/{ip}"));
    assert!(held.is_err(), "{ip} is still allocated: {held:?}");
    assert!(
        n.daemon
            .log_text()
            .contains("releasing the network of a pod stopped before molded did"),
        "the restart says what it releases"
    );
}

/// The command lines of the shims of container `id` still running.
fn shims_of(id: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .filter(|cmd| cmd.contains("molde-shim") && cmd.contains(id))
        .collect()
}

/// Whether anything of container `id` is still mounted on the host.
fn mounted(id: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(id)
}

#[test]
fn thirty_pods_of_two_containers_at_once_leave_nothing_behind() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pods: Vec<(cri::PodSandboxConfig, cri::ContainerConfig, cri::ContainerConfig)> = (0..30)
        .map(|i| {
            let pc = n.pod_config(&format!("many-{i}"));
            (
                pc,
                n.container_config("a", &["sleep", "3600"]),
                n.container_config("b", &["sleep", "3600"]),
            )
        })
        .collect();
    let runtime = n.runtime.clone();
    let ids: Vec<String> = n.rt.block_on(async {
        let mut tasks = Vec::new();
        for (pc, a, b) in pods {
            let mut rt = runtime.clone();
            tasks.push(tokio::spawn(async move {
                let pod = rt
                    .run_pod_sandbox(cri::RunPodSandboxRequest {
                        config: Some(pc.clone()),
                        runtime_handler: String::new(),
                    })
                    .await
                    .expect("RunPodSandbox")
                    .into_inner()
                    .pod_sandbox_id;
                for c in [a, b] {
                    let id = rt
                        .create_container(cri::CreateContainerRequest {
                            pod_sandbox_id: pod.clone(),
                            config: Some(c),
                            sandbox_config: Some(pc.clone()),
                        })
                        .await
                        .expect("CreateContainer")
                        .into_inner()
                        .container_id;
                    rt.start_container(cri::StartContainerRequest { container_id: id })
                        .await
                        .expect("StartContainer");
                }
                pod
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids
    });
    let running =
        n.rt.block_on(n.runtime.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        }))
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(running.len(), 60);
    n.rt.block_on(async {
        let mut tasks = Vec::new();
        for pod in ids.clone() {
            let mut rt = runtime.clone();
            tasks.push(tokio::spawn(async move {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .expect("StopPodSandbox");
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod })
                    .await
                    .expect("RemovePodSandbox");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    n.wait_networks_released();
    assert!(
        std::fs::read_dir(n.daemon.state.join("cri/sandboxes"))
            .unwrap()
            .next()
            .is_none(),
        "pod directories are left"
    );
    // No address of ours is still allocated.
    if let Ok(dir) = std::fs::read_dir("/var/lib/cni/networks/molde-cri-test") {
        for e in dir.flatten() {
            let holder = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(
                !ids.iter().any(|id| holder.contains(id.as_str())),
                "{:?} is still allocated",
                e.path()
            );
        }
    }
    let left =
        n.rt.block_on(n.runtime.list_containers(cri::ListContainersRequest::default()))
            .unwrap()
            .into_inner()
            .containers;
    assert!(left.is_empty());
    let cgroups = Path::new("/sys/fs/cgroup/memory/molde-cri-test");
    if cgroups.exists() {
        let leftover: Vec<_> = std::fs::read_dir(cgroups)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pod-many-"))
            .filter(|e| {
                e.path()
                    .read_dir()
                    .is_ok_and(|mut d| d.any(|x| x.is_ok_and(|x| x.path().is_dir())))
            })
            .collect();
        assert!(leftover.is_empty(), "container cgroups are left: {leftover:?}");
    }
}

#[test]
fn cri_runs_as_a_process_of_its_own_against_the_other_services() {
    let mut n = Node::start_split();
    let id = n.pull(&n.busybox.clone());
    let pc = n.pod_config("split");
    let pod = n.run_pod(pc.clone());
    let c = n.run(&pod, &pc, n.container_config("alone", &["sleep", "3600"]));
    assert_eq!(n.sh(&c, "hostname"), "split-host\n");
    assert_eq!(n.status(&c).image_id, id);
    // The images and containers are the other molded's.
    let backend = n._backend.as_ref().unwrap();
    assert!(
        backend
            .molde(&["-n", "k8s.io", "images"])
            .ok()
            .contains("cri/busybox")
    );
    assert!(backend.molde(&["-n", "k8s.io", "ps"]).ok().contains(&c[..12]));
    n.stop_and_remove_pod(&pod);
    n.wait_networks_released();
}

#[test]
fn stats_are_read_from_the_pods_cgroups_and_resources_update_live() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stats");
    let pod = n.run_pod(pc.clone());
    let id = n.run(
        &pod,
        &pc,
        n.container_config(
            "busy",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 3600",
            ],
        ),
    );
    // Traffic into the pod, for its network counters.
    let ip = n.pod_status(&pod).network.unwrap().ip;
    let _ = http_get(&format!("{ip}:80"));
    let mut stats = None;
    for _ in 0..100 {
        let s =
            n.rt.block_on(n.runtime.container_stats(cri::ContainerStatsRequest {
                container_id: id.clone(),
            }))
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        if s.cpu
            .as_ref()
            .unwrap()
            .usage_core_nano_seconds
            .as_ref()
            .unwrap()
            .value
            > 10_000_000
        {
            stats = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = stats.expect("the container's CPU time shows in its stats");
    let memory = stats.memory.unwrap();
    let (working_set, usage, rss) = (
        memory.working_set_bytes.unwrap().value,
        memory.usage_bytes.unwrap().value,
        memory.rss_bytes.unwrap().value,
    );
    assert!(
        working_set > 0 && working_set <= usage,
        "{working_set} of {usage}"
    );
    assert!(rss > 0 && rss <= usage, "rss {rss} of {usage}");
    assert!(memory.page_faults.unwrap().value > 0);
    // The same numbers as the cgroup's own files (a sleeping process: its
    // memory holds still between the two reads).
    let cg = format!("molde-cri-test/pod-stats/{id}");
    let (stat, current) =
        match std::fs::read_to_string(Path::new("/sys/fs/cgroup/memory").join(&cg).join("memory.stat")) {
            Ok(stat) => (
                stat,
                std::fs::read_to_string(
                    Path::new("/sys/fs/cgroup/memory")
                        .join(&cg)
                        .join("memory.usage_in_bytes"),
                )
                .unwrap(),
            ),
            Err(_) => (
                std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(&cg).join("memory.stat")).unwrap(),
                std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(&cg).join("memory.current"))
                    .unwrap(),
            ),
        };
    let field = |names: &[&str]| -> u64 {
        names
            .iter()
            .find_map(|n| {
                stat.lines()
                    .find_map(|l| l.strip_prefix(&format!("{n} "))?.parse().ok())
            })
            .unwrap()
    };
    let file_working_set =
        current.trim().parse::<u64>().unwrap() - field(&["total_inactive_file", "inactive_file"]);
    assert!(
        file_working_set.abs_diff(working_set) < 1 << 20,
        "working set {working_set}, the cgroup's files say {file_working_set}"
    );
    assert!(field(&["total_rss", "anon"]).abs_diff(rss) < 1 << 20);
    let pod_stats =
        n.rt.block_on(n.runtime.pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 1);
    // The pod's memory is its containers' summed.
    let pod_memory = linux.memory.unwrap();
    let container_memory = linux.containers[0].memory.unwrap();
    assert_eq!(pod_memory.rss_bytes, container_memory.rss_bytes);
    assert_eq!(pod_memory.usage_bytes, container_memory.usage_bytes);
    // Nano cores: the CPU time used between two readings over the time
    // between them, as the kubelet would work it out.
    let mut read = || {
        n.rt.block_on(n.runtime.container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        }))
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
    };
    let first = read().cpu.unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let again = read();
    let second = again.cpu.unwrap();
    let used = second.usage_core_nano_seconds.unwrap().value - first.usage_core_nano_seconds.unwrap().value;
    let want = used as u128 * 1_000_000_000 / (second.timestamp - first.timestamp) as u128;
    let nano = second
        .usage_nano_cores
        .expect("nano cores on a second reading")
        .value;
    assert_eq!(nano as u128, want);
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    assert!(
        nano <= cores * 1_000_000_000,
        "{nano} nano cores on {cores} cores"
    );
    // Its writable layer is on the filesystem ImageFsInfo names.
    let image_fs =
        n.rt.block_on(n.images.image_fs_info(cri::ImageFsInfoRequest {}))
            .unwrap()
            .into_inner()
            .image_filesystems;
    let layer_fs = again.writable_layer.unwrap().fs_id.unwrap().mountpoint;
    assert!(!layer_fs.is_empty());
    assert_eq!(layer_fs, image_fs[0].fs_id.clone().unwrap().mountpoint);
    // One process (sh exec'd sleep).
    assert_eq!(linux.process.unwrap().process_count.unwrap().value, 1);
    let eth0 = linux.network.unwrap().default_interface.expect("eth0's counters");
    let eth0_rx = eth0.rx_bytes.unwrap().value;
    assert!(eth0_rx > 0);

    // The same readings as metrics, under cAdvisor's names and labels.
    let descriptors =
        n.rt.block_on(
            n.runtime
                .list_metric_descriptors(cri::ListMetricDescriptorsRequest {}),
        )
        .unwrap()
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_network_receive_bytes_total",
        "container_fs_usage_bytes",
        "container_processes",
    ] {
        let d = descriptors
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{name} described"));
        assert!(d.label_keys.iter().any(|k| k == "pod") && d.label_keys.iter().any(|k| k == "namespace"));
    }
    let metrics =
        n.rt.block_on(
            n.runtime
                .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}),
        )
        .unwrap()
        .into_inner()
        .pod_metrics;
    let pm = metrics
        .iter()
        .find(|m| m.pod_sandbox_id == pod)
        .expect("the pod's metrics");
    let cm = pm
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("the container's metrics");
    let value = |ms: &[cri::Metric], name: &str| -> (u64, Vec<String>) {
        let m = ms
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        (m.value.as_ref().unwrap().value, m.label_values.clone())
    };
    let (procs, labels) = value(&cm.metrics, "container_processes");
    assert_eq!(procs, 1);
    let keys = &descriptors
        .iter()
        .find(|d| d.name == "container_processes")
        .unwrap()
        .label_keys;
    let label = |k: &str| labels[keys.iter().position(|x| x == k).unwrap()].clone();
    assert_eq!(
        (label("container"), label("pod"), label("id")),
        (
            "busy".to_string(),
            pc.metadata.as_ref().unwrap().name.clone(),
            id.clone()
        )
    );
    let (ws, _) = value(&cm.metrics, "container_memory_working_set_bytes");
    assert!(
        file_working_set.abs_diff(ws) < 1 << 20,
        "metric {ws}, the cgroup's files say {file_working_set}"
    );
    let (cpu_seconds, _) = value(&cm.metrics, "container_cpu_usage_seconds_total");
    let cpu_ns = stats
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .as_ref()
        .unwrap()
        .value;
    assert!(
        cpu_seconds >= cpu_ns / 1_000_000_000,
        "{cpu_seconds} s against {cpu_ns} ns read before"
    );
    let rx: u64 = pm
        .metrics
        .iter()
        .filter(|m| {
            m.name == "container_network_receive_bytes_total"
                && m.label_values.last().map(String::as_str) == Some("eth0")
        })
        .map(|m| m.value.as_ref().unwrap().value)
        .sum();
    assert!(
        rx >= eth0_rx,
        "the pod's eth0 received {rx} (stats said {eth0_rx} before)"
    );

    // New limits reach the cgroup of the running container, and its status.
    n.rt.block_on(
        n.runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: 48 << 20,
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
    )
    .unwrap();
    let cg = format!("molde-cri-test/pod-stats/{id}");
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(&cg)
        .join("memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(&cg).join("memory.max")))
        .unwrap();
    assert_eq!(limit.trim(), (48u64 << 20).to_string());
    let s = n.status(&id);
    assert_eq!(
        s.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        48 << 20
    );
    n.stop_and_remove_pod(&pod);
}

#[test]
fn supplemental_groups_policy_merge_and_strict_and_the_groups_reported() {
    let mut n = Node::start();
    let features =
        n.rt.block_on(n.runtime.status(cri::StatusRequest { verbose: false }))
            .unwrap()
            .into_inner()
            .features
            .unwrap();
    assert!(features.supplemental_groups_policy);
    // An image whose /etc/group makes its user a member of group 50000.
    let mut rootfs = busybox_rootfs();
    rootfs.retain(|e| !matches!(e, Entry::File(p, _, _) if p == "etc/passwd" || p == "etc/group"));
    rootfs.push(Entry::File(
        "etc/passwd".into(),
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/:/bin/sh\n".to_vec(),
        0o644,
    ));
    rootfs.push(Entry::File(
        "etc/group".into(),
        b"root:x:0:\napp:x:1000:\nextra:x:50000:app\n".to_vec(),
        0o644,
    ));
    let work = n.daemon.dir.path().join("groups-image");
    let l = image::layout(&work, &[tar(&rootfs)], Compression::Gzip, host_arch());
    n.reg.push_layout(&l.dir, "cri/groups:1");
    let img = format!("{}/cri/groups:1", n.reg.host);
    n.pull(&img);
    let pc = n.pod_config("groups");
    let pod = n.run_pod(pc.clone());
    let mut run = |name: &str, policy: cri::SupplementalGroupsPolicy| {
        let mut c = n.container_config(name, &["sleep", "3600"]);
        c.image = Some(cri::ImageSpec {
            image: img.clone(),
            ..Default::default()
        });
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![60000],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = n.run(&pod, &pc, c);
        let ids = n.sh(&id, "id -G");
        let user = n.status(&id).user.unwrap().linux.unwrap();
        (
            ids.trim().to_string(),
            (user.uid, user.gid, user.supplemental_groups),
        )
    };
    let (merged, reported) = run("merge", cri::SupplementalGroupsPolicy::Merge);
    assert_eq!(merged, "1000 50000 60000", "the image's groups and the pod's");
    assert_eq!(reported, (1000, 1000, vec![1000, 50000, 60000]));
    let (strict, reported) = run("strict", cri::SupplementalGroupsPolicy::Strict);
    assert_eq!(strict, "1000 60000", "only the pod's groups");
    assert_eq!(reported, (1000, 1000, vec![1000, 60000]));
    n.stop_and_remove_pod(&pod);
}

#[test]
fn recursive_read_only_mounts_are_read_only_all_the_way_down() {
    let mut n = Node::start();
    // Announced for the default handler, as the kubelet looks for it.
    let status =
        n.rt.block_on(n.runtime.status(cri::StatusRequest { verbose: false }))
            .unwrap()
            .into_inner();
    let handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .expect("the default handler");
    assert!(handler.features.unwrap().recursive_read_only_mounts);
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("rro");
    let pod = n.run_pod(pc.clone());
    // A host directory with a mount inside it, as a kubelet volume may have.
    let src = n.daemon.dir.path().join("rro-src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let s = src.to_str().unwrap().to_string();
    let sub = src.join("sub");
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "rro-sub", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success());
    let mount = |rro: bool| cri::Mount {
        container_path: "/data".into(),
        host_path: s.clone(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let mut plain = n.container_config("plain", &["sleep", "3600"]);
    plain.mounts = vec![mount(false)];
    let plain = n.run(&pod, &pc, plain);
    let mut rro = n.container_config("rro", &["sleep", "3600"]);
    rro.mounts = vec![mount(true)];
    let rro = n.run(&pod, &pc, rro);
    // Plain read-only leaves the mount inside writable; rro does not.
    n.sh(&plain, "touch /data/sub/through-plain");
    let r = n.exec(&rro, &["touch", "/data/sub/through-rro"], 30).unwrap();
    assert_ne!(r.exit_code, 0, "rro lets nothing write below it");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(n.exec(&rro, &["touch", "/data/top"], 30).unwrap().exit_code != 0);
    // rro without readonly is refused, naming the mount.
    let mut bad = n.container_config("bad", &["true"]);
    bad.mounts = vec![cri::Mount {
        readonly: false,
        ..mount(true)
    }];
    let err = n.create(&pod, bad, &pc).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("/data") && err.message().contains("readonly"),
        "{}",
        err.message()
    );
    n.stop_and_remove_pod(&pod);
    let _ = std::process::Command::new("umount")
        .args(["-l", sub.to_str().unwrap()])
        .status();
}

#[test]
fn image_volumes_mount_an_images_rootfs_read_only_and_leave_nothing() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    // A data image of two layers: the second adds a file and removes one.
    let work = n.daemon.dir.path().join("data-image");
    let layers = [
        tar(&[
            Entry::Dir("content", 0o755),
            Entry::File("content/one".into(), b"first layer\n".to_vec(), 0o644),
            Entry::File("content/gone".into(), b"removed above\n".to_vec(), 0o644),
        ]),
        tar(&[
            Entry::Dir("content", 0o755),
            Entry::File("content/two".into(), b"second layer\n".to_vec(), 0o644),
            Entry::File("content/.wh.gone".into(), Vec::new(), 0o644),
        ]),
    ];
    let l = image::layout(&work, &layers, Compression::Gzip, host_arch());
    n.reg.push_layout(&l.dir, "cri/data:1");
    let data = format!("{}/cri/data:1", n.reg.host);
    n.pull(&data);
    let pc = n.pod_config("image-volume");
    let pod = n.run_pod(pc.clone());
    let volume = |path: &str, image: &str| cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut c = n.container_config("reader", &["sleep", "3600"]);
    c.mounts = vec![volume("/data", &data), volume("/tools", &n.busybox.clone())];
    let id = n.run(&pod, &pc, c);
    assert_eq!(
        n.sh(&id, "cat /data/content/one /data/content/two"),
        "first layer\nsecond layer\n"
    );
    assert_eq!(
        n.sh(&id, "test -e /data/content/gone && echo there || echo whited-out"),
        "whited-out\n",
        "the image's layers are seen as the image has them"
    );
    // A single-layer image too; both read-only.
    assert_eq!(n.sh(&id, "test -x /tools/bin/sh && echo yes"), "yes\n");
    for path in ["/data/new", "/tools/new"] {
        let r = n.exec(&id, &["touch", path], 30).unwrap();
        assert_ne!(r.exit_code, 0, "{path} is writable");
        assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only"));
    }
    let views = |n: &Node| {
        n.daemon
            .ctr(&["-n", "k8s.io", "snapshots", "ls"])
            .ok()
            .lines()
            .filter(|l| l.contains("-image-volume-"))
            .count()
    };
    assert_eq!(views(&n), 2, "one view per image volume");
    // An image that is not on the node: NotFound naming the mount, nothing left.
    let mut missing = n.container_config("missing", &["true"]);
    missing.mounts = vec![volume("/absent", &format!("{}/cri/absent:1", n.reg.host))];
    let err = n.create(&pod, missing, &pc).unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("/absent"), "{}", err.message());
    n.stop_and_remove_pod(&pod);
    assert_eq!(views(&n), 0, "removing the container removes its views");
}

#[test]
fn a_pod_in_its_own_user_namespace_owns_its_files_rightly_on_the_host() {
    use std::os::unix::fs::MetadataExt;
    let mut n = Node::start();
    let status =
        n.rt.block_on(n.runtime.status(cri::StatusRequest { verbose: false }))
            .unwrap()
            .into_inner();
    let handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .unwrap();
    assert!(
        handler.features.unwrap().user_namespaces,
        "announced for the default handler"
    );
    n.pull(&n.busybox.clone());
    // As the kubelet asks for `hostUsers: false`: mode POD, one range each.
    const HOST: u32 = 300_000;
    let range = vec![cri::IdMapping {
        container_id: 0,
        host_id: HOST,
        length: 65536,
    }];
    let userns = |mode: cri::NamespaceMode| cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: mode as i32,
            uids: range.clone(),
            gids: range.clone(),
        }),
        ..Default::default()
    };
    let mut pc = n.pod_config("userns");
    pc.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns(cri::NamespaceMode::Pod)),
        ..Default::default()
    });
    let pod = n.run_pod(pc.clone());
    // A volume the kubelet idmaps, with a file root owns on the host.
    let vol = n.daemon.dir.path().join("userns-volume");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("from-host"), "data\n").unwrap();
    let mut c = n.container_config("in-userns", &["sleep", "3600"]);
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(userns(cri::NamespaceMode::Pod)),
            ..Default::default()
        }),
        ..Default::default()
    });
    c.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        uid_mappings: range.clone(),
        gid_mappings: range.clone(),
        ..Default::default()
    }];
    let id = n.run(&pod, &pc, c);
    let map = n.sh(&id, "cat /proc/self/uid_map");
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &HOST.to_string(), "65536"],
        "{map}"
    );
    // The image's files are root's inside (idmapped layers), and root may
    // write the rootfs and the volume.
    assert_eq!(n.sh(&id, "stat -c %u:%g /bin/sh /etc/passwd"), "0:0\n0:0\n");
    assert_eq!(n.sh(&id, "stat -c %u /vol/from-host"), "0\n");
    n.sh(
        &id,
        "echo mine > /made-inside && echo mine > /vol/made-inside && mkdir /made-dir",
    );
    // On the host: what it wrote in its rootfs is the mapped root's, what it
    // wrote on the volume is owned as the pod saw it (root's), and the host's
    // root is nobody inside.
    let info =
        n.rt.block_on(n.runtime.container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        }))
        .unwrap()
        .into_inner()
        .info;
    let pid = serde_json::from_str::<serde_json::Value>(&info["info"]).unwrap()["pid"]
        .as_i64()
        .unwrap();
    let made = std::fs::metadata(format!("/proc/{pid}/root/made-inside")).unwrap();
    assert_eq!((made.uid(), made.gid()), (HOST, HOST));
    let dir = std::fs::metadata(format!("/proc/{pid}/root/made-dir")).unwrap();
    assert_eq!(dir.uid(), HOST);
    let on_volume = std::fs::metadata(vol.join("made-inside")).unwrap();
    assert_eq!((on_volume.uid(), on_volume.gid()), (0, 0));
    // Root inside is not root outside: the host's own files stay out of reach.
    let r = n
        .exec(&id, &["sh", "-c", "echo x > /proc/sys/kernel/hostname"], 30)
        .unwrap();
    assert_ne!(r.exit_code, 0, "the host's hostname is not the pod's to set");
    // Modes the kubelet never asks for are refused, naming the mode.
    let mut bad = n.pod_config("userns-bad");
    bad.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(userns(cri::NamespaceMode::Container)),
        ..Default::default()
    });
    let err =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("CONTAINER"), "{}", err.message());
    n.stop_and_remove_pod(&pod);
    let pods = n.daemon.state.join("cri-userns");
    assert_eq!(
        std::fs::read_dir(&pods).map(|d| d.count()).unwrap_or(0),
        0,
        "the pod's directory (pins, files, rootfs mount point) is gone"
    );
}

#[test]
fn a_host_to_container_mount_sees_what_the_host_mounts_later() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("propagation");
    let pod = n.run_pod(pc.clone());
    // A shared mount on the host, as the kubelet's volume directories are.
    let src = n.daemon.dir.path().join("shared-src");
    std::fs::create_dir_all(src.join("later")).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = src.to_str().unwrap();
    run(&["mount", "--bind", s, s]);
    run(&["mount", "--make-rshared", s]);
    let mut c = n.container_config("watcher", &["sleep", "3600"]);
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: s.into(),
        propagation: cri::MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    let id = n.run(&pod, &pc, c);
    let later = src.join("later");
    run(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=1m",
        "later",
        later.to_str().unwrap(),
    ]);
    std::fs::write(later.join("flag"), "from the host\n").unwrap();
    let seen = n.sh(&id, "cat /data/later/flag");
    run(&["umount", "-l", later.to_str().unwrap()]);
    run(&["umount", "-l", s]);
    assert_eq!(seen, "from the host\n");
    n.stop_and_remove_pod(&pod);
}

#[test]
fn container_events_follow_a_containers_life() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("events");
    let pod = n.run_pod(pc.clone());
    let mut events =
        n.rt.block_on(n.runtime.get_container_events(cri::GetEventsRequest {}))
            .unwrap()
            .into_inner();
    let id = n.run(&pod, &pc, n.container_config("watched", &["sleep", "3600"]));
    n.rt.block_on(n.runtime.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 1,
    }))
    .unwrap();
    n.rt.block_on(n.runtime.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    }))
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev =
            n.rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), events.message()).await })
                .expect("an event within 10s")
                .unwrap()
                .unwrap();
        assert_eq!(ev.container_id, id);
        assert!(ev.created_at > 0);
        seen.push(ev.container_event_type);
    }
    assert_eq!(
        seen,
        [
            cri::ContainerEventType::ContainerCreatedEvent as i32,
            cri::ContainerEventType::ContainerStartedEvent as i32,
            cri::ContainerEventType::ContainerStoppedEvent as i32,
            cri::ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
    n.stop_and_remove_pod(&pod);
}

#[path = "cri_streaming.rs"]
mod streaming;

/// The default seccomp profile, the device cgroup and supplementary groups
/// of CRI containers: what `molde run` gives (tests/security.rs), through
/// the security context the kubelet sends.
#[test]
fn runtime_default_seccomp_devices_and_groups_follow_docker_and_containerd() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("guarded");
    let pod = n.run_pod(pc.clone());
    let probe = molde_tests::probe();
    let runtime_default = || {
        Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        })
    };
    let mut c = n.container_config("probed", &["sleep", "3600"]);
    c.mounts = vec![cri::Mount {
        host_path: probe.display().to_string(),
        container_path: "/probe".into(),
        readonly: true,
        ..Default::default()
    }];
    c.devices = vec![cri::Device {
        host_path: "/dev/fuse".into(),
        container_path: "/dev/fuse".into(),
        permissions: "r".into(),
    }];
    c.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: runtime_default(),
            ..Default::default()
        }),
    });
    let id = n.run(&pod, &pc, c);
    let out = n.sh(
        &id,
        "/probe keyctl add_key unshare-user io_uring_setup sys1000 clone3 clone-newuser threads",
    );
    assert_eq!(
        out,
        "keyctl EPERM\nadd_key EPERM\nunshare-user EPERM\nio_uring_setup EPERM\nsys1000 EPERM\n\
         clone3 ENOSYS\nclone-newuser EPERM\nthreads ok\n"
    );
    let out = n.sh(
        &id,
        "mknod /tmp/kmsg c 1 11; echo line > /tmp/kmsg || echo kmsg-refused; \
         mknod /tmp/kvm c 10 232; cat /tmp/kvm || echo kvm-refused; \
         true < /dev/fuse && echo read-ok; true > /dev/fuse || echo write-refused",
    );
    for want in ["kmsg-refused", "kvm-refused", "read-ok", "write-refused"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let r = n.exec(&id, &["sh", "-c", "echo x > /tmp/kmsg"], 10).unwrap();
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{r:?}"
    );

    // A Localhost profile in Docker's format: everything allowed but mkdir,
    // and clone with CLONE_NEWUSER (a masked comparison, as runc reads it).
    let profile = n.daemon.dir.path().join("local-profile.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"},
            {"names":["clone"],"action":"SCMP_ACT_ERRNO",
             "args":[{"index":0,"value":268435456,"valueTwo":268435456,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
    )
    .unwrap();
    let mut local = n.container_config("local-profile", &["sleep", "3600"]);
    local.mounts = vec![cri::Mount {
        host_path: probe.display().to_string(),
        container_path: "/probe".into(),
        readonly: true,
        ..Default::default()
    }];
    local.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.display().to_string(),
            }),
            ..Default::default()
        }),
    });
    let local = n.run(&pod, &pc, local);
    assert_eq!(
        n.sh(&local, "/probe clone-newuser fork"),
        "clone-newuser EPERM\nfork ok\n"
    );
    let r = n.exec(&local, &["mkdir", "/tmp/d"], 10).unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Operation not permitted"),
        "{r:?}"
    );

    // A privileged container gets the host's devices.
    let mut p = n.container_config("privileged", &["sleep", "3600"]);
    p.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
    });
    let mut privileged_pod = n.pod_config("guarded-privileged");
    if let Some(l) = privileged_pod.linux.as_mut() {
        l.security_context = Some(cri::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        });
    }
    let ppod = n.run_pod(privileged_pod.clone());
    let pid = n.run(&ppod, &privileged_pod, p);
    let dev = n.sh(&pid, "ls /dev");
    assert!(dev.lines().any(|l| l == "kmsg"), "{dev}");

    // Groups: the process's own group is among its supplementary groups.
    let groups = |n: &mut Node, name: &str, user: Option<i64>, group: Option<i64>, extra: &[i64]| -> String {
        let mut c = n.container_config(
            name,
            &["sh", "-c", "grep ^Groups: /proc/self/status; exec sleep 3600"],
        );
        c.linux = Some(cri::LinuxContainerConfig {
            resources: None,
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: user.map(|value| cri::Int64Value { value }),
                run_as_group: group.map(|value| cri::Int64Value { value }),
                supplemental_groups: extra.to_vec(),
                ..Default::default()
            }),
        });
        n.run(&pod, &pc, c);
        let log = n.logs.join(format!("guarded/{name}/0.log"));
        molde_tests::eventually(10, "the container's groups in its log", || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Groups:"))
        });
        let text = std::fs::read_to_string(&log).unwrap();
        text.lines()
            .find_map(|l| l.split_once("Groups:").map(|(_, g)| g))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(groups(&mut n, "g1", Some(1000), Some(1000), &[]), "1000");
    assert_eq!(
        groups(&mut n, "g2", Some(1000), Some(1001), &[10, 1234]),
        "10 1001 1234"
    );
    assert_eq!(groups(&mut n, "g3", None, None, &[10]), "0 10");
    n.stop_and_remove_pod(&pod);
    n.stop_and_remove_pod(&ppod);
}

/// Labels and annotations are bounded per pod and container as the API
/// server bounds them, and a node full of large pods still lists; ExecSync's
/// output is cut to what fits the kubelet's message.
#[test]
fn large_metadata_is_refused_lists_fit_and_exec_sync_output_is_capped() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    // 300 KiB of annotations: refused, naming the pod.
    let mut pc = n.pod_config("oversized");
    pc.annotations = [("big".to_string(), "x".repeat(300 << 10))].into();
    let e =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("oversized"), "{e}");

    // 70 host-network pods of 250 KiB each: 17 MiB in all.
    let mut ids = Vec::new();
    for i in 0..70 {
        let mut pc = n.pod_config(&format!("large-{i}"));
        pc.annotations = [
            ("big".to_string(), "x".repeat(250 << 10)),
            ("small".to_string(), format!("{i}")),
        ]
        .into();
        if let Some(l) = pc.linux.as_mut() {
            l.security_context = Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        ids.push(n.run_pod(pc));
    }
    let items =
        n.rt.block_on(n.runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()))
            .expect("ListPodSandbox on a node of large pods")
            .into_inner()
            .items;
    assert_eq!(items.len(), 70);
    for p in &items {
        assert!(!p.annotations.contains_key("big"));
        assert_eq!(p.annotations["io.molde.cri.list-trimmed"], "true");
        assert!(p.annotations.contains_key("small"));
    }
    // Status answers in full.
    let status = n.pod_status(&ids[0]);
    assert_eq!(status.annotations["big"].len(), 250 << 10);
    let mut c = n.container_config("talker", &["sleep", "3600"]);
    c.annotations = [("big".to_string(), "x".repeat(300 << 10))].into();
    let e = n.create(&ids[0], c, &n.pod_config("large-0")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // 20 MB of output: ExecSync answers with what fits.
    let mut pc0 = n.pod_config("large-0");
    pc0.annotations = status.annotations.clone();
    let id = n.run(&ids[0], &pc0, n.container_config("talker", &["sleep", "3600"]));
    let r = n
        .exec(&id, &["sh", "-c", "head -c 20000000 /dev/zero; echo err >&2"], 30)
        .expect("ExecSync of 20 MB");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout.len() + r.stderr.len(), molde_cri_max_output());
    for id in ids {
        n.stop_and_remove_pod(&id);
    }
}

/// ExecSync's cap: 16 MiB less 4 KiB.
fn molde_cri_max_output() -> usize {
    (16 << 20) - (4 << 10)
}

/// A pod name that would inject CNI arguments is refused, and a mount's
/// propagation must be one its host mount can carry (as containerd says).
#[test]
fn cni_argument_injection_and_unshareable_bidirectional_mounts_are_refused() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let mut pc = n.pod_config("inj");
    pc.metadata.as_mut().unwrap().name = "inj;IP=10.77.222.222".into();
    let e =
        n.rt.block_on(n.runtime.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pc),
            runtime_handler: String::new(),
        }))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("inj;IP=10.77.222.222"), "{e}");

    let mut pc = n.pod_config("bidi");
    pc.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let pod = n.run_pod(pc.clone());
    // A private mount of its own, whatever the host's root is.
    let src = n.daemon.dir.path().join("private-src");
    std::fs::create_dir_all(&src).unwrap();
    let s = src.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["mount", "-t", "tmpfs", "tmpfs", &s]);
    run(&["mount", "--make-private", &s]);
    // Privileged, as the CSI drivers that ask for Bidirectional are: it mounts.
    let mut base = n.container_config("bidi", &["sleep", "3600"]);
    base.linux = Some(cri::LinuxContainerConfig {
        resources: None,
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
    });
    let config = |_: &str| {
        let mut c = base.clone();
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: s.clone(),
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        }];
        c
    };
    let e = n.create(&pod, config("bidi"), &pc).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(
        e.message().contains("Bidirectional") && e.message().contains(&s),
        "{e}"
    );
    // Made shared, the same request is honoured: a mount made in the
    // container shows on the host.
    run(&["mount", "--make-rshared", &s]);
    let id = n.run(&pod, &pc, config("bidi"));
    n.sh(
        &id,
        "mkdir -p /data/inner && mount -t tmpfs tmpfs /data/inner && touch /data/inner/from-container",
    );
    let seen = src.join("inner/from-container").exists();
    n.stop_and_remove_pod(&pod);
    let _ = std::process::Command::new("umount").args(["-R", &s]).status();
    assert!(seen, "the container's mount propagated to the host");
}

/// CreateContainer and RemovePodSandbox of one pod at once: whichever runs
/// first, no container is left in a pod that is gone.
#[test]
fn removing_a_pod_while_a_container_is_created_in_it_leaves_nothing() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    for i in 0..16 {
        let pc = n.pod_config(&format!("race-{i}"));
        let pod = n.run_pod(pc.clone());
        let (mut a, mut b) = (n.runtime.clone(), n.runtime.clone());
        let create = cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(n.container_config("c", &["sleep", "3600"])),
            sandbox_config: Some(pc.clone()),
        };
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        };
        let (created, removed) = n.rt.block_on(async {
            tokio::join!(a.create_container(create), async {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                b.remove_pod_sandbox(remove).await
            })
        });
        removed.expect("RemovePodSandbox");
        if let Err(e) = &created {
            assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
        }
        let left =
            n.rt.block_on(n.runtime.list_containers(cri::ListContainersRequest::default()))
                .unwrap()
                .into_inner()
                .containers;
        assert!(left.is_empty(), "try {i}: containers left: {left:?}");
        if let Ok(c) = created {
            let id = c.into_inner().container_id;
            assert!(shims_of(&id).is_empty(), "try {i}: a shim is left");
        }
    }
    let records = n.daemon.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]).ok();
    assert_eq!(records.trim(), "", "containers.v1 records left");
}

/// What a molded killed inside CreateContainer leaves — a container record
/// with its task and bundle, a writable snapshot — has no CRI record; the
/// next molded removes it before it serves the kubelet, and keeps what CRI
/// knows.
#[test]
fn a_restart_removes_what_a_crash_left_in_k8s_io_without_records() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("kept");
    let pod = n.run_pod(pc.clone());
    let kept = n.run(&pod, &pc, n.container_config("kept", &["sleep", "3600"]));
    // The parts CreateContainer makes before its record, made directly.
    let half = "ab".repeat(32);
    let bare = "cd".repeat(32);
    n.daemon
        .ctr(&[
            "-n",
            "k8s.io",
            "run",
            "-d",
            "--label",
            "io.cri-containerd.kind=container",
            &n.busybox.clone(),
            &half,
            "sleep",
            "3600",
        ])
        .ok();
    let parent = n
        .daemon
        .ctr(&["-n", "k8s.io", "snapshots", "ls"])
        .ok()
        .lines()
        .find(|l| l.contains("Committed"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a committed layer")
        .to_string();
    n.daemon
        .ctr(&["-n", "k8s.io", "snapshots", "prepare", &bare, &parent])
        .ok();
    assert!(!shims_of(&half).is_empty());

    n.daemon.kill9();
    n.daemon.restart();
    // The CRI socket serves once the leftovers are gone.
    assert_eq!(
        n.status(&kept).state,
        cri::ContainerState::ContainerRunning as i32
    );
    let records = n.daemon.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]).ok();
    assert_eq!(records.trim(), kept, "only the container CRI knows is left");
    let snapshots = n.daemon.ctr(&["-n", "k8s.io", "snapshots", "ls"]).ok();
    assert!(
        !snapshots.contains(&half) && !snapshots.contains(&bare),
        "{snapshots}"
    );
    assert!(snapshots.contains(&kept), "{snapshots}");
    molde_tests::eventually(10, "the leftover's shim to end", || shims_of(&half).is_empty());
    assert!(!mounted(&half));
    assert!(!n.daemon.state.join("runtime/k8s.io").join(&half).exists());
    assert!(n.daemon.log_text().contains("left by a crash"));
    n.stop_and_remove_pod(&pod);
}
