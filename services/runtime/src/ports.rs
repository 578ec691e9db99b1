//! Host ports a container publishes are held by molded while the container
//! has them, so that none is taken silently.
//!
//! `-p` becomes DNAT rules (CNI's portmap), which would take the connections
//! of any host service on the same port, and of another container's. Before
//! the rules go in, molded binds each host port (as docker-proxy holds its
//! ports) and keeps the socket until the container's network is released: a
//! port a host process or another container has fails the run with an error
//! that names the port and its holder, and nothing on the host can bind it
//! afterwards. The socket never listens, so nothing queues on it.
//! A restarted molded takes the ports of the containers it finds again.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;

use molde_common::errdefs::Error;

use crate::network::PortMapping;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    protocol: String,
    ip: IpAddr,
    port: u16,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.ip, self.port), self.protocol)
    }
}

/// A bound, never listening socket that holds a port.
enum Held {
    Tcp(#[allow(dead_code)] std::net::TcpStream),
    Udp(#[allow(dead_code)] UdpSocket),
}

#[derive(Default)]
pub struct HostPorts {
    held: Mutex<HashMap<Key, (String, Held)>>,
}

impl HostPorts {
    /// Holds every port of `ports` for `owner` (`ns/id`), or none: the first
    /// port that is taken fails the whole reservation.
    pub fn reserve(&self, owner: &str, ports: &[PortMapping]) -> Result<(), Error> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut got: Vec<(Key, Held)> = Vec::new();
        for p in ports {
            let ip: IpAddr = if p.host_ip.is_empty() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                p.host_ip.parse().map_err(|_| {
                    Error::InvalidArgument(format!("port {}: bad host address {:?}", p.host_port, p.host_ip))
                })?
            };
            let key = Key {
                protocol: p.protocol.clone(),
                ip,
                port: p.host_port,
            };
            if let Some((other, _)) = held.get(&key) {
                return Err(taken(&key, &format!("container {other}")));
            }
            // Another address of ours on the same port and protocol (0.0.0.0
            // against 127.0.0.1) is the same port for the DNAT rules.
            if let Some((k, (other, _))) = held
                .iter()
                .find(|(k, _)| k.port == key.port && k.protocol == key.protocol && overlaps(k.ip, key.ip))
            {
                return Err(taken(&key, &format!("container {other} (on {k})")));
            }
            match bind(&key) {
                Ok(h) => got.push((key, h)),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(taken(&key, &holder(&key)));
                }
                Err(e) => {
                    return Err(Error::Internal(format!("holding host port {key}: {e}")));
                }
            }
        }
        for (k, h) in got {
            held.insert(k, (owner.to_string(), h));
        }
        Ok(())
    }

    /// Lets go of every port `owner` holds.
    pub fn release(&self, owner: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, (o, _)| o != owner);
    }
}

fn overlaps(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

fn taken(key: &Key, by: &str) -> Error {
    Error::FailedPrecondition(format!("host port {key} is already in use by {by}"))
}

fn bind(key: &Key) -> std::io::Result<Held> {
    let addr = SocketAddr::new(key.ip, key.port);
    if key.protocol == "udp" {
        return UdpSocket::bind(addr).map(Held::Udp);
    }
    // std's TcpListener::bind would listen, and connections that reach it
    // (none the DNAT rules catch) would wait in its queue: bind alone holds
    // the port, and a connection to it is refused.
    // Close-on-exec: a shim molded starts must not keep the port.
    let socket = rustix::net::socket_with(
        if key.ip.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        },
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&socket, &addr)?;
    Ok(Held::Tcp(std::net::TcpStream::from(socket)))
}

/// Who holds `key` on this host: a process by name and pid, found through
/// /proc/net and the processes' open sockets, or "another process".
fn holder(key: &Key) -> String {
    let tables: &[&str] = match (key.protocol.as_str(), key.ip.is_ipv4()) {
        ("udp", _) => &["/proc/net/udp", "/proc/net/udp6"],
        _ => &["/proc/net/tcp", "/proc/net/tcp6"],
    };
    let inodes: Vec<u64> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                    (port == key.port).then(|| f.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .filter(|i| *i != 0)
        .collect();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return "another process".into();
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let t = target.to_string_lossy();
                t.strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|i| inodes.contains(&i))
            })
        });
        if owns {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            return format!("process {} (pid {pid})", name.trim());
        }
    }
    "another process".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn port(ip: &str, port: u16) -> PortMapping {
        PortMapping {
            host_ip: ip.into(),
            host_port: port,
            container_port: 80,
            protocol: "tcp".into(),
        }
    }

    #[test]
    fn a_port_is_held_once_and_released_with_its_owner() {
        let ports = HostPorts::default();
        // A port nobody has: take one from the kernel, then let it go.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ports.reserve("default/a", &[port("127.0.0.1", free)]).unwrap();
        let e = ports
            .reserve("default/b", &[port("127.0.0.1", free)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{free}/tcp")) && e.contains("container default/a"),
            "{e}"
        );
        // Every address overlaps a specific one.
        let e = ports
            .reserve("default/b", &[port("", free)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("container default/a"), "{e}");
        // Nobody else on the host can bind it meanwhile.
        assert!(TcpListener::bind(("127.0.0.1", free)).is_err());
        ports.release("default/a");
        ports.reserve("default/b", &[port("127.0.0.1", free)]).unwrap();
    }

    #[test]
    fn a_listening_host_process_is_named() {
        let ports = HostPorts::default();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        let e = ports
            .reserve("default/a", &[port("127.0.0.1", p)])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        // All or nothing: the first port of a failed reservation is not kept.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(
            ports
                .reserve("default/a", &[port("127.0.0.1", free), port("127.0.0.1", p)])
                .is_err()
        );
        assert!(TcpListener::bind(("127.0.0.1", free)).is_ok());
    }
}
