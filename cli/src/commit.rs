//! `molde commit CONTAINER [NAME]`: a container's changes as a new image, the
//! way containerd clients make one — diff.v1 turns the container's snapshot
//! into a layer, the image's config gets its diff ID and a history entry, a
//! manifest names them (with the labels that keep them from collection), and
//! an image record names the manifest. All under a lease until the record
//! holds it.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use molde_api::containerd::services::diff::v1::{DiffRequest, diff_client::DiffClient};
use molde_api::containerd::services::images::v1::{
    CreateImageRequest, Image, UpdateImageRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::leases::v1::{
    CreateRequest, DeleteRequest, leases_client::LeasesClient,
};
use molde_api::containerd::services::snapshots::v1::{MountsRequest, snapshots_client::SnapshotsClient};
use molde_api::containerd::types::Descriptor;
use molde_api::molde::services::runtime::v1::{InspectRequest, runtime_client::RuntimeClient};
use molde_common::labels::{GC_EXPIRE, GC_REF_CONTENT, GC_REF_SNAPSHOT, UNCOMPRESSED};

use crate::daemon::{Daemon, status};

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    container: String,
    /// The new image's name; it is known by its digest only when not given
    name: Option<String>,
    /// The commit message, kept in the image's history
    #[arg(short, long)]
    message: Option<String>,
    /// Author, e.g. "Name <mail>"
    #[arg(short, long)]
    author: Option<String>,
}

fn leased<T>(d: &Daemon, lease: &str, msg: T) -> tonic::Request<T> {
    let mut r = d.request(msg);
    r.metadata_mut().insert(
        molde_api::LEASE_HEADER,
        lease.parse().expect("a lease id is a header value"),
    );
    r
}

async fn put(
    d: &Daemon,
    lease: &str,
    what: &str,
    data: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<(String, i64)> {
    let total = data.len() as i64;
    let open: molde_api::client::OpenAt = Box::new(move |_| {
        Ok((
            Box::new(std::io::Cursor::new(data)) as Box<dyn std::io::Read + Send>,
            0,
        ))
    });
    molde_api::client::write_stream(
        &d.channel,
        &d.namespace,
        Some(lease),
        what,
        total,
        "",
        labels,
        open,
    )
    .await
    .map_err(status(format!("writing the image's {what}")))
}

pub async fn commit(d: &Daemon, a: CommitArgs) -> Result<()> {
    let json = RuntimeClient::new(d.channel.clone())
        .inspect(d.request(InspectRequest {
            id: a.container.clone(),
        }))
        .await
        .map_err(status(format!("container {}", a.container)))?
        .into_inner()
        .json;
    let c: serde_json::Value = serde_json::from_str(&json)?;
    let (id, base) = (
        c["Id"].as_str().unwrap_or_default().to_string(),
        c["Image"].as_str().unwrap_or_default().to_string(),
    );
    let lease = format!("commit-{}", &uuid_like());
    let expire = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    LeasesClient::new(d.channel.clone())
        .create(d.request(CreateRequest {
            id: lease.clone(),
            labels: [(GC_EXPIRE.to_string(), expire)].into(),
        }))
        .await
        .map_err(status("creating a lease"))?;
    let result = make(d, &a, &id, &base, &lease).await;
    let _ = LeasesClient::new(d.channel.clone())
        .delete(d.request(DeleteRequest {
            id: lease,
            sync: false,
        }))
        .await;
    println!("{}", result?);
    Ok(())
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", n, std::process::id())
}

/// The image; returns its manifest digest.
async fn make(d: &Daemon, a: &CommitArgs, id: &str, base: &str, lease: &str) -> Result<String> {
    let image = molde_common::image::resolve(
        &d.channel,
        &d.namespace,
        base,
        &molde_common::image::host_platform(),
    )
    .await
    .map_err(status(format!("the container's image {base}")))?;
    let mounts = SnapshotsClient::new(d.channel.clone())
        .mounts(d.request(MountsRequest {
            snapshotter: "overlayfs".into(),
            key: id.into(),
        }))
        .await
        .map_err(status(format!("container {id}: its rootfs")))?
        .into_inner()
        .mounts;
    let layer = DiffClient::new(d.channel.clone())
        .diff(leased(
            d,
            lease,
            DiffRequest {
                left: vec![],
                right: mounts,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                r#ref: format!("commit-{id}"),
                ..Default::default()
            },
        ))
        .await
        .map_err(status(format!("container {id}: its changes as a layer")))?
        .into_inner()
        .diff
        .ok_or_else(|| anyhow!("the diff service returned no layer"))?;
    let diff_id =
        molde_api::containerd::services::content::v1::content_client::ContentClient::new(d.channel.clone())
            .info(
                d.request(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: layer.digest.clone(),
                }),
            )
            .await
            .map_err(status("the new layer"))?
            .into_inner()
            .info
            .and_then(|i| i.labels.get(UNCOMPRESSED).cloned())
            .ok_or_else(|| anyhow!("the new layer has no {UNCOMPRESSED} label"))?;

    let chain = unpack(d, lease, id, &image, &layer, &diff_id).await?;

    // The config: the image's, with the layer's diff ID and a history entry.
    let mut config: serde_json::Value = serde_json::from_slice(&image.config_raw)?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    config["created"] = now.clone().into();
    if let Some(author) = &a.author {
        config["author"] = author.clone().into();
    }
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| anyhow!("{base}: its config has no rootfs.diff_ids"))?
        .push(diff_id.into());
    let mut entry = serde_json::json!({"created": now, "created_by": format!("molde commit {id}")});
    if let Some(m) = &a.message {
        entry["comment"] = m.clone().into();
    }
    if let Some(author) = &a.author {
        entry["author"] = author.clone().into();
    }
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = serde_json::json!([entry]),
    }
    let config_bytes = serde_json::to_vec(&config)?;
    // The config holds the unpacked snapshot, as a pulled image's does.
    let snapshot_label = HashMap::from([(format!("{GC_REF_SNAPSHOT}overlayfs"), chain)]);
    let (config_digest, config_size) = put(d, lease, "config", config_bytes, snapshot_label).await?;

    // The manifest, holding the config and every layer.
    let mut layers: Vec<serde_json::Value> = image
        .manifest
        .layers()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    layers.push(serde_json::json!({
        "mediaType": layer.media_type, "digest": layer.digest, "size": layer.size,
    }));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layers,
    });
    let mut labels = HashMap::from([(format!("{GC_REF_CONTENT}.config"), config_digest.clone())]);
    for (i, l) in layers.iter().enumerate() {
        labels.insert(
            format!("{GC_REF_CONTENT}.l.{i}"),
            l["digest"].as_str().unwrap_or_default().to_string(),
        );
    }
    let (digest, size) = put(d, lease, "manifest", serde_json::to_vec(&manifest)?, labels).await?;

    let name = match &a.name {
        Some(n) => molde_common::reference::normalize(n),
        None => digest.clone(),
    };
    let record = Image {
        name: name.clone(),
        labels: Default::default(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.clone(),
            size,
            annotations: Default::default(),
        }),
        ..Default::default()
    };
    let mut images = ImagesClient::new(d.channel.clone());
    match images
        .create(d.request(CreateImageRequest {
            image: Some(record.clone()),
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            images
                .update(d.request(UpdateImageRequest {
                    image: Some(record),
                    update_mask: None,
                }))
                .await
                .map_err(status(format!("naming the image {name}")))?;
        }
        Err(s) => return Err(status(format!("naming the image {name}"))(s)),
    }
    Ok(digest)
}

