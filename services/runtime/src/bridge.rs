//! molde's own bridge networks (the default `molde0` and `molde network
//! create`'s), attached in-process: a veth pair made from inside the
//! container's namespace over netlink (rtnetlink), its address from a
//! host-local compatible store, the host end on the bridge. What the CNI
//! bridge, host-local and loopback plugins would do, without starting three
//! programs per container and running iptables for each. The record is a
//! CNI result of the same shape, and the address files are host-local's
//! (`/var/lib/cni/networks/NAME/IP`, "ID\r\nIFNAME", under its `lock`), so
//! containers attached either way share one pool. Networks with published
//! ports still go through the CNI plugins (portmap chains on bridge).

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::TryStreamExt;
use molde_common::errdefs::Error;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Where host-local keeps each network's addresses.
pub const IPAM_DIR: &str = "/var/lib/cni/networks";

/// One of molde's bridge networks, as the in-process path needs it.
#[derive(Debug, Clone)]
pub struct BridgeNet {
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// NAT to the outside and a default route (not for internal networks).
    pub outside: bool,
    /// The address store's name (the conflist's network name).
    pub ipam: String,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string())(e)
}

fn nl(what: &str) -> impl Fn(rtnetlink::Error) -> Error + '_ {
    move |e| Error::Internal(format!("{what}: {e}"))
}

impl BridgeNet {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        Path::new(IPAM_DIR).join(&self.ipam)
    }

    /// An address for `id`/`ifname`: `want` if free, else the next free one
    /// after the last handed out, as host-local picks them.
    pub fn allocate(&self, id: &str, ifname: &str, want: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
        let dir = self.ipam_dir();
        std::fs::create_dir_all(&dir).map_err(io("creating the address store"))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io("opening the address store's lock"))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("locking the address store".to_string())(e.into()))?;
        let net = u32::from(self.subnet) & self.mask();
        let size = 1u64 << (32 - self.prefix);
        let usable =
            |ip: u32| ip != net && ip as u64 != net as u64 + size - 1 && ip != u32::from(self.gateway);
        let take = |ip: Ipv4Addr| -> std::io::Result<bool> {
            match File::options()
                .write(true)
                .create_new(true)
                .open(dir.join(ip.to_string()))
            {
                Ok(mut f) => {
                    f.write_all(format!("{id}\r\n{ifname}").as_bytes())?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        };
        if let Some(ip) = want {
            let n = u32::from(ip);
            if n & self.mask() != net || !usable(n) {
                return Err(Error::InvalidArgument(format!(
                    "--ip {ip}: not a usable address of {}/{}",
                    self.subnet, self.prefix
                )));
            }
            if !take(ip).map_err(io("reserving an address"))? {
                return Err(Error::AlreadyExists(format!("address {ip} is in use")));
            }
            return Ok(ip);
        }
        let last_file = dir.join("last_reserved_ip.0");
        let last = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|l| l & self.mask() == net)
            .unwrap_or(net);
        for step in 1..size {
            let n = net + (((last - net) as u64 + step) % size) as u32;
            if !usable(n) {
                continue;
            }
            let ip = Ipv4Addr::from(n);
            if take(ip).map_err(io("reserving an address"))? {
                std::fs::write(&last_file, ip.to_string()).map_err(io("recording the last address"))?;
                return Ok(ip);
            }
        }
        Err(Error::Unavailable(format!(
            "network {}/{} has no free address",
            self.subnet, self.prefix
        )))
    }

    /// Gives back what `allocate` reserved for `id`.
    pub fn release(&self, id: &str) {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let holder = std::fs::read_to_string(e.path()).unwrap_or_default();
            if e.file_name().to_string_lossy().parse::<Ipv4Addr>().is_ok()
                && holder.lines().next().map(str::trim) == Some(id)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Bridges whose address, forwarding and NAT this process set up.
static READY: Mutex<Option<HashSet<String>>> = Mutex::new(None);

async fn host_handle() -> Result<rtnetlink::Handle, Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(io("opening a netlink socket"))?;
    tokio::spawn(conn);
    Ok(handle)
}

async fn link_index(h: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, Error> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl("looking a link up")(e)),
    }
}

/// The bridge's own MAC address: locally administered, derived from its
/// name. Set when the bridge is made, it never changes; a bridge left to
/// pick its own takes the lowest of its ports' and changes as containers
/// come and go, and a container whose ARP cache holds the old one reaches
/// the gateway (its DNS, the world) no more until that entry goes stale.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let d = molde_common::Digest::of(
        molde_common::Algorithm::Sha256,
        format!("molde bridge {name}").as_bytes(),
    );
    let h = d.hex().as_bytes();
    let mut mac = [0u8; 6];
    for (i, b) in mac.iter_mut().enumerate() {
        *b = u8::from_str_radix(std::str::from_utf8(&h[2 * i..2 * i + 2]).expect("hex"), 16).expect("hex");
    }
    // Unicast, locally administered.
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// `bridge_mac` as `ip link` writes it.
pub fn bridge_mac_text(name: &str) -> String {
    bridge_mac(name).map(|b| format!("{b:02x}")).join(":")
}

