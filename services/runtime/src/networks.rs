//! User networks (`molde network create`): each is a CNI bridge network of
//! its own — its bridge, its subnet (a /24 out of 10.90.0.0/16, away from
//! the default network's 10.89.0.0/16 and podman's 10.88.0.0/16), its
//! conflist `<dir>/<name>.conflist` for CNI tools to read, and its record
//! `<dir>/<name>.json`. Networks are isolated from each other (and from the
//! default bridge) as docker isolates them: two iptables stages, traffic
//! from one molde bridge to another is dropped, traffic out of an
//! `--internal` network is dropped altogether.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use molde_common::cni::NetworkList;
use molde_common::errdefs::Error;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The names `--network` gives other meanings.
const RESERVED: &[&str] = &["bridge", "host", "none", "default"];
/// Where user networks' subnets come from: 10.90.0.0/24 … 10.90.255.0/24.
const POOL: [u8; 2] = [10, 90];
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "molde0";

const STAGE1: &str = "MOLDE-ISOLATION-1";
const STAGE2: &str = "MOLDE-ISOLATION-2";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub bridge: String,
    /// CIDR, e.g. 10.90.3.0/24.
    pub subnet: String,
    pub gateway: String,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: String,
}

impl Network {
    /// The CNI network list its containers are attached with.
    pub fn conflist(&self, port_mappings: bool) -> NetworkList {
        let mut ipam = json!({
            "type": "host-local",
            "ranges": [[{"subnet": self.subnet, "gateway": self.gateway}]],
        });
        if !self.internal {
            ipam["routes"] = json!([{"dst": "0.0.0.0/0"}]);
        }
        let mut plugins = vec![json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": !self.internal,
            "hairpinMode": true,
            "ipam": ipam,
        })];
        if port_mappings {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
        }
        NetworkList {
            // host-local keeps each network's addresses under its name.
            name: format!("molde-{}-{}", self.name, &self.id[..8.min(self.id.len())]),
            cni_version: "1.0.0".into(),
            plugins,
        }
    }
}

/// The user networks in one directory.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
}

fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 30)?;
    Some((ip.parse().ok()?, len))
}

fn overlaps(a: &str, b: &str) -> bool {
    let (Some((ia, la)), Some((ib, lb))) = (parse_cidr(a), parse_cidr(b)) else {
        return false;
    };
    let len = la.min(lb);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(ia) & mask) == (u32::from(ib) & mask)
}

pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.len() <= 64;
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "network name {name:?}: use letters, digits and _.- (starting with a letter or digit)"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(Error::InvalidArgument(format!(
            "network name {name:?} is molde's own (bridge, host, none)"
        )));
    }
    Ok(())
}

impl Networks {
    pub fn new(dir: impl Into<PathBuf>) -> Networks {
        Networks { dir: dir.into() }
    }

