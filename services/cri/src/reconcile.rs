//! What a CRI container is made of outside molde's CRI records — a
//! containers.v1 record, a task and its bundle, a writable snapshot, all in
//! `k8s.io` — is made before the record is written (CreateContainer) and
//! removed before the record goes (RemoveContainer). A molded killed in
//! between leaves such parts with no record, which no kubelet call will
//! ever name. At start, before the CRI socket serves, everything in `k8s.io`
//! that has the shape of a CRI container and no record is removed, and said
//! so in the log.

use std::collections::HashSet;

use molde_api::containerd::services::containers::v1::{
    ListContainersRequest, containers_client::ContainersClient,
};
use molde_api::containerd::services::snapshots::v1::{
    ListSnapshotsRequest, RemoveSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_common::errdefs::Error;

use crate::{Cri, request};

/// Whether `key` is an id CRI gives its containers (`new_id`: 64 hex digits).
fn cri_id(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Snapshot kinds in snapshots.v1: VIEW (an image volume's), ACTIVE (a
/// container's writable layer).
const VIEW: i32 = 1;
const ACTIVE: i32 = 2;

/// The container a snapshot belongs to: its writable layer is named by the
/// container's ID, its image volumes' views `ID-image-volume-N`.
fn owner(kind: i32, key: &str) -> Option<&str> {
    match kind {
        ACTIVE => Some(key).filter(|k| cri_id(k)),
        VIEW => key
            .split_once("-image-volume-")
            .filter(|(id, n)| cri_id(id) && n.parse::<usize>().is_ok())
            .map(|(id, _)| id),
        _ => None,
    }
}

impl Cri {
    /// Removes containers, tasks, bundles and writable snapshots in
    /// `k8s.io` that no CRI record names; how many it removed.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        let known: HashSet<String> = self.containers()?.into_iter().map(|c| c.id).collect();
        let mut removed = 0;
        let records = ContainersClient::new(self.channels.runtime.clone())
            .list(request(ListContainersRequest::default()))
            .await
            .map_err(Error::upstream("listing the containers of k8s.io"))?
            .into_inner()
            .containers;
        for c in records {
            let ours = c
                .labels
                .get("io.cri-containerd.kind")
                .is_some_and(|k| k == "container");
            if ours && !known.contains(&c.id) {
                tracing::warn!(container = %c.id, "removing a container no CRI record names (left by a crash)");
                self.unmake(&c.id, &Default::default()).await;
                removed += 1;
            }
        }
        let snapshots = SnapshotsClient::new(self.channels.snapshotter.clone())
            .list(request(ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: Vec::new(),
            }))
            .await
            .map_err(Error::upstream("listing the snapshots of k8s.io"))?;
        let mut stream = snapshots.into_inner();
        let mut orphans = Vec::new();
        while let Some(page) = stream
            .message()
            .await
            .map_err(Error::upstream("listing the snapshots of k8s.io"))?
        {
            orphans.extend(
                page.info
                    .into_iter()
                    .filter(|s| owner(s.kind, &s.name).is_some_and(|id| !known.contains(id)))
                    .map(|s| s.name),
            );
        }
        for key in orphans {
            tracing::warn!(snapshot = %key, "removing a container snapshot no CRI record names (left by a crash)");
            match SnapshotsClient::new(self.channels.snapshotter.clone())
                .remove(request(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: key.clone(),
                }))
                .await
            {
                Ok(_) => removed += 1,
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => tracing::warn!(snapshot = %key, error = %s.message(), "removing a snapshot failed"),
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_ids_of_cri_shape_are_considered() {
        assert!(super::cri_id(&crate::new_id()));
        assert!(!super::cri_id("sha256:abc"));
        assert!(!super::cri_id("default-web"));
        let id = crate::new_id();
        let view = crate::container::image_volume_key(&id, 3);
        assert_eq!(super::owner(super::VIEW, &view), Some(id.as_str()));
        assert_eq!(super::owner(super::ACTIVE, &id), Some(id.as_str()));
        assert_eq!(super::owner(super::ACTIVE, &view), None);
        assert_eq!(super::owner(super::VIEW, "sha256:abc-image-volume-1"), None);
    }
}