/// The bridge, with the gateway's address, up; forwarding on; NAT for the
/// subnet when the network reaches outside. Once per bridge per process.
async fn ensure_bridge(h: &rtnetlink::Handle, net: &BridgeNet) -> Result<u32, Error> {
    let index = match link_index(h, &net.bridge).await? {
        Some(i) => i,
        None => {
            match h
                .link()
                .add(
                    LinkBridge::new(&net.bridge)
                        .address(bridge_mac(&net.bridge).to_vec())
                        .up()
                        .build(),
                )
                .execute()
                .await
            {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
                Err(e) => return Err(nl("creating the bridge")(e)),
            }
            link_index(h, &net.bridge)
                .await?
                .ok_or_else(|| Error::Internal(format!("bridge {} vanished", net.bridge)))?
        }
    };
    if READY
        .lock()
        .expect("ready set")
        .get_or_insert_with(HashSet::new)
        .contains(&net.bridge)
    {
        return Ok(index);
    }
    let has_gateway = {
        let mut addrs = h.address().get().set_link_index_filter(index).execute();
        let mut found = false;
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(nl("reading the bridge's addresses"))?
        {
            found |= a.attributes.iter().any(|x| {
                matches!(x, rtnetlink::packet_route::address::AddressAttribute::Address(ip) if *ip == std::net::IpAddr::V4(net.gateway))
            });
        }
        found
    };
    if !has_gateway {
        match h
            .address()
            .add(index, net.gateway.into(), net.prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(nl("giving the bridge its gateway address")(e)),
        }
    }
    // Up, with its fixed address (a bridge made before molde fixed it keeps
    // a port's until this first use in the process).
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(bridge_mac(&net.bridge).to_vec())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl("bringing the bridge up"))?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(io("turning IPv4 forwarding on"))?;
    if net.outside {
        let cidr = format!(
            "{}/{}",
            Ipv4Addr::from(u32::from(net.subnet) & net.mask()),
            net.prefix
        );
        if !iptables_nat("-C", &cidr).unwrap_or(false)
            && !iptables_nat("-A", &cidr).map_err(io("running iptables"))?
        {
            return Err(Error::Internal(format!(
                "iptables could not add the NAT rule for {cidr}"
            )));
        }
    }
    READY
        .lock()
        .expect("ready set")
        .get_or_insert_with(HashSet::new)
        .insert(net.bridge.clone());
    Ok(index)
}

/// The NAT rule `ensure_bridge` set for `subnet` (CIDR), as iptables takes it.
fn nat_rule<'a>(op: &'a str, cidr: &'a str) -> [&'a str; 15] {
    [
        "-w",
        "-t",
        "nat",
        op,
        "POSTROUTING",
        "-s",
        cidr,
        "!",
        "-d",
        cidr,
        "-j",
        "MASQUERADE",
        "-m",
        "comment",
        "--comment",
    ]
}

fn iptables_nat(op: &str, cidr: &str) -> std::io::Result<bool> {
    Ok(std::process::Command::new("iptables")
        .args(nat_rule(op, cidr))
        .arg("molde")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?
        .success())
}

/// A user network is going: its NAT rule goes too.
pub fn forget(bridge: &str, subnet: &str) {
    if let Some(set) = READY.lock().expect("ready set").as_mut() {
        set.remove(bridge);
    }
    while iptables_nat("-D", subnet).unwrap_or(false) {}
}

/// Inside the namespace at `netns`: `eth0` (its peer `host_veth` moved to
/// the namespace this thread started in) with `ip`, up, `lo` up, and the
/// default route through the gateway. Returns eth0's MAC address.
fn inside(netns: &Path, host_veth: &str, net: &BridgeNet, ip: Ipv4Addr) -> Result<String, Error> {
    let (netns, host_veth, net) = (netns.to_path_buf(), host_veth.to_string(), net.clone());
    // setns moves only the calling thread: a thread of its own, ended after.
    std::thread::spawn(move || -> Result<String, Error> {
        let host =
            File::open("/proc/thread-self/ns/net").map_err(io("opening the host's network namespace"))?;
        let target = File::open(&netns).map_err(io("opening the container's network namespace"))?;
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::io("entering the container's network namespace".to_string())(e.into()))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(io("a runtime for netlink"))?;
        rt.block_on(async move {
            let h = host_handle().await?;
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(host_veth.clone())
                .setns_by_fd(host.as_raw_fd())
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name("eth0".to_string())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(veth)
                .execute()
                .await
                .map_err(nl("creating the veth pair"))?;
            let eth0 = link_index(&h, "eth0")
                .await?
                .ok_or_else(|| Error::Internal("eth0 vanished".into()))?;
            h.address()
                .add(eth0, ip.into(), net.prefix)
                .execute()
                .await
                .map_err(nl("giving eth0 its address"))?;
            h.link()
                .set(LinkUnspec::new_with_index(eth0).up().build())
                .execute()
                .await
                .map_err(nl("bringing eth0 up"))?;
            if let Some(lo) = link_index(&h, "lo").await? {
                h.link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(nl("bringing lo up"))?;
            }
            if net.outside {
                h.route()
                    .add(
                        RouteMessageBuilder::<Ipv4Addr>::new()
                            .gateway(net.gateway)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl("adding the default route"))?;
            }
            let mut links = h.link().get().match_index(eth0).execute();
            let mac = match links.try_next().await.map_err(nl("reading eth0"))? {
                Some(l) => l
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        LinkAttribute::Address(m) => {
                            Some(m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
                        }
                        _ => None,
                    })
                    .unwrap_or_default(),
                None => String::new(),
            };
            Ok(mac)
        })
    })
    .join()
    .map_err(|_| Error::Internal("the netlink thread panicked".into()))?
}

