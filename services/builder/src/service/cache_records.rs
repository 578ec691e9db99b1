//! Cache records: a step key to the layer it made, one JSON file per key.

use super::*;
use molde_common::errdefs::OrLog;

/// What `<root>/build-cache/<key>.json` holds: the layer a step made.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct CacheRecord {
    pub layer: oci_spec::image::Descriptor,
    pub diff_id: String,
    /// The chain ID of the snapshot the step left.
    pub top: String,
    /// The namespace whose lease holds the layer.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

/// Every cache record in `dir` (the service's `cache`), by step key (hex),
/// as stored: what a node advertises to its cluster. The builder's files
/// are read only here.
pub fn local_cache_records(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            Some((name, std::fs::read(e.path()).ok()?))
        })
        .collect()
}

fn default_namespace() -> String {
    "default".into()
}

impl CacheRecord {
    pub(super) fn read(path: &Path) -> Option<CacheRecord> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    pub(super) fn digest(&self) -> String {
        self.layer.digest().to_string()
    }
}

impl Job {
    pub(super) fn cache_file(&self, key: &str) -> PathBuf {
        self.svc
            .cache
            .join(format!("{}.json", key.trim_start_matches("sha256:")))
    }

    /// A layer an earlier build made for this key, if its blob and snapshot are still here.
    pub(super) async fn cached(&self, key: &str) -> Option<Layer> {
        let path = self.cache_file(key);
        let rec = CacheRecord::read(&path)?;
        let digest = rec.digest();
        let top = rec.top.clone();
        // Held by this build first, then checked: once both are found, no
        // prune or collection can take them from under the build.
        self.hold(&top, &format!("snapshots/{SNAPSHOTTER}")).await.ok()?;
        self.hold(&digest, "content").await.ok()?;
        ContentClient::new(self.svc.content.clone())
            .info(self.plain(molde_api::containerd::services::content::v1::InfoRequest { digest }))
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
        Some(Layer {
            descriptor: rec.layer,
            diff_id: rec.diff_id,
            chain_id: rec.top,
        })
    }

    /// A layer for this key from this node's cache, else from the cluster's:
    /// a step another node built, its layer taken from a node that holds it
    /// and stacked on `parent` here (then recorded in this node's cache).
    pub(super) async fn cached_anywhere(&self, key: &str, parent: &str) -> Option<Layer> {
        if let Some(layer) = self.cached(key).await {
            return Some(layer);
        }
        let shared = self.svc.shared_cache.as_ref()?;
        for raw in shared.lookup(key).await {
            let Ok(rec) = serde_json::from_slice::<CacheRecord>(&raw) else {
                tracing::warn!(key, "an unreadable build-cache record in the cluster; skipped");
                continue;
            };
            match self.bring_from_cluster(shared.as_ref(), &rec, parent).await {
                Ok(layer) => {
                    tracing::info!(key, layer = %layer.descriptor.digest(), "build step taken from the cluster's build cache");
                    self.remember(key, &layer).await;
                    return Some(layer);
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "a build-cache record of the cluster could not be used")
                }
            }
        }
        None
    }

    /// The layer `rec` names, brought here (unless it is) and stacked on
    /// `parent`; what it unpacks to must be the record's diff ID.
    async fn bring_from_cluster(
        &self,
        shared: &dyn molde_common::store::SharedBuildCache,
        rec: &CacheRecord,
        parent: &str,
    ) -> Result<Layer, Error> {
        let digest = rec.digest();
        self.hold(&digest, "content").await?;
        let here = ContentClient::new(self.svc.content.clone())
            .info(
                self.plain(molde_api::containerd::services::content::v1::InfoRequest {
                    digest: digest.clone(),
                }),
            )
            .await
            .is_ok();
        if !here
            && !shared
                .fetch(&self.ns, &self.lease, &digest, rec.layer.size() as i64)
                .await?
        {
            return Err(Error::NotFound(format!("no node gave layer {digest}")));
        }
        let layer = Layer {
            descriptor: rec.layer.clone(),
            diff_id: rec.diff_id.clone(),
            chain_id: String::new(),
        };
        self.stack(layer, parent).await
    }

    /// Records a step's layer under its key (written whole, then renamed) and
    /// holds the layer in the cache's lease until the record is pruned.
    pub(super) async fn remember(&self, key: &str, layer: &Layer) {
        let rec = CacheRecord {
            layer: layer.descriptor.clone(),
            diff_id: layer.diff_id.clone(),
            top: layer.chain_id.clone(),
            namespace: self.ns.clone(),
        };
        let mut leases = LeasesClient::new(self.svc.content.clone());
        for (id, kind) in [
            (rec.digest(), "content".to_string()),
            (rec.top.clone(), format!("snapshots/{SNAPSHOTTER}")),
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
        let path = self.cache_file(key);
        let tmp = path.with_extension("tmp");
        std::fs::create_dir_all(&self.svc.cache).or_log("creating the build cache directory");
        let written = serde_json::to_vec(&rec)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(key, error = %e, "could not record the step in the build cache");
        }
    }
}
