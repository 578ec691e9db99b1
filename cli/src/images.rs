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
    /// Full image IDs
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a template: '{{.Repository}}:{{.Tag}}', 'table {{.ID}}\t{{.Size}}'
    #[arg(long, default_value = "table")]
    format: Format,
}

/// docker's REPOSITORY and TAG of an image name (`<none>` for a digest).
fn repo_tag(name: &str) -> (String, String) {
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    if let Some((repo, _)) = name.split_once('@') {
        return (repo.to_string(), "<none>".into());
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (name[..slash + i].to_string(), name[slash + i + 1..].to_string()),
        None => (name.to_string(), "<none>".into()),
    }
}

/// What `images` shows of one image: its record and, when it resolves for
/// this host, its config (ID, created) and size.
struct Shown {
    image: api::Image,
    config_digest: String,
    created: Option<chrono::DateTime<chrono::Utc>>,
    size: i64,
}

async fn show(d: &Daemon, image: api::Image, blobs: &std::collections::HashMap<String, i64>) -> Shown {
    let r = molde_common::image::resolve(
        &d.channel,
        &d.namespace,
        &image.name,
        &molde_common::image::host_platform(),
    )
    .await
    .ok();
    let Some(r) = r else {
        let digest = image
            .target
            .as_ref()
            .map(|t| t.digest.clone())
            .unwrap_or_default();
        return Shown {
            size: blobs.get(&digest).copied().unwrap_or(0),
            config_digest: digest,
            created: None,
            image,
        };
    };
    // Unpacked: what its layers' snapshots take; else what its blobs take.
    let mut size = 0;
    for l in &r.layers {
        size += crate::system::snapshot_size(d, &l.chain_id).await;
    }
    if size == 0 {
        size = r.manifest.layers().iter().map(|l| l.size() as i64).sum();
    }
    Shown {
        created: r
            .config
            .created()
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        config_digest: r.config_digest,
        size,
        image,
    }
}

fn image_row(s: &Shown, no_trunc: bool) -> serde_json::Value {
    let (repo, tag) = repo_tag(&s.image.name);
    let id = if no_trunc {
        s.config_digest.clone()
    } else {
        s.config_digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    };
    let created = s.created.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    });
    serde_json::json!({
        "Repository": repo,
        "Tag": tag,
        "ID": id,
        "Digest": s.image.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default(),
        "CreatedSince": if created.is_some() { output::age(created.as_ref()) } else { "N/A".into() },
        "CreatedAt": s.created.map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()).unwrap_or_default(),
        "Size": output::human_size(s.size),
        "Name": s.image.name,
    })
}

const IMAGE_COLUMNS: [(&str, &str); 5] = [
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("Size", "SIZE"),
];

pub async fn run(d: &Daemon, cmd: ImagesCmd) -> Result<()> {
    let mut c = ImagesClient::new(d.channel.clone());
    match cmd {
        ImagesCmd::Prune { all, force } => return crate::system::prune_images(d, all, force).await,
        ImagesCmd::Ls(ListArgs {
            filters,
            quiet,
            no_trunc,
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
            if let Format::Json = format {
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
                return Ok(());
            }
            let blobs = crate::system::blob_sizes(d).await?;
            let mut shown = Vec::new();
            for i in images {
                shown.push(show(d, i, &blobs).await);
            }
            let rows: Vec<_> = shown.iter().map(|s| image_row(s, no_trunc)).collect();
            match format {
                Format::Template(t) => t.print(&IMAGE_COLUMNS, &rows)?,
                _ => {
                    let cells: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            IMAGE_COLUMNS
                                .iter()
                                .map(|(k, _)| r[k].as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .collect();
                    output::table(&IMAGE_COLUMNS.map(|(_, h)| h), &cells);
                }
            }
        }
    }
    Ok(())
}

/// The one image name a reference stands for: itself, or the first name of
/// the image whose ID starts with it (`molde run 3f2a…`). Only an all-hex
/// reference costs a lookup.
pub async fn resolve_one(d: &Daemon, reference: &str) -> Result<String> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.len() < 4 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(reference.to_string());
    }
    Ok(resolve_names(d, reference)
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| reference.to_string()))
}

/// The image names a user's reference stands for: the name itself when an
/// image has it, else every name of the one image whose ID (config digest)
/// or target digest starts with it, as docker takes `rmi 3f2a`.
pub async fn resolve_names(d: &Daemon, reference: &str) -> Result<Vec<String>> {
    let mut c = ImagesClient::new(d.channel.clone());
    let full = normalize(reference);
    if c.get(d.request(api::GetImageRequest { name: full.clone() }))
        .await
        .is_ok()
    {
        return Ok(vec![full]);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.is_empty() || !hex.chars().all(|ch| ch.is_ascii_hexdigit()) {
        return Ok(vec![full]);
    }
    let images = c
        .list(d.request(api::ListImagesRequest::default()))
        .await
        .map_err(status("listing images"))?
        .into_inner()
        .images;
    let mut ids: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in images {
        let target = i.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
        let config = molde_common::image::resolve(
            &d.channel,
            &d.namespace,
            &i.name,
            &molde_common::image::host_platform(),
        )
        .await
        .map(|r| r.config_digest)
        .unwrap_or_default();
        let starts = |dg: &str| dg.trim_start_matches("sha256:").starts_with(hex);
        if starts(&config) {
            ids.entry(config).or_default().push(i.name);
        } else if starts(&target) {
            ids.entry(target).or_default().push(i.name);
        }
    }
    match ids.len() {
        0 => Ok(vec![full]),
        1 => Ok(ids.into_values().next().unwrap_or_default()),
        _ => anyhow::bail!(
            "image {reference:?}: {} images have IDs starting with it ({}); give more of the ID",
            ids.len(),
            ids.keys()
                .map(|k| k
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `molde rmi NAME…`
pub async fn rmi(d: &Daemon, names: Vec<String>) -> Result<()> {
    let mut c = ImagesClient::new(d.channel.clone());
    for name in names {
        for full in resolve_names(d, &name).await? {
            c.delete(d.request(api::DeleteImageRequest {
                name: full.clone(),
                sync: false,
            }))
            .await
            .map_err(status(format!("removing image {name}")))?;
            println!("Untagged: {full}");
        }
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
    let source = &resolve_one(d, source).await?;
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