/// Attaches the pinned namespace `netns` (CNI container id `key`) to `net`;
/// returns the CNI result the record keeps.
pub async fn attach(
    net: &BridgeNet,
    key: &str,
    netns: &Path,
    want: Option<Ipv4Addr>,
) -> Result<serde_json::Value, Error> {
    let h = host_handle().await?;
    let bridge = ensure_bridge(&h, net).await?;
    let ip = net.allocate(key, "eth0", want)?;
    let host_veth = format!("veth{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let attached = async {
        let netns_path = netns.to_path_buf();
        let (hv, n) = (host_veth.clone(), net.clone());
        let mac = tokio::task::spawn_blocking(move || inside(&netns_path, &hv, &n, ip))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let index = link_index(&h, &host_veth)
            .await?
            .ok_or_else(|| Error::Internal(format!("{host_veth} did not come to the host")))?;
        h.link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).up().build())
            .execute()
            .await
            .map_err(nl("putting the veth on the bridge"))?;
        // Hairpin: a container reaches itself through a published port.
        let _ = std::fs::write(format!("/sys/class/net/{host_veth}/brport/hairpin_mode"), "1");
        Ok::<_, Error>(mac)
    }
    .await;
    let mac = match attached {
        Ok(m) => m,
        Err(e) => {
            net.release(key);
            if let Ok(Some(i)) = link_index(&h, &host_veth).await {
                let _ = h.link().del(i).execute().await;
            }
            return Err(e);
        }
    };
    let mut result = serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": net.bridge},
            {"name": host_veth},
            {"name": "eth0", "mac": mac, "sandbox": netns},
        ],
        "ips": [{"interface": 2, "address": format!("{ip}/{}", net.prefix), "gateway": net.gateway.to_string()}],
        "dns": {},
    });
    if net.outside {
        result["routes"] = serde_json::json!([{"dst": "0.0.0.0/0", "gw": net.gateway.to_string()}]);
    }
    Ok(result)
}

/// Undoes `attach`: the host end of the veth (its peer goes with it) and
/// the address. Errors are logged: teardown finishes whatever a crash left.
pub async fn detach(net: &BridgeNet, key: &str, result: &serde_json::Value) {
    if let Some(veth) = result["interfaces"][1]["name"].as_str() {
        match host_handle().await {
            Ok(h) => {
                if let Ok(Some(i)) = link_index(&h, veth).await
                    && let Err(e) = h.link().del(i).execute().await
                {
                    tracing::warn!(veth, error = %e, "removing a container's veth failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "no netlink socket to remove a veth"),
        }
    }
    net.release(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_mac_is_unicast_local_and_its_own() {
        let (a, b) = (bridge_mac("molde0"), bridge_mac("mlb-1234567890"));
        assert_eq!(a[0] & 0x03, 0x02, "unicast, locally administered: {a:02x?}");
        assert_ne!(a, b);
        assert_eq!(a, bridge_mac("molde0"));
        assert_eq!(bridge_mac_text("molde0").len(), 17);
    }

    #[test]
    fn addresses_are_handed_out_as_host_local_does() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("n").display().to_string();
        let net = BridgeNet {
            bridge: "x".into(),
            subnet: "10.99.0.0".parse().unwrap(),
            prefix: 29,
            gateway: "10.99.0.1".parse().unwrap(),
            outside: false,
            // An absolute name: joined to IPAM_DIR, it replaces it.
            ipam: name.clone(),
        };
        let a = net.allocate("c1", "eth0", None).unwrap();
        let b = net.allocate("c2", "eth0", None).unwrap();
        assert_eq!(
            (a.to_string().as_str(), b.to_string().as_str()),
            ("10.99.0.2", "10.99.0.3")
        );
        assert_eq!(
            std::fs::read_to_string(Path::new(&name).join("10.99.0.2")).unwrap(),
            "c1\r\neth0"
        );
        let err = net.allocate("c3", "eth0", Some(b)).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        net.release("c1");
        // The next after the last handed out, wrapping: .4 .5 .6, then .2 again.
        let got: Vec<String> = (0..4)
            .map(|i| net.allocate(&format!("d{i}"), "eth0", None).unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.99.0.4", "10.99.0.5", "10.99.0.6", "10.99.0.2"]);
        assert!(
            net.allocate("full", "eth0", None).is_err(),
            "a /29 holds 5 containers"
        );
    }
}
