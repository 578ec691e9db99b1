//! `molde images …`: image records.

use anyhow::Result;
use clap::Subcommand;
use molde_api::containerd::services::images::v1::{self as api, images_client::ImagesClient};

use crate::daemon::{Daemon, status};
use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove dangling (untagged) images, or with -a every image no container uses
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Filters, e.g. 'name~=busybox' (any may match)
    filters: Vec<String>,
    /// Print names only
    #[arg(short, long)]
    quiet: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

/// The last part of a media type, as a column shows it.
fn short_type(mt: &str) -> &str {
    match mt {
        "application/vnd.oci.image.index.v1+json" => "oci index",
        "application/vnd.oci.image.manifest.v1+json" => "oci manifest",
        "application/vnd.docker.distribution.manifest.list.v2+json" => "docker list",
        "application/vnd.docker.distribution.manifest.v2+json" => "docker manifest",
        other => other,
    }
}

pub async fn run(d: &Daemon, cmd: ImagesCmd) -> Result<()> {
    let mut c = ImagesClient::new(d.channel.clone());
    match cmd {
        ImagesCmd::Prune { all, force } => return crate::system::prune_images(d, all, force).await,
        ImagesCmd::Ls(ListArgs {
            filters,
            quiet,
            format,
        }) => {
            let images = c
                .list(d.request(api::ListImagesRequest { filters }))
                .await
                .map_err(status("listing images"))?
                .into_inner()
                .images;
            if quiet {
                for i in images {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            match format {
                Format::Json => {
                    let v: Vec<_> = images
                        .iter()
                        .map(|i| {
                            let t = i.target.clone().unwrap_or_default();
                            serde_json::json!({
                                "name": i.name,
                                "target": {"mediaType": t.media_type, "digest": t.digest, "size": t.size},
                                "labels": i.labels,
                                "created": output::rfc3339(i.created_at.as_ref()),
                                "updated": output::rfc3339(i.updated_at.as_ref()),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = images
                        .iter()
                        .map(|i| {
                            let t = i.target.clone().unwrap_or_default();
                            vec![
                                i.name.clone(),
                                short_type(&t.media_type).to_string(),
                                t.digest.clone(),
                                output::age(i.created_at.as_ref()),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "TYPE", "DIGEST", "CREATED"], &rows);
                }
            }
        }
    }
    Ok(())
}

/// `molde rmi NAME…`
pub async fn rmi(d: &Daemon, names: Vec<String>) -> Result<()> {
    let mut c = ImagesClient::new(d.channel.clone());
    for name in names {
        let full = normalize(&name);
        c.delete(d.request(api::DeleteImageRequest {
            name: full.clone(),
            sync: false,
        }))
        .await
        .map_err(status(format!("removing image {name}")))?;
        println!("Untagged: {full}");
    }
    Ok(())
}

/// Drops a name the CLI made for itself; nothing to report.
pub async fn remove_quietly(d: &Daemon, name: &str) {
    let _ = ImagesClient::new(d.channel.clone())
        .delete(d.request(api::DeleteImageRequest {
            name: name.to_string(),
            sync: false,
        }))
        .await;
}

/// `molde tag SOURCE TARGET`
pub async fn tag(d: &Daemon, source: &str, target: &str) -> Result<()> {
    let mut c = ImagesClient::new(d.channel.clone());
    let img = c
        .get(d.request(api::GetImageRequest {
            name: normalize(source),
        }))
        .await
        .map_err(status(format!("image {source}")))?
        .into_inner()
        .image
        .unwrap_or_default();
    let new = api::Image {
        name: normalize(target),
        target: img.target,
        labels: img.labels,
        ..Default::default()
    };
    match c
        .create(d.request(api::CreateImageRequest {
            image: Some(new.clone()),
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            c.update(d.request(api::UpdateImageRequest {
                image: Some(new),
                update_mask: None,
            }))
            .await
            .map_err(status(format!("tagging {target}")))?;
            Ok(())
        }
        Err(s) => Err(status(format!("tagging {target}"))(s)),
    }
}

pub use molde_common::reference::normalize;
