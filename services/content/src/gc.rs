//! Garbage collection: mark from the roots, sweep what is unreachable.
//!
//! Roots, per namespace: every image's target, every resource of a live lease,
//! and content labelled `containerd.io/gc.root`. References: a label whose key
//! starts with `containerd.io/gc.ref.content` names (by digest) content the
//! labelled object holds; marking follows them transitively.
//!
//! Sweep: unreachable content records are removed from their namespace, then a
//! blob file is removed once no namespace has a record for it. Ingests no lease
//! holds and nobody wrote to for `ingest_expiry` are removed. Leases past their
//! `containerd.io/gc.expire` time are removed before marking.
//!
//! **Architecture invariant:** GC never removes what a live lease, an image or a
//! gc.ref label holds. The mark and the sweep run under the GC lock held
//! exclusively; commits hold it shared, so no blob lands between mark and sweep.
//!
//! A collection runs shortly after deletes (debounced), on a timer, on a
//! `sync` delete, and on request through molde's gc.v1 API.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use molde_api::molde::services::gc::v1 as api;
use molde_meta::Txn;
use tonic::{Request, Response, Status};

use crate::error::Result;
use crate::records::{self, ContentRecord, GC_REF_CONTENT, GC_ROOT, ImageRecord, LeaseRecord};
use crate::state::Shared;

/// What one collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcStats {
    pub content_records: u64,
    pub blobs: u64,
    pub ingests: u64,
    pub leases: u64,
    pub duration: Duration,
}

fn label_refs(labels: &records::Labels) -> impl Iterator<Item = &String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(GC_REF_CONTENT))
        .map(|(_, v)| v)
}

/// One full mark-and-sweep pass over every namespace.
pub fn collect(shared: &Shared) -> Result<GcStats> {
    let start = Instant::now();
    molde_common::metrics::GC_RUNS.add(1);
    let _exclusive = shared.gc_lock.write().unwrap_or_else(|p| p.into_inner());
    let store = &*shared.store;
    let now = chrono::Utc::now();
    let mut stats = GcStats::default();
    // (namespace, ref) of ingests a live lease holds.
    let mut held_ingests: HashSet<(String, String)> = HashSet::new();
    // Digests with a record left in some namespace after the sweep.
    let mut live_blobs: HashSet<String> = HashSet::new();

    for ns in records::namespaces(store)? {
        let mut roots: VecDeque<String> = VecDeque::new();
        let mut txn = Txn::new();

        let lp = records::leases_prefix(&ns);
        for e in store.range(&lp)? {
            let lease: LeaseRecord = records::decode(&e)?;
            if lease.expired(now) {
                txn = txn.delete(e.key.clone());
                stats.leases += 1;
                continue;
            }
            for (kind, id) in &lease.resources {
                match kind.as_str() {
                    "content" => roots.push_back(id.clone()),
                    "ingests" => {
                        held_ingests.insert((ns.clone(), id.clone()));
                    }
                    _ => {}
                }
            }
        }

        for e in store.range(&records::images_prefix(&ns))? {
            let img: ImageRecord = records::decode(&e)?;
            roots.push_back(img.target.digest.clone());
            roots.extend(label_refs(&img.labels).cloned());
        }

        let cp = records::content_prefix(&ns);
        let mut content: BTreeMap<String, (String, ContentRecord)> = BTreeMap::new();
        for e in store.range(&cp)? {
            let rec: ContentRecord = records::decode(&e)?;
            let digest = e.key[cp.len()..].to_string();
            if rec.labels.contains_key(GC_ROOT) {
                roots.push_back(digest.clone());
            }
            content.insert(digest, (e.key.clone(), rec));
        }

        let mut marked: HashSet<String> = HashSet::new();
        while let Some(d) = roots.pop_front() {
            if !marked.insert(d.clone()) {
                continue;
            }
            if let Some((_, rec)) = content.get(&d) {
                roots.extend(label_refs(&rec.labels).cloned());
            }
        }

        for (digest, (key, _)) in &content {
            if marked.contains(digest) {
                live_blobs.insert(digest.clone());
            } else {
                txn = txn.delete(key.clone());
                stats.content_records += 1;
                tracing::debug!(namespace = %ns, %digest, "gc: content unreferenced");
            }
        }
        if !txn.ops.is_empty() {
            store.txn(txn)?;
        }
    }

    for digest in shared.blobs.list_blobs()? {
        if !live_blobs.contains(&digest.to_string()) {
            shared.blobs.remove_blob(&digest)?;
            stats.blobs += 1;
            molde_common::metrics::GC_BLOBS_REMOVED.add(1);
        }
    }

    let expiry = shared.config.ingest_expiry;
    for (dir, st) in shared.blobs.list_ingests()? {
        let remove = match &st {
            Ok(st) => {
                let key = (st.meta.namespace.clone(), st.meta.reference.clone());
                let idle = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|n| n.as_nanos() as i64 - st.updated_at)
                    .unwrap_or(0);
                !held_ingests.contains(&key)
                    && !shared.writer_active(&key.0, &key.1)
                    && idle > expiry.as_nanos() as i64
            }
            // A directory without readable metadata: a crash while creating it.
            Err(_) => dir
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > expiry),
        };
        if remove {
            let _ = std::fs::remove_dir_all(&dir);
            stats.ingests += 1;
        }
    }

    stats.duration = start.elapsed();
    if stats
        != (GcStats {
            duration: stats.duration,
            ..Default::default()
        })
    {
        tracing::info!(
            content_records = stats.content_records,
            blobs = stats.blobs,
            ingests = stats.ingests,
            leases = stats.leases,
            micros = stats.duration.as_micros() as u64,
            "garbage collected"
        );
    }
    Ok(stats)
}

