//! `network.json`: what a container's CNI ADD gave and what its DEL needs
//! back — the namespace key, the published ports and the CNI result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A CNI result (the spec's `Result`: interfaces, IPs, routes, DNS), as the
/// last plugin of a list returned it. Fields a plugin adds beyond these are
/// kept, so DEL gets back exactly what ADD gave as `prevResult`. `null`
/// reads as the empty result (no network).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Option<Raw>")]
pub struct CniResult(Raw);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<CniIp>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl From<Option<Raw>> for CniResult {
    fn from(r: Option<Raw>) -> Self {
        CniResult(r.unwrap_or_default())
    }
}

/// One address of a CNI result (`address` is CIDR: `10.89.0.5/16`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniIp {
    pub address: String,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl CniResult {
    /// A plugin's stdout; anything that is not a result object is empty.
    pub fn from_value(v: Value) -> CniResult {
        serde_json::from_value(v).unwrap_or_default()
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Nothing was attached.
    pub fn is_empty(&self) -> bool {
        self.0.ips.is_empty() && self.0.rest.is_empty()
    }

    /// Every IP address, without prefix lengths.
    pub fn ips(&self) -> Vec<String> {
        self.0
            .ips
            .iter()
            .map(|ip| ip.address.split('/').next().unwrap_or(&ip.address).to_string())
            .collect()
    }

    pub fn first_ip(&self) -> Option<String> {
        self.ips().into_iter().next()
    }
}

/// A published port, in the CNI `portMappings` capability's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// The whole of `network.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// The pinned namespace's name under the netns directory, and the CNI
    /// container id.
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub result: CniResult,
    /// The user network it is on (`molde network create`); empty for the
    /// default bridge.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// The names the network's DNS answers with its address: the
    /// container's name and its `--network-alias`es.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Where the network's DNS forwards this container's other questions
    /// (its --dns servers; the host's when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    /// The user networks it was connected to after it started on `network`
    /// (`molde network connect`), each on an interface of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connected: Vec<Connected>,
    /// Attached by molded itself (netlink and its own address store), not
    /// by the CNI plugins: teardown undoes it the same way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub native: bool,
}

/// One more network a container's namespace is attached to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    pub network: String,
    /// eth1, eth2, …
    pub ifname: String,
    #[serde(default)]
    pub result: CniResult,
    /// The names its DNS answers with this attachment's address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl NetworkRecord {
    /// Every network the record attaches (its first, then those connected
    /// since), with the names and address the network's DNS answers.
    pub fn attachments(&self) -> Vec<(&str, &[String], Option<String>)> {
        std::iter::once((
            self.network.as_str(),
            self.names.as_slice(),
            self.result.first_ip(),
        ))
        .chain(
            self.connected
                .iter()
                .map(|c| (c.network.as_str(), c.names.as_slice(), c.result.first_ip())),
        )
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_goes_back_to_del_as_it_came() {
        let v = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/x"}],
            "ips": [{"address": "10.89.0.5/16", "gateway": "10.89.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {},
        });
        let r = CniResult::from_value(v.clone());
        assert_eq!(r.to_value(), v);
        assert_eq!(r.first_ip().as_deref(), Some("10.89.0.5"));
        assert!(!r.is_empty());
    }

    #[test]
    fn null_is_no_network() {
        let r: CniResult = serde_json::from_str("null").unwrap();
        assert!(r.is_empty());
        assert_eq!(r.first_ip(), None);
    }

    #[test]
    fn a_record_reads_back_with_its_ports() {
        let rec = NetworkRecord {
            key: "default-web".into(),
            ports: vec![PortMapping {
                host_ip: String::new(),
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
            }],
            result: CniResult::from_value(serde_json::json!({"ips": [{"address": "10.89.0.9/16"}]})),
            ..Default::default()
        };
        let text = serde_json::to_string(&rec).unwrap();
        assert!(text.contains(r#""hostPort":8080"#), "{text}");
        assert!(!text.contains("hostIP"), "{text}");
        assert_eq!(serde_json::from_str::<NetworkRecord>(&text).unwrap(), rec);
    }
}
