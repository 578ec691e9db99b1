//! Cache records: a step key to the layer it made, one JSON file per key.

use super::*;

impl Job {
    pub(super) fn cache_file(&self, key: &str) -> PathBuf {
        self.svc
            .cache
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    /// A layer an earlier build made for this key, if its blob and snapshot are still here.
    pub(super) async fn cached(&self, key: &str) -> Option<(Value, String, String)> {
        let path = self.cache_file(key);
        let raw = std::fs::read(&path).ok()?;
        let rec: Value = serde_json::from_slice(&raw).ok()?;
        let (layer, diff_id, top) = (
            rec["layer"].clone(),
            rec["diff_id"].as_str()?.to_string(),
            rec["top"].as_str()?.to_string(),
        );
        // Held by this build first, then checked: once both are found, no
        // prune or collection can take them from under the build.
        self.hold(&top, &format!("snapshots/{SNAPSHOTTER}")).await.ok()?;
        self.hold(layer["digest"].as_str()?, "content").await.ok()?;
        ContentClient::new(self.svc.content.clone())
            .info(
                self.plain(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: layer["digest"].as_str()?.to_string(),
                }),
            )
            .await
            .ok()?;
        SnapshotsClient::new(self.svc.snapshotter.clone())
            .stat(self.plain(
                molde_api::containerd::services::snapshots::v1::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: top.clone(),
                },
            ))
            .await
            .ok()?;
        // Used now: the last to be pruned.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some((layer, diff_id, top))
    }

    /// Records a step's layer under its key (written whole, then renamed) and
    /// holds the layer in the cache's lease until the record is pruned.
    pub(super) async fn remember(&self, key: &str, layer: &(Value, String, String)) {
        let mut leases = LeasesClient::new(self.svc.content.clone());
        for (id, kind) in [
            (
                layer.0["digest"].as_str().unwrap_or_default().to_string(),
                "content".to_string(),
            ),
            (layer.2.clone(), format!("snapshots/{SNAPSHOTTER}")),
        ] {
            if leases
                .add_resource(self.plain(AddResourceRequest {
                    id: CACHE_LEASE.into(),
                    resource: Some(Resource { id, r#type: kind }),
                }))
                .await
                .is_err()
            {
                return;
            }
        }
        let rec = json!({ "layer": layer.0, "diff_id": layer.1, "top": layer.2, "namespace": self.ns });
        let path = self.cache_file(key);
        let tmp = path.with_extension("tmp");
        let _ = std::fs::create_dir_all(&self.svc.cache);
        if std::fs::write(&tmp, rec.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}
