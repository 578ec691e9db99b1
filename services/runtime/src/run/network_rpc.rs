//! runtime.v1 networks: create, inspect, list, remove, prune, connect and
//! disconnect. Which
//! containers are on a network comes from their records (every namespace:
//! networks are the host's); their addresses from their bundles.

use super::*;
use crate::networks::Network;

impl RuntimeService {
    /// The containers whose records name `network`, as the one they
    /// started on or one connected since.
    fn members(&self, network: &str) -> Vec<api::NetworkMember> {
        self.all_records()
            .into_iter()
            .filter_map(|(ns, c)| {
                let req = run_request(&c);
                let aliases = if req.network == network {
                    req.network_aliases.clone()
                } else {
                    req.connections
                        .iter()
                        .find(|x| x.network == network)?
                        .aliases
                        .clone()
                };
                let address = Bundle::new(self.bundle_dir(&ns, &c.id))
                    .network_record()
                    .ok()
                    .flatten()
                    .and_then(|r| {
                        r.attachments()
                            .into_iter()
                            .find(|(on, _, _)| *on == network)
                            .and_then(|(_, _, ip)| ip)
                    })
                    .unwrap_or_default();
                Some(api::NetworkMember {
                    id: format!("{ns}/{}", c.id),
                    name: c.labels.get(NAME_LABEL).cloned().unwrap_or_else(|| c.id.clone()),
                    address,
                    aliases,
                })
            })
            .collect()
    }

    /// Attaches a running container's namespace (its record `saved`) to
    /// one more network, on the next free ethN.
    pub(crate) async fn attach_connection(
        &self,
        saved: &mut molde_bundle::NetworkRecord,
        name: &str,
        id: &str,
        conn: &api::NetworkConnection,
    ) -> Result<(), Error> {
        let n = self.cni.networks.find(&conn.network)?;
        let ifname = (1..)
            .map(|i| format!("eth{i}"))
            .find(|f| !saved.connected.iter().any(|c| c.ifname == *f))
            .expect("an unused interface name");
        let result = self.cni.connect(&saved.key, &n.name, &ifname, &conn.ip).await?;
        let mut names: Vec<String> = Vec::new();
        for x in std::iter::once(name.to_string())
            .chain(std::iter::once(id.chars().take(12).collect()))
            .chain(conn.aliases.iter().cloned())
        {
            if !names.contains(&x) {
                names.push(x);
            }
        }
        saved.connected.push(molde_bundle::Connected {
            network: n.name.clone(),
            ifname,
            result,
            names,
        });
        self.dns.serve(&n);
        Ok(())
    }

    /// `molde network connect`: kept with the container for every start;
    /// attached at once when it runs.
    pub(super) async fn connect(&self, ns: &str, r: api::ConnectNetworkRequest) -> Result<(), Error> {
        let id = self.resolve(ns, &r.container)?;
        let n = self.cni.networks.find(&r.network).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!(
                "network {:?}: molde connects containers to networks made with `molde network create`",
                r.network
            )),
            e => e,
        })?;
        let mut record = self.record(ns, &id)?;
        let mut req = run_request(&record);
        if matches!(req.network.as_str(), "none" | "host") {
            return Err(Error::FailedPrecondition(format!(
                "container {id} runs with --network {}: it has no network of its own to connect",
                req.network
            )));
        }
        if req.network == n.name || req.connections.iter().any(|c| c.network == n.name) {
            return Err(Error::AlreadyExists(format!(
                "container {id} is already on network {}",
                n.name
            )));
        }
        let conn = api::NetworkConnection {
            network: n.name.clone(),
            aliases: r.aliases,
            ip: r.ip,
        };
        if matches!(self.observe(ns, &id).state, "running" | "paused") {
            let b = Bundle::new(self.bundle_dir(ns, &id));
            let mut saved = b
                .network_record()
                .map_err(Error::io("reading the container's network record"))?
                .ok_or_else(|| {
                    Error::FailedPrecondition(format!("container {id} has no network namespace"))
                })?;
            let name = record
                .labels
                .get(NAME_LABEL)
                .cloned()
                .unwrap_or_else(|| id.clone());
            self.attach_connection(&mut saved, &name, &id, &conn).await?;
            b.write_network_record(&saved)
                .map_err(Error::io("writing the container's network record"))?;
        }
        req.connections.push(conn);
        set_run_request(&mut record, &req);
        self.store
            .txn(molde_meta::Txn::new().put(crate::containers::key(ns, &id), record.encode_to_vec()))?;
        self.publish_network(ns, "/networks/connect", &n.name, &id);
        tracing::info!(namespace = ns, container = %id, network = %n.name, "container connected");
        Ok(())
    }

    /// `molde network disconnect`: a network connected with `connect`.
    pub(super) async fn disconnect(&self, ns: &str, r: api::DisconnectNetworkRequest) -> Result<(), Error> {
        let id = self.resolve(ns, &r.container)?;
        let network = self
            .cni
            .networks
            .find(&r.network)
            .map(|n| n.name)
            .unwrap_or_else(|_| r.network.clone());
        let mut record = self.record(ns, &id)?;
        let mut req = run_request(&record);
        if req.network == network {
            return Err(Error::FailedPrecondition(format!(
                "container {id} was created on network {network}; molde takes a container off the networks \
                 it was connected to later (recreate it to change its first network)"
            )));
        }
        let before = req.connections.len();
        req.connections.retain(|c| c.network != network);
        if req.connections.len() == before {
            return Err(Error::NotFound(format!(
                "container {id} is not connected to network {network}"
            )));
        }
        let b = Bundle::new(self.bundle_dir(ns, &id));
        if let Ok(Some(mut saved)) = b.network_record()
            && let Some(i) = saved.connected.iter().position(|c| c.network == network)
        {
            let c = saved.connected.remove(i);
            self.cni.disconnect(&saved.key, &c).await;
            b.write_network_record(&saved)
                .map_err(Error::io("writing the container's network record"))?;
        }
        set_run_request(&mut record, &req);
        self.store
            .txn(molde_meta::Txn::new().put(crate::containers::key(ns, &id), record.encode_to_vec()))?;
        self.publish_network(ns, "/networks/disconnect", &network, &id);
        tracing::info!(namespace = ns, container = %id, network = %network, "container disconnected");
        Ok(())
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
