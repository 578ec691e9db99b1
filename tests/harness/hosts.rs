//! Several "hosts" on one machine: network namespaces joined by veth pairs to
//! a bridge of the test's own, on a /24 the test picks (10.231.K.0/24). The
//! machine itself is the bridge's gateway (.1), so what runs on it (a
//! registry, say) is "the host side"; each host is .2, .3, … Nothing is
//! routed anywhere else.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::require;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new(require("ip")).args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_quiet(args: &[&str]) {
    let _ = Command::new(require("ip")).args(args).output();
}

/// A bridge on the machine and the namespaces plugged into it.
pub struct Lan {
    k: u32,
    bridge: String,
    hosts: Vec<String>,
}

/// One namespace on a `Lan`: its name, its address and the machine's end of
/// its veth pair (which `cut` and `heal` take down and up).
#[derive(Clone)]
pub struct Host {
    pub netns: String,
    pub ip: String,
    outer: String,
    inner: String,
}

impl Lan {
    pub fn new() -> Lan {
        let k = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let bridge = format!("mlan{k}");
        // What a killed earlier run may have left under these names.
        ip_quiet(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("10.231.{k}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        Lan {
            k,
            bridge,
            hosts: Vec::new(),
        }
    }

    /// The machine's address on this LAN.
    pub fn gateway(&self) -> String {
        format!("10.231.{}.1", self.k)
    }

    /// A new namespace plugged into the bridge, lo and its veth up.
    pub fn host(&mut self, name: &str) -> Host {
        let i = self.hosts.len() + 2;
        let netns = format!("mlan{}-{name}", self.k);
        let (outer, inner) = (format!("ml{}h{i}", self.k), format!("ml{}n{i}", self.k));
        ip_quiet(&["netns", "del", &netns]);
        ip_quiet(&["link", "del", &outer]);
        ip(&["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &netns]);
        ip(&["link", "set", &outer, "master", &self.bridge]);
        ip(&["link", "set", &outer, "up"]);
        let host = Host {
            ip: format!("10.231.{}.{i}", self.k),
            netns,
            outer,
            inner,
        };
        host.ip_in(&["link", "set", "lo", "up"]);
        host.ip_in(&["addr", "add", &format!("{}/24", host.ip), "dev", &host.inner]);
        host.ip_in(&["link", "set", &host.inner, "up"]);
        host.ip_in(&["route", "add", "default", "via", &self.gateway()]);
        host
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.hosts {
            ip_quiet(&["netns", "del", ns]);
        }
        ip_quiet(&["link", "del", &self.bridge]);
    }
}

impl Host {
    /// `program` run inside this host's network namespace (and nothing else
    /// of it: the mount namespace stays the machine's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(require("nsenter"));
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        c
    }

    fn ip_in(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.netns, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Takes the host off the LAN (a partition), as if its cable were pulled.
    pub fn cut(&self) {
        ip(&["link", "set", &self.outer, "down"]);
    }

    /// Plugs it back in.
    pub fn heal(&self) {
        ip(&["link", "set", &self.outer, "up"]);
    }

    /// Limits what the host sends to `mbit` megabits a second.
    pub fn throttle(&self, mbit: u32) {
        let out = Command::new(require("ip"))
            .args([
                "netns",
                "exec",
                &self.netns,
                "tc",
                "qdisc",
                "replace",
                "dev",
                &self.inner,
            ])
            .args([
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                "64kb",
                "latency",
                "500ms",
            ])
            .output()
            .expect("tc");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
