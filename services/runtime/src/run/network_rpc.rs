//! runtime.v1 networks: create, inspect, list, remove, prune. Which
//! containers are on a network comes from their records (every namespace:
//! networks are the host's); their addresses from their bundles.

use super::*;
use crate::networks::Network;

impl RuntimeService {
    /// The containers whose records name `network`.
    fn members(&self, network: &str) -> Vec<api::NetworkMember> {
        self.all_records()
            .into_iter()
            .filter_map(|(ns, c)| {
                let req = run_request(&c);
                (req.network == network).then(|| {
                    let address = Bundle::new(self.bundle_dir(&ns, &c.id))
                        .network_record()
                        .ok()
                        .flatten()
                        .filter(|r| r.network == network)
                        .and_then(|r| crate::network::address(&r))
                        .unwrap_or_default();
                    api::NetworkMember {
                        id: format!("{ns}/{}", c.id),
                        name: c.labels.get(NAME_LABEL).cloned().unwrap_or_else(|| c.id.clone()),
                        address,
                        aliases: req.network_aliases,
                    }
                })
            })
            .collect()
    }

    fn network_api(&self, n: Network) -> api::Network {
        api::Network {
            containers: self.members(&n.name),
            name: n.name,
            id: n.id,
            driver: "bridge".into(),
            subnet: n.subnet,
            gateway: n.gateway,
            internal: n.internal,
            labels: n.labels.into_iter().collect(),
            created_at: n.created_at,
            bridge: n.bridge,
        }
    }

    fn builtin(name: &str) -> api::Network {
        api::Network {
            name: name.into(),
            driver: match name {
                "none" => "null",
                other => other,
            }
            .into(),
            subnet: if name == "bridge" {
                "10.89.0.0/16".into()
            } else {
                String::new()
            },
            bridge: if name == "bridge" {
                crate::networks::DEFAULT_BRIDGE.into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    pub(super) fn create_network(&self, r: api::CreateNetworkRequest) -> Result<api::Network, Error> {
        if !r.driver.is_empty() && r.driver != "bridge" {
            return Err(Error::InvalidArgument(format!(
                "network driver {:?}: molde has the bridge driver",
                r.driver
            )));
        }
        let labels: molde_common::labels::Labels = r.labels.clone().into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let n = self.cni.networks.create(
            &r.name,
            (!r.subnet.is_empty()).then_some(r.subnet.as_str()),
            (!r.gateway.is_empty()).then_some(r.gateway.as_str()),
            r.internal,
            r.labels.into_iter().collect(),
        )?;
        tracing::info!(network = %n.name, subnet = %n.subnet, "network created");
        self.dns.serve(&n);
        Ok(self.network_api(n))
    }

    pub(super) fn inspect_network(&self, name: &str) -> Result<api::Network, Error> {
        if matches!(name, "bridge" | "host" | "none") {
            let mut n = Self::builtin(name);
            n.containers = self.members(name);
            return Ok(n);
        }
        Ok(self.network_api(self.cni.networks.find(name)?))
    }

    pub(super) fn list_networks(&self) -> Result<Vec<api::Network>, Error> {
        let mut out: Vec<api::Network> = ["bridge", "host", "none"]
            .iter()
            .map(|n| Self::builtin(n))
            .collect();
        for n in self.cni.networks.list()? {
            out.push(self.network_api(n));
        }
        Ok(out)
    }

    pub(super) fn remove_network(&self, name: &str) -> Result<(), Error> {
        if matches!(name, "bridge" | "host" | "none") {
            return Err(Error::PermissionDenied(format!(
                "network {name:?} is molde's own: it cannot be removed"
            )));
        }
        let n = self.cni.networks.find(name)?;
        let members = self.members(&n.name);
        if !members.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "network {:?} has containers: {}; remove them first",
                n.name,
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.dns.stop(&n.name);
        self.cni.networks.remove(&n)?;
        tracing::info!(network = %n.name, "network removed");
        Ok(())
    }

    pub(super) fn prune_networks(&self) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for n in self.cni.networks.list()? {
            if self.members(&n.name).is_empty() {
                self.dns.stop(&n.name);
                self.cni.networks.remove(&n)?;
                removed.push(n.name);
            }
        }
        Ok(removed)
    }
}
