//! Cleaning up after a molded killed mid-build, before new builds run.

use super::*;
use molde_common::errdefs::OrLog;

impl BuilderService {
    /// Cleans up after builds an earlier molded did not finish (killed
    /// mid-build): their mounts and directories under `scratch`, their RUN
    /// containers (still running, perhaps), their snapshots and leases.
    /// Called once at start, with `recovering` held for writing (`guard`).
    pub async fn recover(&self, guard: tokio::sync::OwnedRwLockWriteGuard<()>) {
        let scratch = self.scratch.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| Path::new(m).starts_with(&scratch))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for m in points {
                rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH)
                    .or_log("unmounting what an earlier molded left");
            }
            if let Ok(dir) = std::fs::read_dir(&scratch) {
                for e in dir.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        })
        .await;
        let namespaces = NamespacesClient::new(self.content.clone())
            .list(Request::new(ListNamespacesRequest::default()))
            .await
            .map(|r| r.into_inner().namespaces)
            .unwrap_or_default();
        let mut cleaned = 0usize;
        for ns in namespaces.iter().map(|n| n.name.as_str()) {
            let mut rt = RuntimeClient::new(self.runtime.clone());
            let containers = rt
                .list(self.plain(
                    ns,
                    ListRequest {
                        all: true,
                        ids: Vec::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner().containers)
                .unwrap_or_default();
            for c in containers.iter().filter(|c| c.id.starts_with("build-")) {
                let removed = rt
                    .remove(self.plain(
                        ns,
                        RemoveRequest {
                            id: c.id.clone(),
                            force: true,
                            volumes: true,
                        },
                    ))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
            let mut snaps = SnapshotsClient::new(self.snapshotter.clone());
            let mut keys = Vec::new();
            if let Ok(r) = snaps
                .list(self.plain(
                    ns,
                    ListSnapshotsRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        filters: Vec::new(),
                    },
                ))
                .await
            {
                let mut stream = r.into_inner();
                while let Ok(Some(m)) = stream.message().await {
                    // Snapshots a build prepared; committed layers are
                    // named by chain IDs, never so.
                    keys.extend(
                        m.info
                            .into_iter()
                            .map(|i| i.name)
                            .filter(|n| n.starts_with("build-")),
                    );
                }
            }
            for k in keys {
                let removed = snaps
                    .remove(self.plain(
                        ns,
                        RemoveSnapshotRequest {
                            snapshotter: SNAPSHOTTER.into(),
                            key: k,
                        },
                    ))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
            let mut leases = LeasesClient::new(self.content.clone());
            let ids: Vec<String> = leases
                .list(self.plain(ns, ListLeasesRequest::default()))
                .await
                .map(|r| r.into_inner().leases.into_iter().map(|l| l.id).collect())
                .unwrap_or_default();
            for id in ids.into_iter().filter(|i| i.starts_with("build-")) {
                let removed = leases
                    .delete(self.plain(ns, DeleteLease { id, sync: false }))
                    .await;
                cleaned += usize::from(removed.is_ok());
            }
        }
        if cleaned > 0 {
            tracing::info!(cleaned, "removed what unfinished builds left");
        }
        drop(guard);
    }
}
