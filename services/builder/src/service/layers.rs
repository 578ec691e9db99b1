//! Snapshots and layers: prepared, committed under chain IDs, held by the build lease, and diffed into layers.

use super::*;
use molde_common::errdefs::OrLog;

impl Job {
    pub(super) async fn prepare(&self, key: &str, parent: &str) -> Result<Vec<Mount>, Error> {
        Ok(SnapshotsClient::new(self.svc.snapshotter.clone())
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
                parent: parent.into(),
                labels: Default::default(),
            }))
            .await?
            .into_inner()
            .mounts)
    }

    pub(super) async fn remove_snapshot(&self, key: &str) {
        SnapshotsClient::new(self.svc.snapshotter.clone())
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
            .or_log("removing a build snapshot");
    }

    /// Commits active snapshot `key` as `name`; when the same layer on the
    /// same parent was committed before, that one is kept and `key` dropped.
    pub(super) async fn commit_as(&self, key: &str, name: &str) -> Result<(), Error> {
        match SnapshotsClient::new(self.svc.snapshotter.clone())
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: name.into(),
                key: key.into(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.remove_snapshot(key).await;
                Ok(())
            }
            Err(s) => Err(s.into()),
        }
    }

    /// Puts a resource (`content`, `snapshots/overlayfs`) in this build's lease.
    pub(super) async fn hold(&self, id: &str, kind: &str) -> Result<(), Error> {
        LeasesClient::new(self.svc.content.clone())
            .add_resource(self.plain(AddResourceRequest {
                id: self.lease.clone(),
                resource: Some(Resource {
                    id: id.into(),
                    r#type: kind.into(),
                }),
            }))
            .await
            .map_err(Error::upstream(format!(
                "holding {kind} {id} in the build's lease"
            )))?;
        Ok(())
    }

    /// The layer of active snapshot `key` over `parent`: diffed into content,
    /// committed under its chain ID (held by the build's lease).
    pub(super) async fn commit_layer(&self, key: &str, parent: &str) -> Result<Layer, Error> {
        let mounts = SnapshotsClient::new(self.svc.snapshotter.clone())
            .mounts(
                self.req(molde_api::containerd::services::snapshots::v1::MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.into(),
                }),
            )
            .await?
            .into_inner()
            .mounts;
        let desc = DiffClient::new(self.svc.snapshotter.clone())
            .diff(
                self.req(DiffRequest {
                    left: Vec::new(),
                    right: mounts,
                    media_type: if self.req.compression == "zstd" {
                        "application/vnd.oci.image.layer.v1.tar+zstd"
                    } else {
                        "application/vnd.oci.image.layer.v1.tar+gzip"
                    }
                    .into(),
                    r#ref: format!("build-layer-{key}"),
                    labels: Default::default(),
                    source_date_epoch: None,
                }),
            )
            .await?
            .into_inner()
            .diff
            .unwrap_or_default();
        // The uncompressed digest is a label of the layer's content.
        let info = ContentClient::new(self.svc.content.clone())
            .info(
                self.plain(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: desc.digest.clone(),
                }),
            )
            .await?
            .into_inner()
            .info
            .unwrap_or_default();
        let diff_id = info
            .labels
            .get(molde_common::labels::UNCOMPRESSED)
            .cloned()
            .ok_or_else(|| {
                Error::Internal(format!("layer {} has no uncompressed digest label", desc.digest))
            })?;
        let name = molde_common::chain_id(parent, &diff_id);
        self.commit_as(key, &name).await?;
        self.hold(&name, &format!("snapshots/{SNAPSHOTTER}")).await?;
        let descriptor = oci_spec::image::Descriptor::new(
            desc.media_type.as_str().into(),
            desc.size as u64,
            oci_spec::image::Digest::try_from(desc.digest.as_str())
                .map_err(|e| Error::Internal(format!("layer digest {:?}: {e}", desc.digest)))?,
        );
        Ok(Layer {
            descriptor,
            diff_id,
            chain_id: name,
        })
    }

    /// A layer made on its own (over nothing) stacked on `parent`: its blob
    /// applied by diff.v1 onto a snapshot over `parent`, committed under the
    /// chain ID (kept when it is already there).
    pub(super) async fn rebase(&self, alone: Layer, parent: &str) -> Result<Layer, Error> {
        if parent.is_empty() {
            let chain_id = molde_common::chain_id("", &alone.diff_id);
            return Ok(Layer { chain_id, ..alone });
        }
        self.stack(alone, parent).await
    }

    /// `layer`'s blob (in content) applied onto a snapshot over `parent` and
    /// committed under the chain ID, unless that snapshot is there already;
    /// the blob must unpack to the layer's diff ID.
    pub(super) async fn stack(&self, layer: Layer, parent: &str) -> Result<Layer, Error> {
        let name = molde_common::chain_id(parent, &layer.diff_id);
        let exists = SnapshotsClient::new(self.svc.snapshotter.clone())
            .stat(self.plain(
                molde_api::containerd::services::snapshots::v1::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: name.clone(),
                },
            ))
            .await
            .is_ok();
        if !exists {
            let key = format!("build-{}", uuid::Uuid::new_v4().simple());
            let result = async {
                let mounts = self.prepare(&key, parent).await?;
                let applied = DiffClient::new(self.svc.snapshotter.clone())
                    .apply(self.req(ApplyRequest {
                        diff: Some(api_descriptor(&layer.descriptor)),
                        mounts,
                        payloads: Default::default(),
                        sync_fs: false,
                    }))
                    .await?
                    .into_inner()
                    .applied
                    .unwrap_or_default();
                if applied.digest != layer.diff_id {
                    return Err(Error::DataLoss(format!(
                        "layer {} unpacks to {}, not to its diff ID {}",
                        layer.descriptor.digest(),
                        applied.digest,
                        layer.diff_id
                    )));
                }
                self.commit_as(&key, &name).await
            }
            .await;
            if result.is_err() {
                self.remove_snapshot(&key).await;
            }
            result?;
        }
        self.hold(&name, &format!("snapshots/{SNAPSHOTTER}")).await?;
        Ok(Layer {
            chain_id: name,
            ..layer
        })
    }
}
