//! Keeping the build cache within its size: records dropped least recently used first, their layers released to garbage collection.

use super::cache_records::CacheRecord;
use super::*;
use molde_common::errdefs::OrLog;

/// One prune at a time.
static PRUNE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl BuilderService {
    /// Drops cache records, least recently used first, until the layers the
    /// rest hold take at most `keep` bytes (none are kept with `all`).
    pub(super) async fn prune_cache(&self, all: bool, keep: u64) -> Result<api::PruneResponse, Error> {
        let _guard = PRUNE.lock().await;
        let mut records: Vec<(std::time::SystemTime, PathBuf, CacheRecord)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.cache) {
            for e in dir.flatten() {
                let path = e.path();
                if path.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let Some(rec) = CacheRecord::read(&path) else {
                    tracing::warn!(record = %path.display(), "an unreadable build cache record is left as it is");
                    continue;
                };
                let used = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                records.push((used, path, rec));
            }
        }
        // Newest first: they are the ones kept.
        records.sort_by_key(|r| std::cmp::Reverse(r.0));
        let size = |r: &CacheRecord| r.layer.size();
        let mut kept_bytes = 0u64;
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for (_, path, rec) in records {
            if !all && kept_bytes + size(&rec) <= keep {
                kept_bytes += size(&rec);
                kept.push(rec);
            } else {
                dropped.push((path, rec));
            }
        }
        let mut resp = api::PruneResponse {
            kept_bytes,
            ..Default::default()
        };
        for (path, rec) in &dropped {
            if std::fs::remove_file(path).is_err() {
                continue;
            }
            resp.removed += 1;
            resp.freed_bytes += size(rec);
            let ns = rec.namespace.as_str();
            let digest = rec.digest();
            // Another record may hold the same layer.
            let held_content = kept.iter().any(|k| k.namespace == ns && k.digest() == digest);
            let held_snapshot = kept.iter().any(|k| k.namespace == ns && k.top == rec.top);
            let mut leases = LeasesClient::new(self.content.clone());
            let resources = [
                (held_content, digest.clone(), "content".to_string()),
                (held_snapshot, rec.top.clone(), format!("snapshots/{SNAPSHOTTER}")),
            ];
            for (shared, id, kind) in resources {
                if shared {
                    continue;
                }
                let resource = Some(Resource { id, r#type: kind });
                leases
                    .delete_resource(self.plain(
                        ns,
                        DeleteResourceRequest {
                            id: CACHE_LEASE.into(),
                            resource,
                        },
                    ))
                    .await
                    .or_log("releasing a pruned layer from the cache lease");
            }
        }
        if resp.removed > 0 {
            GcClient::new(self.content.clone())
                .collect(Request::new(CollectRequest {}))
                .await
                .or_log("collecting after a prune");
        }
        if all {
            let _ = std::fs::remove_dir_all(&self.cache_mounts);
        }
        Ok(resp)
    }
}
