//! `molde system df | prune`, `container prune`, `image prune`: what the
//! namespace's images, containers and volumes take, and getting it back.
//! Each is a few calls to services molded already serves (images.v1,
//! content.v1, snapshots.v1, runtime.v1, gc, builder).

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use molde_api::containerd::services::content::v1::{ListContentRequest, content_client::ContentClient};
use molde_api::containerd::services::images::v1::{
    DeleteImageRequest, ListImagesRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::snapshots::v1::{UsageRequest, snapshots_client::SnapshotsClient};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};
use crate::output;

#[derive(Debug, clap::Subcommand)]
pub enum SystemCmd {
    /// Show what images, containers and volumes take
    Df,
    /// Remove stopped containers, unused networks, dangling images and the build cache
    Prune {
        /// Every image no container uses, not only dangling ones
        #[arg(short, long)]
        all: bool,
        /// Anonymous volumes no container uses too
        #[arg(long)]
        volumes: bool,
        /// Do not ask
        #[arg(short, long)]
        force: bool,
    },
}

fn runtime(d: &Daemon) -> RuntimeClient<tonic::transport::Channel> {
    RuntimeClient::new(d.channel.clone())
}

/// Every blob of the namespace and its size.
pub async fn blob_sizes(d: &Daemon) -> Result<HashMap<String, i64>> {
    let mut s = ContentClient::new(d.channel.clone())
        .list(d.request(ListContentRequest::default()))
        .await
        .map_err(status("listing content"))?
        .into_inner();
    let mut out = HashMap::new();
    while let Some(r) = s.message().await.map_err(status("listing content"))? {
        for i in r.info {
            out.insert(i.digest, i.size);
        }
    }
    Ok(out)
}

/// The blobs an image is made of (manifest, config, layers), when it
/// resolves for this host.
async fn image_blobs(d: &Daemon, name: &str) -> HashSet<String> {
    match molde_common::image::resolve(
        &d.channel,
        &d.namespace,
        name,
        &molde_common::image::host_platform(),
    )
    .await
    {
        Ok(r) => std::iter::once(r.manifest_digest.clone())
            .chain(std::iter::once(r.config_digest.clone()))
            .chain(r.manifest.layers().iter().map(|l| l.digest().to_string()))
            .collect(),
        Err(_) => HashSet::new(),
    }
}

async fn containers(d: &Daemon) -> Result<Vec<api::ContainerStatus>> {
    Ok(runtime(d)
        .list(d.request(api::ListRequest {
            all: true,
            ids: Vec::new(),
        }))
        .await
        .map_err(status("listing containers"))?
        .into_inner()
        .containers)
}

/// Bytes a container's writable layer takes.
async fn container_size(d: &Daemon, id: &str) -> i64 {
    snapshot_size(d, id).await
}

/// Bytes a snapshot's own directory takes (0 when there is none).
pub async fn snapshot_size(d: &Daemon, key: &str) -> i64 {
    SnapshotsClient::new(d.channel.clone())
        .usage(d.request(UsageRequest {
            snapshotter: "overlayfs".into(),
            key: key.into(),
        }))
        .await
        .map(|r| r.into_inner().size)
        .unwrap_or(0)
}

fn running(c: &api::ContainerStatus) -> bool {
    matches!(c.state.as_str(), "running" | "paused")
}

pub async fn df(d: &Daemon) -> Result<()> {
    let images = ImagesClient::new(d.channel.clone())
        .list(d.request(ListImagesRequest::default()))
        .await
        .map_err(status("listing images"))?
        .into_inner()
        .images;
    let sizes = blob_sizes(d).await?;
    let list = containers(d).await?;
    let used: HashSet<&str> = list.iter().map(|c| c.image.as_str()).collect();
    let mut all_blobs = HashSet::new();
    let mut active_blobs = HashSet::new();
    let mut active = 0;
    for i in &images {
        let blobs = image_blobs(d, &i.name).await;
        if used.contains(i.name.as_str()) {
            active += 1;
            active_blobs.extend(blobs.iter().cloned());
        }
        all_blobs.extend(blobs);
    }
    let size_of = |set: &HashSet<String>| set.iter().filter_map(|b| sizes.get(b)).sum::<i64>();
    let images_size = size_of(&all_blobs);
    let images_reclaimable = images_size - size_of(&active_blobs);
    let mut containers_size = 0;
    let mut containers_reclaimable = 0;
    for c in &list {
        let s = container_size(d, &c.id).await;
        containers_size += s;
        if !running(c) {
            containers_reclaimable += s;
        }
    }
    let volumes = runtime(d)
        .list_volumes(d.request(api::ListVolumesRequest {
            dangling: false,
            sizes: true,
        }))
        .await
        .map_err(status("listing volumes"))?
        .into_inner()
        .volumes;
    let volumes_size: u64 = volumes.iter().map(|v| v.size).sum();
    let volumes_reclaimable: u64 = volumes
        .iter()
        .filter(|v| v.used_by.is_empty())
        .map(|v| v.size)
        .sum();
    let pct = |part: i64, whole: i64| {
        if whole > 0 {
            format!("{} ({}%)", output::human_size(part), part * 100 / whole)
        } else {
            output::human_size(part)
        }
    };
    let rows = vec![
        vec![
            "Images".into(),
            images.len().to_string(),
            active.to_string(),
            output::human_size(images_size),
            pct(images_reclaimable, images_size),
        ],
        vec![
            "Containers".into(),
            list.len().to_string(),
            list.iter().filter(|c| running(c)).count().to_string(),
            output::human_size(containers_size),
            pct(containers_reclaimable, containers_size),
        ],
        vec![
            "Local Volumes".into(),
            volumes.len().to_string(),
            volumes
                .iter()
                .filter(|v| !v.used_by.is_empty())
                .count()
                .to_string(),
            output::human_size(volumes_size as i64),
            pct(volumes_reclaimable as i64, volumes_size as i64),
        ],
    ];
    output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], &rows);
    Ok(())
}