/// Runs a collection on a blocking thread, then asks the snapshotter to
/// collect what the removed content held (snapshots.v1 Cleanup).
pub async fn collect_blocking(shared: Arc<Shared>) -> std::result::Result<GcStats, Status> {
    let s = shared.clone();
    let stats = tokio::task::spawn_blocking(move || collect(&s))
        .await
        .map_err(|e| Status::internal(format!("garbage collection panicked: {e}")))?
        .map_err(Status::from)?;
    if let Some(ch) = &shared.config.snapshotter {
        use molde_api::containerd::services::snapshots::v1::{
            CleanupRequest, snapshots_client::SnapshotsClient,
        };
        for name in ["overlayfs", "native"] {
            if let Err(e) = SnapshotsClient::new(ch.clone())
                .cleanup(CleanupRequest {
                    snapshotter: name.into(),
                })
                .await
            {
                tracing::warn!(snapshotter = name, error = %e.message(), "snapshot collection failed");
            }
        }
    }
    Ok(stats)
}

/// Collects after each kick (debounced by `gc_delay`) and every `gc_interval`.
pub async fn run_scheduler(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(shared.config.gc_interval);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = shared.gc_kick.notified() => tokio::time::sleep(shared.config.gc_delay).await,
            _ = interval.tick() => {}
        }
        if let Err(e) = collect_blocking(shared.clone()).await {
            tracing::warn!(error = %e, "garbage collection failed");
        }
    }
}

/// molde.services.gc.v1.GC
#[derive(Clone)]
pub struct GcService {
    pub(crate) shared: Arc<Shared>,
}

impl GcService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl api::gc_server::Gc for GcService {
    async fn collect(
        &self,
        _req: Request<api::CollectRequest>,
    ) -> std::result::Result<Response<api::CollectResponse>, Status> {
        let s = collect_blocking(self.shared.clone()).await?;
        Ok(Response::new(api::CollectResponse {
            content_records: s.content_records,
            blobs: s.blobs,
            ingests: s.ingests,
            leases: s.leases,
            duration_us: s.duration.as_micros() as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Labels, content_key, image_key, lease_key};
    use molde_meta::{RedbStore, Store};

    fn setup() -> (tempfile::TempDir, Arc<Shared>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
        let mut cfg = crate::ContentConfig::new(dir.path().join("content"));
        cfg.ingest_expiry = Duration::from_secs(3600);
        let shared = Shared::new(store, cfg).unwrap();
        shared.ensure_namespace("default").unwrap();
        (dir, shared)
    }

    fn put_blob(shared: &Shared, data: &[u8], labels: Labels) -> String {
        let mut w = shared
            .blobs
            .open_ingest("default", &format!("r-{}", hex::encode(data)), 0, None)
            .unwrap();
        w.append(data).unwrap();
        let (d, size) = w.commit(&shared.blobs, 0, None).unwrap();
        let rec = ContentRecord {
            size,
            created_at: 0,
            updated_at: 0,
            labels,
        };
        shared
            .store
            .txn(Txn::new().put(content_key("default", &d.to_string()), records::encode(&rec)))
            .unwrap();
        d.to_string()
    }

    #[test]
    fn follows_refs_from_images_and_roots() {
        let (_d, shared) = setup();
        let layer = put_blob(&shared, b"layer", Labels::new());
        let manifest = put_blob(
            &shared,
            b"manifest",
            Labels::from([(format!("{GC_REF_CONTENT}.l.0"), layer.clone())]),
        );
        let pinned = put_blob(
            &shared,
            b"pinned",
            Labels::from([(GC_ROOT.to_string(), "x".to_string())]),
        );
        let orphan = put_blob(&shared, b"orphan", Labels::new());
        let img = ImageRecord {
            target: records::DescriptorRecord {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: manifest.clone(),
                size: 8,
                annotations: Labels::new(),
            },
            labels: Labels::new(),
            created_at: 0,
            updated_at: 0,
        };
        shared
            .store
            .txn(Txn::new().put(image_key("default", "img"), records::encode(&img)))
            .unwrap();
        let s = collect(&shared).unwrap();
        assert_eq!((s.content_records, s.blobs), (1, 1));
        for live in [&layer, &manifest, &pinned] {
            assert!(
                shared.blobs.blob_exists(&live.parse().unwrap()),
                "{live} must survive"
            );
        }
        assert!(!shared.blobs.blob_exists(&orphan.parse().unwrap()));
    }

    #[test]
    fn leases_hold_until_expired() {
        let (_d, shared) = setup();
        let held = put_blob(&shared, b"held", Labels::new());
        let lease = LeaseRecord {
            created_at: 0,
            labels: Labels::new(),
            resources: [("content".to_string(), held.clone())].into(),
        };
        shared
            .store
            .txn(Txn::new().put(lease_key("default", "l1"), records::encode(&lease)))
            .unwrap();
        collect(&shared).unwrap();
        assert!(shared.blobs.blob_exists(&held.parse().unwrap()));

        let mut expired = lease.clone();
        expired
            .labels
            .insert(records::GC_EXPIRE.into(), "2001-01-01T00:00:00Z".into());
        shared
            .store
            .txn(Txn::new().put(lease_key("default", "l1"), records::encode(&expired)))
            .unwrap();
        let s = collect(&shared).unwrap();
        assert_eq!(s.leases, 1);
        assert!(!shared.blobs.blob_exists(&held.parse().unwrap()));
    }
}
