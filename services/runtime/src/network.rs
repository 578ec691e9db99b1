//! Container networking through the standard CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni): no home-made networking.
//!
//! `bridge` mode: a network namespace is created and pinned at
//! `/run/molde/netns/<ns>-<id>`; the `molde` network list runs on it — `bridge`
//! (bridge `molde0`, host-local IPAM, masquerade), `portmap` (`-p` publishing,
//! localhost included), then `loopback` for `lo`. The result is kept in the
//! bundle as `network.json`, and teardown (CNI DEL in reverse, unpin) runs
//! when the container is removed — also after a crash, from that file.

use molde_common::errdefs::Error;
use molde_common::errdefs::OrLog;
use std::path::{Path, PathBuf};

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const CNI_VERSION: &str = "1.0.0";
const NETWORK: &str = "molde";

/// A published port: `HOST:CONTAINER[/tcp|udp]`, or `IP:HOST:CONTAINER[/proto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

pub fn parse_port(p: &str) -> Result<PortMapping, Error> {
    let bad = || Error::InvalidArgument(format!("port {p:?}: expected [IP:]HOST:CONTAINER[/tcp|udp]"));
    let (spec, protocol) = match p.rsplit_once('/') {
        Some((s, proto @ ("tcp" | "udp"))) => (s, proto.to_string()),
        Some(_) => return Err(bad()),
        None => (p, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    Ok(PortMapping {
        host_ip: ip.to_string(),
        host_port: host.parse().map_err(|_| bad())?,
        container_port: cont.parse().map_err(|_| bad())?,
        protocol,
    })
}

pub struct Cni {
    /// Where the plugin binaries are.
    pub bin_dir: PathBuf,
    /// Network namespaces are pinned here (`/run/molde/netns`).
    pub netns_dir: PathBuf,
}

/// The network's plugins. Addresses are kept by host-local in its host-wide
/// default place (/var/lib/cni/networks/molde): the bridge is host-wide too,
/// so every molded on the host must draw from one pool.
fn plugins() -> Vec<Value> {
    vec![
        json!({
            "type": "bridge",
            "bridge": "molde0",
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.89.0.0/16"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }),
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
    ]
}

fn err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

impl Cni {
    pub fn netns_path(&self, key: &str) -> PathBuf {
        self.netns_dir.join(key)
    }

    /// Creates a network namespace and pins it at `netns_path(key)`.
    fn create_netns(&self, key: &str) -> Result<PathBuf, Error> {
        let path = self.netns_path(key);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .map_err(err("creating the netns dir"))?;
        std::fs::File::create(&path).map_err(err("creating the netns pin"))?;
        let target = path.clone();
        // unshare(CLONE_NEWNET) moves only the calling thread: do it on a
        // thread of its own, pin the new namespace, and let the thread end.
        std::thread::spawn(move || -> std::io::Result<()> {
            // SAFETY: only the network namespace of this short-lived thread
            // changes; it shares no file descriptor table or filesystem state
            // differently afterwards, and it touches no other thread's data.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET)? };
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            Ok(())
        })
        .join()
        .map_err(|_| Error::Internal("creating the network namespace panicked".into()))?
        .map_err(|e| {
            let _ = std::fs::remove_file(&path);
            Error::Internal(format!("creating the network namespace: {e}"))
        })?;
        Ok(path)
    }

    fn remove_netns(&self, key: &str) {
        let path = self.netns_path(key);
        rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH)
            .or_log("unmounting a network namespace");
        let _ = std::fs::remove_file(&path);
    }

    async fn invoke(&self, command: &str, key: &str, netns: &Path, conf: &Value) -> Result<Value, Error> {
        let kind = conf["type"].as_str().unwrap_or_default().to_string();
        let bin = self.bin_dir.join(&kind);
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", key)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", if kind == "loopback" { "lo" } else { "eth0" })
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "CNI plugin {}: {e} (install containernetworking-plugins)",
                    bin.display()
                ))
            })?;
        let input = serde_json::to_vec(conf).expect("json");
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&input)
            .await
            .map_err(err("writing to a CNI plugin"))?;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(err("running a CNI plugin"))?;
        if !out.status.success() {
            let msg: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            return Err(Error::Internal(format!(
                "CNI {command} with {kind}: {} {}",
                msg["msg"].as_str().unwrap_or_default(),
                msg["details"]
                    .as_str()
                    .unwrap_or(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// Creates the namespace and attaches it; returns (netns path, CNI result).
    pub async fn setup(&self, key: &str, ports: &[PortMapping]) -> Result<(PathBuf, Value), Error> {
        let netns = self.create_netns(key)?;
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol});
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        let mut prev = Value::Null;
        let mut list = plugins();
        list.push(json!({"type": "loopback"}));
        for mut conf in list.clone() {
            conf["cniVersion"] = json!(CNI_VERSION);
            conf["name"] = json!(NETWORK);
            if conf["type"] == "portmap" {
                if mappings.is_empty() {
                    continue;
                }
                conf["runtimeConfig"] = json!({"portMappings": mappings});
            }
            if conf["type"] == "loopback" {
                self.invoke("ADD", key, &netns, &conf).await.inspect_err(|_| {})?;
                continue;
            }
            if !prev.is_null() {
                conf["prevResult"] = prev.clone();
            }
            match self.invoke("ADD", key, &netns, &conf).await {
                Ok(r) => prev = r,
                Err(e) => {
                    self.teardown(key, &json!({"result": prev, "ports": mappings}))
                        .await;
                    return Err(e);
                }
            }
        }
        Ok((netns, json!({"result": prev, "ports": mappings})))
    }

    /// CNI DEL in reverse order, then the namespace goes. Errors are logged:
    /// teardown must finish whatever state a crash left.
    pub async fn teardown(&self, key: &str, saved: &Value) {
        let netns = self.netns_path(key);
        let mut list = plugins();
        list.reverse();
        for mut conf in list {
            conf["cniVersion"] = json!(CNI_VERSION);
            conf["name"] = json!(NETWORK);
            if conf["type"] == "portmap" {
                if saved["ports"].as_array().is_none_or(|a| a.is_empty()) {
                    continue;
                }
                conf["runtimeConfig"] = json!({"portMappings": saved["ports"]});
            }
            if !saved["result"].is_null() {
                conf["prevResult"] = saved["result"].clone();
            }
            if let Err(e) = self.invoke("DEL", key, &netns, &conf).await {
                tracing::warn!(container = key, error = %e.message(), "CNI DEL");
            }
        }
        self.remove_netns(key);
    }
}

/// The container's address on the bridge, from a CNI result.
pub fn address(saved: &Value) -> Option<String> {
    saved["result"]["ips"][0]["address"]
        .as_str()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            parse_port("8080:80").unwrap(),
            PortMapping {
                host_ip: String::new(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into()
            }
        );
        assert_eq!(parse_port("127.0.0.1:53:53/udp").unwrap().protocol, "udp");
        for bad in ["80", "a:b", "1:2/sctp", "70000:80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