/// `molde container prune`: removes every container that is not running.
pub async fn prune_containers(d: &Daemon, force: bool) -> Result<()> {
    if !force && !output::confirm("This removes every stopped container.")? {
        return Ok(());
    }
    let (removed, bytes) = remove_stopped(d).await?;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", output::human_size(bytes));
    Ok(())
}

async fn remove_stopped(d: &Daemon) -> Result<(Vec<String>, i64)> {
    let mut removed = Vec::new();
    let mut bytes = 0;
    for c in containers(d).await?.into_iter().filter(|c| !running(c)) {
        let size = container_size(d, &c.id).await;
        runtime(d)
            .remove(d.request(api::RemoveRequest {
                id: c.id.clone(),
                force: false,
                volumes: false,
            }))
            .await
            .map_err(status(format!("removing {}", c.id)))?;
        bytes += size;
        removed.push(c.id);
    }
    Ok((removed, bytes))
}

/// `molde image prune [-a]`: untagged images (their name is a bare
/// digest), or with `all` every image no container uses; then a
/// collection, whose reclaimed bytes are reported.
pub async fn prune_images(d: &Daemon, all: bool, force: bool) -> Result<()> {
    if !force
        && !output::confirm(if all {
            "This removes every image no container uses."
        } else {
            "This removes every dangling (untagged) image."
        })?
    {
        return Ok(());
    }
    let (removed, bytes) = remove_images(d, all).await?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for n in &removed {
            println!("deleted: {n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", output::human_size(bytes));
    Ok(())
}

async fn remove_images(d: &Daemon, all: bool) -> Result<(Vec<String>, i64)> {
    let before: i64 = blob_sizes(d).await?.values().sum();
    let used: HashSet<String> = containers(d).await?.into_iter().map(|c| c.image).collect();
    let images = ImagesClient::new(d.channel.clone())
        .list(d.request(ListImagesRequest::default()))
        .await
        .map_err(status("listing images"))?
        .into_inner()
        .images;
    let mut removed = Vec::new();
    for i in images {
        let dangling = i.name.starts_with("sha256:");
        if used.contains(&i.name) || !(all || dangling) {
            continue;
        }
        ImagesClient::new(d.channel.clone())
            .delete(d.request(DeleteImageRequest {
                name: i.name.clone(),
                sync: false,
            }))
            .await
            .map_err(status(format!("removing image {}", i.name)))?;
        removed.push(i.name);
    }
    if !removed.is_empty() {
        collect(d).await?;
    }
    let after: i64 = blob_sizes(d).await?.values().sum();
    Ok((removed, (before - after).max(0)))
}

async fn collect(d: &Daemon) -> Result<()> {
    use molde_api::molde::services::gc::v1::{CollectRequest, gc_client::GcClient};
    GcClient::new(d.channel.clone())
        .collect(d.request(CollectRequest {}))
        .await
        .map_err(status("garbage collection"))?;
    Ok(())
}

pub async fn prune(d: &Daemon, all: bool, volumes: bool, force: bool) -> Result<()> {
    if !force
        && !output::confirm(&format!(
            "This removes every stopped container, every network no container is on, {}{} and the build cache.",
            if all {
                "every image no container uses"
            } else {
                "every dangling image"
            },
            if volumes {
                ", every anonymous volume no container uses"
            } else {
                ""
            }
        ))?
    {
        return Ok(());
    }
    let (containers, container_bytes) = remove_stopped(d).await?;
    let networks = runtime(d)
        .prune_networks(d.request(api::PruneNetworksRequest {}))
        .await
        .map_err(status("pruning networks"))?
        .into_inner()
        .removed;
    let mut volume_bytes = 0;
    let mut gone_volumes = Vec::new();
    if volumes {
        let r = runtime(d)
            .prune_volumes(d.request(api::PruneVolumesRequest { all: false }))
            .await
            .map_err(status("pruning volumes"))?
            .into_inner();
        volume_bytes = r.reclaimed_bytes as i64;
        gone_volumes = r.removed;
    }
    let (images, image_bytes) = remove_images(d, all).await?;
    let cache =
        molde_api::molde::services::builder::v1::builder_client::BuilderClient::new(d.channel.clone())
            .prune(d.request(molde_api::molde::services::builder::v1::PruneRequest {
                all: true,
                keep_bytes: 0,
            }))
            .await
            .map(|r| r.into_inner().freed_bytes as i64)
            .unwrap_or(0);
    for (what, list) in [
        ("Containers", &containers),
        ("Networks", &networks),
        ("Volumes", &gone_volumes),
        ("Images", &images),
    ] {
        if !list.is_empty() {
            println!("Deleted {what}:");
            for x in list {
                println!("{x}");
            }
            println!();
        }
    }
    println!(
        "Total reclaimed space: {}",
        output::human_size(container_bytes + volume_bytes + image_bytes + cache)
    );
    Ok(())
}
