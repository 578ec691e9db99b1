//! One harness for molde's end-to-end tests: a real `molded` in a temp root,
//! the real `molde` and `ctr` binaries against its socket, and readable
//! failures that carry the daemon's log.

pub mod faults;
pub mod hosts;
pub mod image;
pub mod otlp;
pub mod registry;
pub mod spdy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use molde_api::client::Address;
use tonic::transport::Channel;

/// A binary built by this workspace (`cargo build --workspace` puts it beside the test's deps dir).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// The tests' crate directory (`tests/`), read when the test runs: one build
/// cache serves clones of the repository at other paths, so a path baked in
/// at compile time could name another clone.
pub fn tests_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// deploy/make-base-image.py, which builds the offline busybox base image.
pub fn base_image_script() -> PathBuf {
    tests_dir().join("../deploy/make-base-image.py")
}

/// The syscall probe (`tests/probes/syscalls.rs`) as a static binary, built
/// once per test process with rustc alone, to be bind-mounted into a
/// container whose rootfs has no libc.
pub fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("molde-probe-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("probe directory");
            let out = dir.join("probe");
            let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
            let built = Command::new(rustc)
                .args([
                    "--edition",
                    "2024",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                    "-o",
                ])
                .arg(&out)
                .arg(tests_dir().join("probes/syscalls.rs"))
                .output()
                .expect("rustc");
            assert!(
                built.status.success(),
                "building the probe: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            out
        })
        .clone()
}

/// Whether an external tool is installed; tests that need it fail loudly when it is not.
pub fn require(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .expect("sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !p.is_empty(),
        "{tool} is not installed: run deploy/install-deps.sh"
    );
    PathBuf::from(p)
}

/// A running molded with its own root, state and socket.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
    /// Runs molded in a mount namespace of its own where /sys/fs/cgroup is the
    /// cgroup v2 hierarchy alone: a pure v2 host's view on a hybrid one.
    cgroup_v2_view: bool,
    /// The network namespace (a `hosts::Host`) molded runs in, if not the machine's.
    netns: Option<String>,
}

impl Daemon {
    /// Starts molded with every service embedded.
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    /// Starts molded with extra arguments (e.g. `--service content`).
    pub fn start_with(extra: &[&str]) -> Daemon {
        let mut d = Self::prepare(extra);
        d.spawn();
        d
    }

    /// Starts molded with a config file (TOML) written into its temp dir.
    pub fn start_with_config(toml: &str) -> Daemon {
        let mut d = Self::prepare(&[]);
        let path = d.dir.path().join("config.toml");
        std::fs::write(&path, toml).expect("write config");
        d.extra = vec!["--config".into(), path.display().to_string()];
        d.spawn();
        d
    }