    fn record(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn get(&self, name: &str) -> Result<Option<Network>, Error> {
        match std::fs::read(self.record(name)) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    key: self.record(name).display().to_string(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading network {name}"))(e)),
        }
    }

    /// The network a name or an id's beginning names.
    pub fn find(&self, reference: &str) -> Result<Network, Error> {
        if check_name(reference).is_ok()
            && let Some(n) = self.get(reference)?
        {
            return Ok(n);
        }
        let hits: Vec<Network> = self
            .list()?
            .into_iter()
            .filter(|n| !reference.is_empty() && n.id.starts_with(reference))
            .collect();
        match hits.len() {
            1 => Ok(hits.into_iter().next().expect("one")),
            0 => Err(Error::NotFound(format!("network {reference:?}"))),
            n => Err(Error::InvalidArgument(format!(
                "network {reference:?}: {n} networks have ids starting with it ({}); give more of the id",
                hits.iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub fn list(&self) -> Result<Vec<Network>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing networks")(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json")
                && let Some(n) = self.get(name)?
            {
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Creates a network; `subnet` and `gateway` chosen when not given.
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        internal: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<Network, Error> {
        check_name(name)?;
        if self.get(name)?.is_some() {
            return Err(Error::AlreadyExists(format!("network {name:?}")));
        }
        // Held until the bridge has its address: another molded on the host
        // choosing at the same time sees this subnet routed.
        let _host = host_lock()?;
        let existing = self.list()?;
        // Not the subnets of this molded's networks, podman's and molde's
        // defaults, nor any the host routes already (another molded's).
        let taken: Vec<String> = existing
            .iter()
            .map(|n| n.subnet.clone())
            .chain(["10.88.0.0/16".to_string(), "10.89.0.0/16".to_string()])
            .chain(host_routes())
            .collect();
        let subnet = match subnet {
            Some(s) => {
                let (ip, len) = parse_cidr(s).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "--subnet {s:?}: expected an IPv4 CIDR such as 10.91.0.0/24"
                    ))
                })?;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let s = format!("{}/{len}", Ipv4Addr::from(u32::from(ip) & mask));
                if let Some(t) = taken.iter().find(|t| overlaps(t, &s)) {
                    return Err(Error::InvalidArgument(format!(
                        "--subnet {s}: overlaps {t}, which another network (or podman's or molde's default) has"
                    )));
                }
                s
            }
            None => (0..=255u8)
                .map(|k| format!("{}.{}.{k}.0/24", POOL[0], POOL[1]))
                .find(|s| !taken.iter().any(|t| overlaps(t, s)))
                .ok_or_else(|| Error::Unavailable("every subnet of 10.90.0.0/16 is taken".into()))?,
        };
        let (net, _) = parse_cidr(&subnet).expect("checked above");
        let gateway = match gateway {
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| Error::InvalidArgument(format!("--gateway {g:?}: not an IPv4 address")))?;
                if !overlaps(&format!("{ip}/32"), &subnet) {
                    return Err(Error::InvalidArgument(format!("--gateway {g}: not in {subnet}")));
                }
                ip.to_string()
            }
            None => Ipv4Addr::from(u32::from(net) + 1).to_string(),
        };
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let n = Network {
            name: name.to_string(),
            bridge: format!("mlb-{}", &id[..10]),
            id,
            subnet,
            gateway,
            internal,
            labels,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        std::fs::create_dir_all(&self.dir).map_err(Error::io("creating the networks directory"))?;
        let conflist = serde_json::to_vec_pretty(&json!({
            "cniVersion": "1.0.0",
            "name": format!("molde-{name}"),
            "plugins": n.conflist(true).plugins,
        }))
        .map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(self.dir.join(format!("{name}.conflist")), conflist)
            .map_err(Error::io(format!("writing network {name}'s conflist")))?;
        let record = serde_json::to_vec_pretty(&n).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.record(name).with_extension("json.tmp");
        std::fs::write(&tmp, record)
            .and_then(|()| std::fs::rename(&tmp, self.record(name)))
            .map_err(Error::io(format!("writing network {name}")))?;
        isolate(&n.bridge, internal)?;
        bring_up(&n)?;
        Ok(n)
    }

    /// Removes a network's record, conflist, isolation rules and bridge.
    pub fn remove(&self, n: &Network) -> Result<(), Error> {
        unisolate(&n.bridge, n.internal);
        crate::bridge::forget(&n.bridge, &n.subnet);
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &n.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_file(self.dir.join(format!("{}.conflist", n.name)));
        // Its address store: no container holds an address on it any more.
        let store = std::path::Path::new(crate::bridge::IPAM_DIR).join(n.conflist(false).name);
        if let Err(e) = std::fs::remove_dir_all(&store)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(network = %n.name, error = %e, "removing the network's address store failed");
        }
        std::fs::remove_file(self.record(&n.name)).map_err(Error::io(format!("removing network {}", n.name)))
    }

    /// Puts every network's isolation rules in place (molded's start:
    /// after a reboot the chains are empty).
    pub fn isolate_all(&self) {
        let _ = isolate(DEFAULT_BRIDGE, false);
        for n in self.list().unwrap_or_default() {
            if let Err(e) = isolate(&n.bridge, n.internal).and_then(|()| bring_up(&n)) {
                tracing::warn!(network = %n.name, error = %e, "a network could not be set up");
            }
        }
    }
}

/// A host-wide lock over choosing subnets (every molded on the host takes it).
fn host_lock() -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let dir = std::path::Path::new("/run/lock");
    std::fs::create_dir_all(dir).map_err(Error::io("creating /run/lock"))?;
    let f = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::File::options().create(true).truncate(false).write(true),
        0o600,
    )
    .open(dir.join("molde-networks.lock"))
    .map_err(Error::io("opening the host's network lock"))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("locking the host's network lock".to_string())(e.into()))
}

/// The IPv4 subnets the host routes (not its default route).
fn host_routes() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The address's bytes in memory order, read as a host number.
            let dest = Ipv4Addr::from(dest.to_ne_bytes());
            (mask != 0).then(|| format!("{dest}/{}", mask.count_ones()))
        })
        .collect()
}

