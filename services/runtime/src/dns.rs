//! The DNS server of each user network, docker's embedded DNS role: molded
//! answers on the network's gateway address (port 53, UDP) with the
//! addresses of the network's containers, by name, alias and short id,
//! and forwards every other question to the asking container's --dns
//! servers or the host's. A name of the network is answered here for
//! every record type (no address of another type: an empty answer), so
//! questions about the network's containers never leave the host.
//!
//! Who is on the network is read from the bundles' `network.json` at each
//! question: it cannot go stale, and survives molded's restarts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use molde_bundle::{Bundle, NetworkRecord};

use crate::networks::Network;

/// How long a forwarded question waits for each upstream server.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
const TTL: u32 = 10;

pub struct Dns {
    /// The runtime's state directory (`<state>/<ns>/<id>/network.json`).
    state: PathBuf,
    servers: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Dns {
    pub fn new(state: PathBuf) -> Dns {
        Dns {
            state,
            servers: Mutex::default(),
        }
    }

    /// Serves `n`'s DNS, unless it is served already. Its gateway address
    /// exists once the bridge has a container: called after each attach
    /// (and for every network when molded starts, where bridges are up).
    pub fn serve(&self, n: &Network) {
        let mut servers = self.servers.lock().expect("dns servers");
        if servers.get(&n.name).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(gateway) = n.gateway.parse::<Ipv4Addr>() else {
            return;
        };
        let socket = match std::net::UdpSocket::bind((gateway, 53)).and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(network = %n.name, error = %e, "the network's DNS is not served (yet)");
                return;
            }
        };
        tracing::info!(network = %n.name, address = %gateway, "network DNS serving");
        let (state, name) = (self.state.clone(), n.name.clone());
        servers.insert(n.name.clone(), tokio::spawn(serve(socket, state, name)));
    }

    /// Stops serving the network's DNS (it is being removed).
    pub fn stop(&self, network: &str) {
        if let Some(h) = self.servers.lock().expect("dns servers").remove(network) {
            h.abort();
        }
    }
}

async fn serve(socket: tokio::net::UdpSocket, state: PathBuf, network: String) {
    let socket = std::sync::Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, state, network) = (socket.clone(), state.clone(), network.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, from, &state, &network).await {
                let _ = socket.send_to(&reply, from).await;
            }
        });
    }
}

/// Every container's network record, from the bundles under `state`.
fn records(state: &std::path::Path) -> Vec<NetworkRecord> {
    let mut out = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(state) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let Ok(bundles) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for b in bundles.flatten() {
            if let Ok(Some(record)) = Bundle::new(b.path()).network_record() {
                out.push(record);
            }
        }
    }
    out
}

/// The containers on `networks`: (their names, address, upstream servers).
fn members(records: &[NetworkRecord], networks: &[&str]) -> Vec<(Vec<String>, Ipv4Addr, Vec<String>)> {
    let mut out = Vec::new();
    for record in records {
        for (on, names, ip) in record.attachments() {
            if !networks.contains(&on) {
                continue;
            }
            if let Some(ip) = ip.and_then(|ip| ip.parse().ok()) {
                out.push((names.to_vec(), ip, record.upstream.clone()));
            }
        }
    }
    out
}

/// The networks of the container that asks from `from` on `network`: it
/// resolves the names of every network it is on, whichever gateway it asks.
fn networks_of<'a>(records: &'a [NetworkRecord], network: &'a str, from: IpAddr) -> Vec<&'a str> {
    let asker = records.iter().find(|r| {
        r.attachments().iter().any(|(on, _, ip)| {
            *on == network && ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok()) == Some(from)
        })
    });
    let mut nets = vec![network];
    if let Some(r) = asker {
        for (on, _, _) in r.attachments() {
            if !on.is_empty() && !nets.contains(&on) {
                nets.push(on);
            }
        }
    }
    nets
}

/// The reply to one question, or None for what is not a DNS query.
async fn answer(query: &[u8], from: SocketAddr, state: &std::path::Path, network: &str) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.message_type() != MessageType::Query {
        return None;
    }
    let question = q.queries().first()?.clone();
    let asked = question.name().to_ascii();
    let asked = asked.trim_end_matches('.').to_ascii_lowercase();
    let records = records(state);
    let networks = networks_of(&records, network, from.ip());
    // `web` and `web.<network>` both name container web.
    let short = networks
        .iter()
        .find_map(|n| asked.strip_suffix(&format!(".{}", n.to_ascii_lowercase())))
        .unwrap_or(&asked)
        .to_string();
    let members = members(&records, &networks);
    let mut reply = Message::new();
    reply
        .set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    let hits: Vec<Ipv4Addr> = members
        .iter()
        .filter(|(names, _, _)| names.iter().any(|n| n.to_ascii_lowercase() == short))
        .map(|(_, ip, _)| *ip)
        .collect();
    tracing::debug!(network, asker = %from, name = %asked, kind = %question.query_type(), hits = hits.len(), "DNS question");
    if !hits.is_empty() {
        reply
            .set_authoritative(true)
            .set_response_code(ResponseCode::NoError);
        if question.query_type() == RecordType::A {
            for ip in hits {
                reply.add_answer(Record::from_rdata(question.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        return reply.to_vec().ok();
    }
    // Not a name of the network: the asking container's servers, else the host's.
    let upstream: Vec<String> = members
        .iter()
        .find(|(_, ip, _)| IpAddr::V4(*ip) == from.ip())
        .map(|(_, _, up)| up.clone())
        .filter(|up| !up.is_empty())
        .unwrap_or_else(host_nameservers);
    for server in upstream {
        let Ok(ip) = server.parse::<IpAddr>() else {
            continue;
        };
        if let Some(r) = forward(query, SocketAddr::new(ip, 53)).await {
            return Some(r);
        }
    }
    reply.set_response_code(ResponseCode::ServFail);
    reply.to_vec().ok()
}

/// Asks `server` once, waiting at most FORWARD_TIMEOUT.
async fn forward(query: &[u8], server: SocketAddr) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = tokio::net::UdpSocket::bind(bind).await.ok()?;
    s.send_to(query, server).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(FORWARD_TIMEOUT, s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

fn host_nameservers() -> Vec<String> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn ask(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn names_of_the_network_are_answered_here() {
        let state = tempfile::tempdir().unwrap();
        let b = Bundle::new(state.path().join("default").join("web"));
        b.write_network_record(&NetworkRecord {
            network: "front".into(),
            names: vec!["web".into(), "www".into()],
            result: molde_bundle::CniResult::from_value(
                serde_json::json!({"ips": [{"address": "10.90.1.5/24"}]}),
            ),
            ..Default::default()
        })
        .unwrap();
        let from: SocketAddr = "10.90.1.9:5353".parse().unwrap();
        for name in ["web.", "WWW.", "web.front."] {
            let r = Message::from_vec(
                &answer(&ask(name, RecordType::A), from, state.path(), "front")
                    .await
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(r.id(), 7);
            assert_eq!(r.response_code(), ResponseCode::NoError);
            assert_eq!(r.answers().len(), 1, "{name}");
            assert_eq!(r.answers()[0].data(), &RData::A(A("10.90.1.5".parse().unwrap())));
        }
        // Another type of a known name: an empty answer, not a forward.
        let r = Message::from_vec(
            &answer(&ask("web.", RecordType::AAAA), from, state.path(), "front")
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!((r.response_code(), r.answers().len()), (ResponseCode::NoError, 0));
        // Another network's DNS does not know it.
        assert!(members(&records(state.path()), &["back"]).is_empty());
    }
}