    /// A daemon set up (temp dir, socket path) but not started: see `spawn`.
    pub fn prepare(extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("molde-test-")
            .tempdir()
            .expect("temp dir");
        Daemon {
            sock: dir.path().join("molde.sock"),
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            log: dir.path().join("molded.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            starts: 0,
            cgroup_v2_view: false,
            netns: None,
        }
    }

    /// Adds arguments before the daemon is spawned.
    pub fn args(&mut self, extra: &[String]) {
        self.extra.extend(extra.iter().cloned());
    }

    /// Runs molded (once spawned) on `host` of a `hosts::Lan`: its network
    /// is that host's; its files and its socket stay on the machine.
    pub fn on_host(&mut self, host: &hosts::Host) {
        self.netns = Some(host.netns.clone());
    }

    /// Starts molded seeing only the cgroup v2 hierarchy at /sys/fs/cgroup,
    /// as on a pure v2 host; its shims and containers share that view.
    pub fn start_with_cgroup_v2_view() -> Daemon {
        let mut d = Self::prepare(&[]);
        d.cgroup_v2_view = true;
        d.spawn();
        d
    }

    /// Builds the offline busybox base image (deploy/make-base-image.py) and
    /// loads it as `localhost/molde/busybox:latest`.
    pub fn load_busybox(&self) {
        let tar = self.dir.path().join("busybox.tar");
        let script = base_image_script();
        let out = Command::new("python3")
            .arg(script)
            .arg(&tar)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        self.molde(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    }

    /// The molded command line this daemon runs with.
    pub fn command(&self) -> Command {
        let mut c = if let Some(ns) = &self.netns {
            let mut c = Command::new(require("nsenter"));
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(bin("molded"));
            c
        } else if self.cgroup_v2_view {
            let mut c = Command::new(require("unshare"));
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("umount -l /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$@\"")
                .arg("sh")
                .arg(bin("molded"));
            c
        } else {
            Command::new(bin("molded"))
        };
        c.arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.sock)
            .args(&self.extra)
            .env("RUST_LOG", "info,molde_content=debug,molde_runtime::dns=debug");
        c
    }

    /// Starts a prepared daemon and waits until it serves.
    pub fn spawn(&mut self) {
        let child = self.launch();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Starts molded (one more start, its output appended to the log).
    fn launch(&mut self) -> Child {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        use std::os::unix::process::CommandExt;
        self.command()
            // Its own process group: nothing molded signals reaches the test runner.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn molded")
    }

    /// Starts molded and expects it to fail before it serves: its log.
    pub fn spawn_failing(&mut self) -> String {
        let mut child = self.launch();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().ok().flatten() {
                assert!(!status.success(), "molded exited 0\n{}", self.log_text());
                return self.log_text();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("molded did not fail within 30s\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Every listener (the CRI socket's too) is bound once molded
            // says it serves; a socket file a killed molded left refuses
            // connections until then.
            if std::os::unix::net::UnixStream::connect(&self.sock).is_ok()
                && self.log_text().matches("molded serving").count() >= self.starts as usize
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("molded exited with {status} before serving\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "molded did not serve within 20s\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills molded with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = c.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("molded did not stop within 15s of SIGTERM\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts molded again on the same root and socket.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn address(&self) -> Address {
        Address::Unix(self.sock.clone())
    }

    /// A gRPC channel to this daemon.
    pub async fn channel(&self) -> Channel {
        molde_api::client::connect(&self.address())
            .await
            .expect("connect to molded")
    }

    /// Runs the `molde` CLI against this daemon.
    pub fn molde(&self, args: &[&str]) -> Run {
        self.molde_stdin(args, &[])
    }

    /// The one object `molde inspect NAME` prints (inspect prints a JSON array).
    #[track_caller]
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.molde(&["inspect", name]).ok();
        let mut v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect {name}: {e}: {out}"));
        assert_eq!(
            v.as_array().map(Vec::len),
            Some(1),
            "inspect {name} prints one object: {out}"
        );
        v[0].take()
    }

    /// What `molde run --rm --network none IMAGE [CMD…]` prints (it must succeed).
    #[track_caller]
    pub fn run_image(&self, image: &str, cmd: &[&str]) -> String {
        let mut args = vec!["run", "--rm", "--network", "none", image];
        args.extend_from_slice(cmd);
        self.molde(&args).ok()
    }

    /// Runs the `molde` CLI against this daemon with `env` set.
    pub fn molde_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let mut c = Command::new(bin("molde"));
        c.env("MOLDE_ADDRESS", &self.sock)
            .envs(env.iter().copied())
            .args(args);
        Run::exec(c, &[], self)
    }

    pub fn molde_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut c = Command::new(bin("molde"));
        c.env("MOLDE_ADDRESS", &self.sock).args(args);
        Run::exec(c, stdin, self)
    }

    /// Runs containerd's `ctr` against this daemon.
    pub fn ctr(&self, args: &[&str]) -> Run {
        self.ctr_stdin(args, &[])
    }

    pub fn ctr_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut c = Command::new(require("ctr"));
        c.arg("--address").arg(&self.sock).args(args);
        Run::exec(c, stdin, self)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Containers outlive molded by design: remove what the test left.
        if self.child.is_some() {
            let ids = self.molde(&["ps", "-a", "-q"]).stdout();
            for id in ids.lines().filter(|l| !l.is_empty()) {
                let _ = self.molde(&["rm", "-f", id]);
            }
            // User networks are host bridges: they go with the test too.
            let _ = self.molde(&["network", "prune", "-f"]);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- molded log ({} start(s)) ----\n{}",
                self.starts,
                self.log_text()
            );
        }
    }
}

/// A finished command with assertions that print everything on failure.
pub struct Run {
    pub cmdline: String,
    pub out: Output,
    daemon_log: String,
}

impl Run {
    fn exec(mut c: Command, stdin: &[u8], d: &Daemon) -> Run {
        let cmdline = format!("{c:?}");
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        {
            use std::io::Write;
            let mut si = child.stdin.take().unwrap();
            let data = stdin.to_vec();
            std::thread::spawn(move || {
                let _ = si.write_all(&data);
            });
        }
        let out = child.wait_with_output().expect("wait");
        Run {
            cmdline,
            out,
            daemon_log: d.log_text(),
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}\n---- molded log ----\n{}",
            self.cmdline,
            self.out.status,
            self.stdout(),
            self.stderr(),
            self.daemon_log
        )
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> String {
        assert!(self.out.status.success(), "command failed\n{}", self.describe());
        self.stdout()
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn fails(&self) -> String {
        assert!(
            !self.out.status.success(),
            "command should have failed\n{}",
            self.describe()
        );
        self.stderr()
    }
}

/// sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Attaches the namespace (and optional lease) headers to a request.
pub fn req<T>(ns: &str, lease: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(molde_api::NAMESPACE_HEADER, ns.parse().expect("namespace header"));
    if let Some(l) = lease {
        r.metadata_mut()
            .insert(molde_api::LEASE_HEADER, l.parse().expect("lease header"));
    }
    r
}

/// `GET http://addr/path` (loopback, or a host of the test's own LAN); the response.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name{...label="value"...}` in a scrape.
pub fn sample(scrape: &str, name: &str, label: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits until `f` holds, or panics with `what` after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Driving containerd's content Write stream message by message.
pub mod write {
    use molde_api::containerd::services::content::v1::{
        WriteAction, WriteContentRequest, WriteContentResponse, content_client::ContentClient,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::Channel;
    use tonic::{Status, Streaming};

    /// An open Write stream holding the ref's writer lock until dropped.
    pub struct Session {
        tx: mpsc::Sender<WriteContentRequest>,
        rx: Streaming<WriteContentResponse>,
    }

    impl Session {
        /// Opens the stream with a STAT and returns the session and the STAT reply.
        pub async fn open(
            ch: &Channel,
            ns: &str,
            lease: Option<&str>,
            reference: &str,
            total: i64,
            expected: &str,
        ) -> Result<(Session, WriteContentResponse), Status> {
            let (tx, rx) = mpsc::channel(16);
            tx.send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: reference.into(),
                total,
                expected: expected.into(),
                ..Default::default()
            })
            .await
            .unwrap();
            let mut c = ContentClient::new(ch.clone()).max_encoding_message_size(64 << 20);
            let mut rx = c
                .write(crate::req(ns, lease, ReceiverStream::new(rx)))
                .await?
                .into_inner();
            let stat = rx.message().await?.expect("STAT reply");
            Ok((Session { tx, rx }, stat))
        }

        /// Sends one message and waits for its reply.
        pub async fn send(&mut self, m: WriteContentRequest) -> Result<WriteContentResponse, Status> {
            self.tx
                .send(m)
                .await
                .map_err(|_| Status::cancelled("stream closed"))?;
            self.rx
                .message()
                .await?
                .ok_or_else(|| Status::cancelled("stream ended"))
        }

        pub async fn write(&mut self, offset: i64, data: &[u8]) -> Result<WriteContentResponse, Status> {
            self.send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset,
                data: bytes::Bytes::copy_from_slice(data),
                ..Default::default()
            })
            .await
        }

        pub async fn commit(
            &mut self,
            offset: i64,
            total: i64,
            expected: &str,
        ) -> Result<WriteContentResponse, Status> {
            self.send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset,
                total,
                expected: expected.into(),
                ..Default::default()
            })
            .await
        }
    }

    /// Writes and commits `data` under `reference` in one stream.
    pub async fn put(
        ch: &Channel,
        ns: &str,
        lease: Option<&str>,
        reference: &str,
        data: &[u8],
    ) -> Result<String, Status> {
        let digest = crate::sha256(data);
        let (mut s, _) = Session::open(ch, ns, lease, reference, data.len() as i64, &digest).await?;
        s.write(0, data).await?;
        let done = s.commit(data.len() as i64, data.len() as i64, &digest).await?;
        Ok(done.digest)
    }
}

/// Every file under `dir`, recursively (for checks that nothing partial is visible).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
