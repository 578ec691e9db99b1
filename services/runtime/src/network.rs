//! Container networking through the standard CNI plugins (Debian's
//! containernetworking-plugins in /usr/lib/cni): no home-made networking.
//!
//! `bridge` mode: a network namespace is created and pinned at
//! `/run/molde/netns/<ns>-<id>`; the `molde` network list runs on it — `bridge`
//! (bridge `molde0`, host-local IPAM, masquerade), `portmap` (`-p` publishing,
//! localhost included), then `loopback` for `lo`. The result is kept in the
//! bundle as `network.json`, and teardown (CNI DEL in reverse, unpin) runs
//! when the container is removed — also after a crash, from that file.

use std::path::PathBuf;

use molde_bundle::NetworkRecord;
pub use molde_bundle::PortMapping;
use molde_common::cni::{Attachment, NetworkList, Pinned, loopback, unpin};
use molde_common::errdefs::Error;
use serde_json::json;

const CNI_VERSION: &str = "1.0.0";
const NETWORK: &str = "molde";

/// A published port: `HOST:CONTAINER[/tcp|udp]`, or `IP:HOST:CONTAINER[/proto]`.
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
    /// The user networks.
    pub networks: crate::networks::Networks,
}

/// The network's plugins; portmap only when ports are published (it costs
/// iptables work on ADD and DEL). Addresses are kept by host-local in its
/// host-wide default place (/var/lib/cni/networks/molde): the bridge is
/// host-wide too, so every molded on the host must draw from one pool.
fn network(ports: &[PortMapping]) -> NetworkList {
    let mut plugins = vec![json!({
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
    })];
    if !ports.is_empty() {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    NetworkList {
        name: NETWORK.into(),
        cni_version: CNI_VERSION.into(),
        plugins,
    }
}

impl Cni {
    pub fn netns_path(&self, key: &str) -> PathBuf {
        self.netns_dir.join(key)
    }

    fn plugins(&self) -> molde_common::cni::Cni {
        molde_common::cni::Cni {
            bin_dirs: vec![self.bin_dir.clone()],
            idle: false,
        }
    }

    fn attachment(&self, key: &str, ifname: &str, ports: &[PortMapping]) -> Attachment {
        let mut a = Attachment {
            container_id: key.to_string(),
            netns: self.netns_path(key),
            ifname: ifname.into(),
            ..Default::default()
        };
        if !ports.is_empty() {
            a.capabilities.insert(
                "portMappings".into(),
                serde_json::to_value(ports).unwrap_or_default(),
            );
        }
        a
    }

    /// The network list of the default bridge (`user` empty) or a user network.
    fn list(&self, user: &str, ports: &[PortMapping]) -> Result<NetworkList, Error> {
        if user.is_empty() {
            return Ok(network(ports));
        }
        Ok(self.networks.find(user)?.conflist(!ports.is_empty()))
    }

    /// The default bridge (`user` empty) or a user network, for the
    /// in-process path.
    fn bridge_net(&self, user: &str) -> Result<crate::bridge::BridgeNet, Error> {
        if user.is_empty() {
            return Ok(crate::bridge::BridgeNet {
                bridge: crate::networks::DEFAULT_BRIDGE.into(),
                subnet: std::net::Ipv4Addr::new(10, 89, 0, 0),
                prefix: 16,
                gateway: std::net::Ipv4Addr::new(10, 89, 0, 1),
                outside: true,
                ipam: NETWORK.into(),
            });
        }
        let n = self.networks.find(user)?;
        let bad = || {
            Error::Internal(format!(
                "network {}: its subnet {:?} cannot be read",
                n.name, n.subnet
            ))
        };
        let (subnet, prefix) = n.subnet.split_once('/').ok_or_else(bad)?;
        Ok(crate::bridge::BridgeNet {
            bridge: n.bridge.clone(),
            subnet: subnet.parse().map_err(|_| bad())?,
            prefix: prefix.parse().map_err(|_| bad())?,
            gateway: n.gateway.parse().map_err(|_| bad())?,
            outside: !n.internal,
            ipam: n.conflist(false).name,
        })
    }

    /// Creates the namespace and attaches it to the default bridge or the
    /// user network `user` (with `ip` when asked); returns the netns path
    /// and the record teardown needs (`network.json`). Without published
    /// ports molded attaches it itself (`bridge`); with them, through the
    /// CNI plugins, portmap included.
    pub async fn setup(
        &self,
        key: &str,
        ports: &[PortMapping],
        user: &str,
        ip: &str,
    ) -> Result<(PathBuf, NetworkRecord), Error> {
        if ports.is_empty() {
            let net = self.bridge_net(user)?;
            let want = if ip.is_empty() {
                None
            } else {
                Some(
                    ip.parse()
                        .map_err(|_| Error::InvalidArgument(format!("--ip {ip:?}: not an IPv4 address")))?,
                )
            };
            let netns = self.netns_path(key);
            molde_common::cni::pin_namespaces(&[Pinned::Net], None, &[], |_| netns.clone())?;
            let result = match crate::bridge::attach(&net, key, &netns, want).await {
                Ok(r) => r,
                Err(e) => {
                    unpin(&[netns]);
                    return Err(e);
                }
            };
            let record = NetworkRecord {
                key: key.to_string(),
                ports: Vec::new(),
                result: molde_bundle::CniResult::from_value(result),
                network: user.to_string(),
                names: Vec::new(),
                upstream: Vec::new(),
                connected: Vec::new(),
                native: true,
            };
            return Ok((netns, record));
        }
        let list = self.list(user, ports)?;
        let netns = self.netns_path(key);
        molde_common::cni::pin_namespaces(&[Pinned::Net], None, &[], |_| netns.clone())?;
        let cni = self.plugins();
        let mut attachment = self.attachment(key, "eth0", ports);
        if !ip.is_empty() {
            // host-local takes a requested address through CNI_ARGS.
            attachment
                .args
                .push(("IgnoreUnknown".to_string(), "1".to_string()));
            attachment.args.push(("IP".to_string(), ip.to_string()));
        }
        let result = match cni.add(&list, &attachment).await {
            Ok(r) => r,
            Err(e) => {
                unpin(&[netns]);
                return Err(e);
            }
        };
        let record = NetworkRecord {
            key: key.to_string(),
            ports: ports.to_vec(),
            result,
            network: user.to_string(),
            names: Vec::new(),
            upstream: Vec::new(),
            connected: Vec::new(),
            native: false,
        };
        let lo = self.attachment(key, "lo", &[]);
        if let Err(e) = cni.add(&loopback(), &lo).await {
            self.teardown(&record).await;
            return Err(e);
        }
        Ok((netns, record))
    }

    /// Attaches the pinned namespace `key` to user network `network` on
    /// interface `ifname` (with `ip` when asked).
    pub async fn connect(
        &self,
        key: &str,
        network: &str,
        ifname: &str,
        ip: &str,
    ) -> Result<molde_bundle::CniResult, Error> {
        let list = self.list(network, &[])?;
        let mut a = self.attachment(key, ifname, &[]);
        if !ip.is_empty() {
            a.args.push(("IgnoreUnknown".to_string(), "1".to_string()));
            a.args.push(("IP".to_string(), ip.to_string()));
        }
        self.plugins().add(&list, &a).await
    }

    /// Detaches what `connect` attached. Errors are logged, as in teardown.
    pub async fn disconnect(&self, key: &str, c: &molde_bundle::Connected) {
        let a = self.attachment(key, &c.ifname, &[]);
        match self.list(&c.network, &[]) {
            Ok(list) => self.plugins().del(&list, &a, &c.result).await,
            Err(e) => {
                tracing::warn!(network = %c.network, error = %e, "a network attachment could not be torn down")
            }
        }
    }

    /// CNI DEL in reverse order, then the namespace goes. Errors are logged:
    /// teardown must finish whatever state a crash left.
    pub async fn teardown(&self, saved: &NetworkRecord) {
        for c in saved.connected.iter().rev() {
            self.disconnect(&saved.key, c).await;
        }
        if saved.native {
            match self.bridge_net(&saved.network) {
                Ok(net) => crate::bridge::detach(&net, &saved.key, &saved.result.to_value()).await,
                Err(e) => {
                    tracing::warn!(network = %saved.network, error = %e, "a network attachment could not be torn down")
                }
            }
            unpin(&[self.netns_path(&saved.key)]);
            return;
        }
        let a = self.attachment(&saved.key, "eth0", &saved.ports);
        match self.list(&saved.network, &saved.ports) {
            Ok(list) => self.plugins().del(&list, &a, &saved.result).await,
            Err(e) => {
                tracing::warn!(network = %saved.network, error = %e, "a network attachment could not be torn down")
            }
        }
        unpin(&[self.netns_path(&saved.key)]);
    }
}

/// The container's address on the bridge.
pub fn address(saved: &NetworkRecord) -> Option<String> {
    saved.result.first_ip()
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