/// The network's bridge, with its gateway address, up: made at create
/// (and again after a reboot), so its subnet is routed (no other network
/// takes it) and its DNS can listen before the first container comes.
fn bring_up(n: &Network) -> Result<(), Error> {
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .map_err(Error::io("running ip"))
    };
    let len = n.subnet.split_once('/').map(|(_, l)| l).unwrap_or("24");
    let mac = crate::bridge::bridge_mac_text(&n.bridge);
    if !std::path::Path::new("/sys/class/net").join(&n.bridge).exists() {
        ip(&["link", "add", &n.bridge, "address", &mac, "type", "bridge"])?;
    } else {
        // One made before molde fixed its bridges' addresses.
        ip(&["link", "set", "dev", &n.bridge, "address", &mac])?;
    }
    // Present already on a bridge that was up: not an error.
    ip(&["addr", "add", &format!("{}/{len}", n.gateway), "dev", &n.bridge])?;
    if !ip(&["link", "set", &n.bridge, "up"])? {
        return Err(Error::Internal(format!("bringing up bridge {}", n.bridge)));
    }
    Ok(())
}

fn iptables(args: &[&str]) -> std::io::Result<bool> {
    let out = std::process::Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    Ok(out.status.success())
}

/// Adds `rule` to `chain` unless it is there.
fn ensure(chain: &str, rule: &[&str], insert: bool) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::io("running iptables")(e);
    let mut check = vec!["-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check).map_err(fail)? {
        return Ok(());
    }
    let mut add = vec![if insert { "-I" } else { "-A" }, chain];
    add.extend_from_slice(rule);
    if !iptables(&add).map_err(fail)? {
        return Err(Error::Internal(format!("iptables {}: failed", add.join(" "))));
    }
    Ok(())
}

/// The two stages for `bridge`: what leaves it for another interface goes
/// to stage 2 (or is dropped, for an internal network); stage 2 drops what
/// goes out through any molde bridge.
fn isolate(bridge: &str, internal: bool) -> Result<(), Error> {
    let fail = |e: std::io::Error| Error::io("running iptables")(e);
    for chain in [STAGE1, STAGE2] {
        // -N fails when the chain exists: that is fine.
        iptables(&["-N", chain]).map_err(fail)?;
    }
    ensure("FORWARD", &["-j", STAGE1], true)?;
    let target = if internal { "DROP" } else { STAGE2 };
    ensure(STAGE1, &["-i", bridge, "!", "-o", bridge, "-j", target], true)?;
    if internal {
        // Nothing comes in from outside either.
        ensure(STAGE1, &["-o", bridge, "!", "-i", bridge, "-j", "DROP"], true)?;
    }
    ensure(STAGE2, &["-o", bridge, "-j", "DROP"], true)?;
    Ok(())
}

fn unisolate(bridge: &str, internal: bool) {
    let target = if internal { "DROP" } else { STAGE2 };
    let _ = iptables(&["-D", STAGE1, "-i", bridge, "!", "-o", bridge, "-j", target]);
    if internal {
        let _ = iptables(&["-D", STAGE1, "-o", bridge, "!", "-i", bridge, "-j", "DROP"]);
    }
    let _ = iptables(&["-D", STAGE2, "-o", bridge, "-j", "DROP"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_overlap_by_prefix() {
        assert!(overlaps("10.90.0.0/16", "10.90.3.0/24"));
        assert!(!overlaps("10.90.3.0/24", "10.90.4.0/24"));
        assert!(overlaps("10.89.0.0/16", "10.89.255.0/24"));
        assert!(!overlaps("10.88.0.0/16", "10.90.0.0/24"));
        assert!(!overlaps("nonsense", "10.90.0.0/24"));
    }

    #[test]
    fn names_and_conflists() {
        assert!(check_name("bridge").is_err(), "reserved");
        assert!(check_name("front-end_1.x").is_ok());
        assert!(check_name("-x").is_err());
        let n = Network {
            name: "front".into(),
            id: "ab".repeat(32),
            bridge: "mlb-abababab".into(),
            subnet: "10.90.1.0/24".into(),
            gateway: "10.90.1.1".into(),
            internal: true,
            labels: BTreeMap::new(),
            created_at: String::new(),
        };
        let l = n.conflist(false);
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.plugins[0]["ipMasq"], false, "internal: no way out");
        assert!(l.plugins[0]["ipam"].get("routes").is_none());
        assert_eq!(l.plugins[0]["ipam"]["ranges"][0][0]["subnet"], "10.90.1.0/24");
    }
}
