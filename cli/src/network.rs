//! `molde network create | ls | inspect | rm | prune | connect | disconnect`, as docker's.

use anyhow::Result;
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum NetworkCmd {
    /// Create a network: a bridge of its own, its containers reachable by name
    Create {
        name: String,
        /// Its subnet (CIDR); a free /24 of 10.90.0.0/16 when not given
        #[arg(long)]
        subnet: Option<String>,
        /// Its gateway; the subnet's first address when not given
        #[arg(long)]
        gateway: Option<String>,
        /// No traffic in or out: its containers reach only each other
        #[arg(long)]
        internal: bool,
        /// Network driver: bridge
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// KEY=VALUE (repeatable)
        #[arg(long)]
        label: Vec<String>,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        /// table, json, or a template: '{{.Name}}', 'table {{.ID}}\t{{.Name}}'
        #[arg(long, default_value = "table")]
        format: output::Format,
    },
    /// Show networks' details as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        /// A template applied to each network: '{{.IPAM.Config}}'
        #[arg(short, long)]
        format: Option<crate::template::Template>,
    },
    /// Remove networks no container is on
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Put a container on one more network (now if it runs, and at every start)
    Connect {
        network: String,
        container: String,
        /// More names it answers to on that network (repeatable)
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Its address on that network
        #[arg(long)]
        ip: Option<String>,
    },
    /// Take a container off a network it was connected to
    Disconnect {
        network: String,
        container: String,
        /// Accepted for docker's sake; a disconnect is always done at once
        #[arg(short, long)]
        force: bool,
    },
    /// Remove every network no container is on
    Prune {
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

fn json(n: &api::Network) -> serde_json::Value {
    serde_json::json!({
        "Name": n.name,
        "Id": n.id,
        "Created": n.created_at,
        "Driver": n.driver,
        "Scope": "local",
        "Internal": n.internal,
        "IPAM": {"Driver": "host-local", "Config": if n.subnet.is_empty() { serde_json::json!([]) } else {
            serde_json::json!([{"Subnet": n.subnet, "Gateway": n.gateway}]) }},
        "Options": {"bridge": n.bridge},
        "Labels": n.labels,
        "Containers": n.containers.iter().map(|c| (c.id.clone(), serde_json::json!({
            "Name": c.name, "IPv4Address": c.address, "Aliases": c.aliases,
        }))).collect::<serde_json::Map<_, _>>(),
    })
}

/// A network's inspect object (docker's shape), or its NotFound.
pub async fn inspect_one(d: &Daemon, name: &str) -> Result<serde_json::Value, tonic::Status> {
    let n = client(d)
        .inspect_network(d.request(api::InspectNetworkRequest { name: name.into() }))
        .await?
        .into_inner();
    Ok(json(&n))
}

const COLUMNS: [(&str, &str); 4] = [
    ("ID", "NETWORK ID"),
    ("Name", "NAME"),
    ("Driver", "DRIVER"),
    ("Subnet", "SUBNET"),
];

pub async fn run(d: &Daemon, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            subnet,
            gateway,
            internal,
            driver,
            label,
        } => {
            let labels = output::label_flags(&label);
            let n = client(d)
                .create_network(d.request(api::CreateNetworkRequest {
                    name: name.clone(),
                    subnet: subnet.unwrap_or_default(),
                    gateway: gateway.unwrap_or_default(),
                    internal,
                    labels,
                    driver,
                }))
                .await
                .map_err(status(format!("creating network {name}")))?
                .into_inner();
            println!("{}", n.id);
        }
        NetworkCmd::Ls { quiet, format } => {
            let networks = client(d)
                .list_networks(d.request(api::ListNetworksRequest {}))
                .await
                .map_err(status("listing networks"))?
                .into_inner()
                .networks;
            if quiet {
                for n in &networks {
                    println!("{}", n.name);
                }
                return Ok(());
            }
            let rows: Vec<serde_json::Value> = networks
                .iter()
                .map(|n| {
                    serde_json::json!({
                        "ID": if n.id.is_empty() { "-".to_string() } else { n.id.chars().take(12).collect() },
                        "Name": n.name, "Driver": n.driver, "Subnet": n.subnet, "Scope": "local",
                        "Internal": n.internal.to_string(), "IPv6": "false", "CreatedAt": n.created_at,
                        "Labels": output::labels(&n.labels),
                    })
                })
                .collect();
            output::print(&format, &COLUMNS, &rows)?;
        }
        NetworkCmd::Inspect { names, format } => {
            let mut out = Vec::new();
            for name in names {
                out.push(
                    inspect_one(d, &name)
                        .await
                        .map_err(status(format!("network {name}")))?,
                );
            }
            output::print_inspect(format.as_ref(), &out)?;
        }
        NetworkCmd::Rm { names } => {
            for name in names {
                client(d)
                    .remove_network(d.request(api::RemoveNetworkRequest { name: name.clone() }))
                    .await
                    .map_err(status(format!("removing network {name}")))?;
                println!("{name}");
            }
        }
        NetworkCmd::Connect {
            network,
            container,
            aliases,
            ip,
        } => {
            client(d)
                .connect_network(d.request(api::ConnectNetworkRequest {
                    network: network.clone(),
                    container: container.clone(),
                    aliases,
                    ip: ip.unwrap_or_default(),
                }))
                .await
                .map_err(status(format!("connecting {container} to {network}")))?;
        }
        NetworkCmd::Disconnect {
            network, container, ..
        } => {
            client(d)
                .disconnect_network(d.request(api::DisconnectNetworkRequest {
                    network: network.clone(),
                    container: container.clone(),
                }))
                .await
                .map_err(status(format!("disconnecting {container} from {network}")))?;
        }
        NetworkCmd::Prune { force } => {
            if !force && !output::confirm("This removes every network no container is on.")? {
                return Ok(());
            }
            let removed = client(d)
                .prune_networks(d.request(api::PruneNetworksRequest {}))
                .await
                .map_err(status("pruning networks"))?
                .into_inner()
                .removed;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                for n in removed {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}
