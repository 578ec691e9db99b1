//! `molde volume create | ls | inspect | rm | prune`, as docker's.

use anyhow::Result;
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum VolumeCmd {
    /// Create a volume (a name is made up when none is given)
    Create {
        name: Option<String>,
        /// Volume driver: local
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// KEY=VALUE (repeatable)
        #[arg(long)]
        label: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        /// dangling=true: only volumes no container uses
        #[arg(short, long)]
        filter: Vec<String>,
        /// table, json, or a template: '{{.Name}}', 'table {{.Name}}\t{{.Mountpoint}}'
        #[arg(long, default_value = "table")]
        format: output::Format,
    },
    /// Show volumes' details as JSON
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        /// A template applied to each volume: '{{.Mountpoint}}'
        #[arg(long, short)]
        format: Option<crate::template::Template>,
    },
    /// Remove volumes no container uses
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// No error for a volume that does not exist
        #[arg(short, long)]
        force: bool,
    },
    /// Remove the anonymous volumes no container uses (-a: named ones too)
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

fn client(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

fn json(v: &api::Volume) -> serde_json::Value {
    serde_json::json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": v.mountpoint,
        "CreatedAt": v.created_at,
        "Labels": v.labels,
        "Scope": "local",
        "Anonymous": v.anonymous,
        "UsedBy": v.used_by,
        "UsageData": {"Size": v.size, "RefCount": v.used_by.len()},
    })
}

/// `-f dangling=true|false`; other filters are refused by name.
fn dangling(filters: &[String]) -> Result<bool> {
    let mut dangling = false;
    for f in filters {
        match f.split_once('=') {
            Some(("dangling", "true" | "1")) => dangling = true,
            Some(("dangling", "false" | "0")) => dangling = false,
            _ => anyhow::bail!("filter {f:?}: molde volume ls filters by dangling=true|false"),
        }
    }
    Ok(dangling)
}

/// A volume's inspect object (docker's shape), or its NotFound.
pub async fn inspect_one(d: &Daemon, name: &str) -> Result<serde_json::Value, tonic::Status> {
    let v = client(d)
        .inspect_volume(d.request(api::InspectVolumeRequest { name: name.into() }))
        .await?
        .into_inner();
    Ok(json(&v))
}

pub async fn run(d: &Daemon, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Create { name, driver, label } => {
            let labels = output::label_flags(&label);
            let v = client(d)
                .create_volume(d.request(api::CreateVolumeRequest {
                    name: name.clone().unwrap_or_default(),
                    driver,
                    labels,
                }))
                .await
                .map_err(status(format!("creating volume {}", name.unwrap_or_default())))?
                .into_inner();
            println!("{}", v.name);
        }
        VolumeCmd::Ls {
            quiet,
            filter,
            format,
        } => {
            let volumes = client(d)
                .list_volumes(d.request(api::ListVolumesRequest {
                    dangling: dangling(&filter)?,
                    sizes: false,
                }))
                .await
                .map_err(status("listing volumes"))?
                .into_inner()
                .volumes;
            if quiet {
                for v in &volumes {
                    println!("{}", v.name);
                }
            } else {
                let rows: Vec<serde_json::Value> = volumes
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint, "Scope": "local",
                            "Labels": output::labels(&v.labels), "CreatedAt": v.created_at,
                        })
                    })
                    .collect();
                output::print(&format, &[("Driver", "DRIVER"), ("Name", "VOLUME NAME")], &rows)?;
            }
        }
        VolumeCmd::Inspect { names, format } => {
            let mut out = Vec::new();
            for n in names {
                out.push(inspect_one(d, &n).await.map_err(status(format!("volume {n}")))?);
            }
            output::print_inspect(format.as_ref(), &out)?;
        }
        VolumeCmd::Rm { names, force } => {
            for n in names {
                client(d)
                    .remove_volume(d.request(api::RemoveVolumeRequest {
                        name: n.clone(),
                        force,
                    }))
                    .await
                    .map_err(status(format!("removing volume {n}")))?;
                println!("{n}");
            }
        }
        VolumeCmd::Prune { all, force } => {
            if !force
                && !crate::output::confirm(if all {
                    "This removes every volume no container uses."
                } else {
                    "This removes every anonymous volume no container uses."
                })?
            {
                return Ok(());
            }
            let r = client(d)
                .prune_volumes(d.request(api::PruneVolumesRequest { all }))
                .await
                .map_err(status("pruning volumes"))?
                .into_inner();
            if !r.removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &r.removed {
                    println!("{n}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                output::human_size(r.reclaimed_bytes as i64)
            );
        }
    }
    Ok(())
}
