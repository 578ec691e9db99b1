//! `molde network create | ls | inspect | rm | prune`, as docker's.

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
    },
    /// Show networks' details as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container is on
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
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
        NetworkCmd::Ls { quiet } => {
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
            let rows: Vec<Vec<String>> = networks
                .iter()
                .map(|n| {
                    vec![
                        if n.id.is_empty() {
                            "-".into()
                        } else {
                            n.id.chars().take(12).collect()
                        },
                        n.name.clone(),
                        n.driver.clone(),
                        n.subnet.clone(),
                    ]
                })
                .collect();
            output::table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET"], &rows);
        }
        NetworkCmd::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let n = client(d)
                    .inspect_network(d.request(api::InspectNetworkRequest { name: name.clone() }))
                    .await
                    .map_err(status(format!("network {name}")))?
                    .into_inner();
                out.push(json(&n));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
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