/// Unpacks the new layer on the image's top snapshot, under its chain ID
/// (`sha256(parent + " " + diff_id)`), so the new image runs as a pulled
/// one does; returns the chain ID.
async fn unpack(
    d: &Daemon,
    lease: &str,
    id: &str,
    image: &molde_common::image::Resolved,
    layer: &Descriptor,
    diff_id: &str,
) -> Result<String> {
    use molde_api::containerd::services::diff::v1::ApplyRequest;
    use molde_api::containerd::services::snapshots::v1::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    };
    use sha2::Digest as _;
    let parent = image.top_chain_id().unwrap_or_default().to_string();
    let chain = if parent.is_empty() {
        diff_id.to_string()
    } else {
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(format!("{parent} {diff_id}")))
        )
    };
    let key = format!("commit-{id}-{}", uuid_like());
    let mut snaps = SnapshotsClient::new(d.channel.clone());
    let mounts = snaps
        .prepare(leased(
            d,
            lease,
            PrepareSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: key.clone(),
                parent,
                labels: Default::default(),
            },
        ))
        .await
        .map_err(status("preparing the new layer's snapshot"))?
        .into_inner()
        .mounts;
    let applied = DiffClient::new(d.channel.clone())
        .apply(leased(
            d,
            lease,
            ApplyRequest {
                diff: Some(layer.clone()),
                mounts,
                ..Default::default()
            },
        ))
        .await
        .map_err(status("unpacking the new layer"));
    let committed = match applied {
        Ok(_) => {
            snaps
                .commit(leased(
                    d,
                    lease,
                    CommitSnapshotRequest {
                        snapshotter: "overlayfs".into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: Default::default(),
                    },
                ))
                .await
        }
        Err(e) => {
            let _ = snaps
                .remove(d.request(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key,
                }))
                .await;
            return Err(e);
        }
    };
    match committed {
        Ok(_) => Ok(chain),
        // The same changes committed before: that snapshot serves.
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            let _ = snaps
                .remove(d.request(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key,
                }))
                .await;
            Ok(chain)
        }
        Err(s) => Err(status("committing the new layer's snapshot")(s)),
    }
}
