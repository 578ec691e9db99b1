//! A real registry (Debian's `docker-registry`, CNCF Distribution) on a free
//! loopback port, and skopeo to fill it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require;

pub struct Registry {
    pub dir: tempfile::TempDir,
    /// host:port, e.g. 127.0.0.1:40123
    pub host: String,
    child: Child,
    /// Basic-auth credentials, when the registry requires them.
    pub auth: Option<(String, String)>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port outside the kernel's ephemeral range (below 32768), for a
/// port a test hands to something else to bind later — a pod's hostPort, a
/// server in a container: a port from `free_port` is one that any socket
/// bound to port 0 (another test's molded, say) may be given meanwhile, and
/// a hostPort's DNAT would then take that socket's connections.
pub fn free_port_outside_ephemeral() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 6000) as u16;
    for _ in 0..12000 {
        let port = 20000 + (base - 20000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12000;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

impl Registry {
    pub fn start() -> Registry {
        Self::spawn(None)
    }

    /// A registry that requires HTTP basic auth (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::spawn(Some((user.to_string(), password.to_string())))
    }

    fn spawn(auth: Option<(String, String)>) -> Registry {
        let bin = require("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("molde-registry-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = &auth {
            let hash = bcrypt::hash(p, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{u}:{hash}\n")).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: molde-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "registry did not listen on {host}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Registry {
            dir,
            host,
            child,
            auth,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Copies an OCI layout into the registry as `repo:tag` with skopeo.
    pub fn push_layout(&self, layout: &Path, repo_tag: &str) {
        let mut c = Command::new(require("skopeo"));
        c.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.auth {
            c.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = c
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {}/{repo_tag} failed: {}\n{}",
            self.host,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `skopeo inspect --raw` of a reference in this registry.
    pub fn skopeo(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(require("skopeo"));
        c.args(args);
        c.output().unwrap()
    }

    /// Stops the registry (it cannot be reached afterwards).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
