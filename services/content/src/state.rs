//! State shared by the content service's gRPC handlers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use molde_meta::{Compare, Store, Txn, TxnOutcome};
use tokio::sync::Notify;

use crate::blobs::BlobStore;
use crate::error::{ContentError, Result};
use crate::records::{self, LeaseRecord, NamespaceRecord};

/// Settings of the content service.
#[derive(Debug, Clone)]
pub struct ContentConfig {
    /// Directory that holds `blobs/` and `ingest/`.
    pub root: PathBuf,
    /// An ingest nobody wrote to for this long, and no lease holds, is removed by GC.
    pub ingest_expiry: Duration,
    /// Time between scheduled collections.
    pub gc_interval: Duration,
    /// Delay between a delete and the collection it triggers, so bursts share one.
    pub gc_delay: Duration,
    /// The snapshotter, asked to collect its snapshots after each content collection.
    pub snapshotter: Option<tonic::transport::Channel>,
    /// events.v1, where image events go.
    pub events: Option<molde_common::events::Publisher>,
}

impl ContentConfig {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            ingest_expiry: Duration::from_secs(24 * 3600),
            gc_interval: Duration::from_secs(3600),
            gc_delay: Duration::from_millis(100),
            snapshotter: None,
            events: None,
        }
    }
}

/// Handlers' shared state: metadata, blobs, writer locks and the GC trigger.
pub struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) config: ContentConfig,
    writers: Mutex<HashSet<(String, String)>>,
    /// Commits hold it shared; a collection holds it exclusively, so nothing is
    /// committed between its mark and its sweep.
    pub(crate) gc_lock: RwLock<()>,
    pub(crate) gc_kick: Notify,
}

/// Holds the single-writer lock on an ingest ref until dropped.
pub struct WriterGuard {
    shared: Arc<Shared>,
    key: (String, String),
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, config: ContentConfig) -> Result<Arc<Self>> {
        let blobs = BlobStore::open(&config.root)?;
        Ok(Arc::new(Self {
            store,
            blobs,
            config,
            writers: Mutex::new(HashSet::new()),
            gc_lock: RwLock::new(()),
            gc_kick: Notify::new(),
        }))
    }

    /// Takes the one writer slot of `(ns, reference)`.
    pub fn lock_writer(self: &Arc<Self>, ns: &str, reference: &str) -> Result<WriterGuard> {
        let key = (ns.to_string(), reference.to_string());
        let mut w = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if !w.insert(key.clone()) {
            return Err(ContentError::Locked(reference.to_string()));
        }
        Ok(WriterGuard {
            shared: self.clone(),
            key,
        })
    }

    /// Fails if a writer holds the ref (for short writes done without taking it).
    pub fn ensure_no_writer(&self, ns: &str, reference: &str) -> Result<()> {
        if self.writer_active(ns, reference) {
            return Err(ContentError::Locked(reference.to_string()));
        }
        Ok(())
    }

    pub fn writer_active(&self, ns: &str, reference: &str) -> bool {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(ns.to_string(), reference.to_string()))
    }

    /// Creates the namespace record on first use, as containerd does.
    pub fn ensure_namespace(&self, ns: &str) -> Result<()> {
        let key = records::namespace_key(ns);
        if self.store.get(&key)?.is_none() {
            self.store.txn(
                Txn::new()
                    .when(Compare::absent(key.clone()))
                    .put(key, records::encode(&NamespaceRecord::default())),
            )?;
        }
        Ok(())
    }

    /// Asks for a collection soon (after `gc_delay`).
    pub fn schedule_gc(&self) {
        self.gc_kick.notify_one();
    }

    /// Adds or removes a resource on a lease, retrying on concurrent updates.
    pub fn modify_lease(&self, ns: &str, lease: &str, f: impl Fn(&mut LeaseRecord)) -> Result<()> {
        let key = records::lease_key(ns, lease);
        loop {
            let (mut rec, rev): (LeaseRecord, u64) = records::load(&*self.store, &key)?
                .ok_or_else(|| ContentError::NotFound(format!("lease {lease:?}")))?;
            f(&mut rec);
            let out = self.store.txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .put(key.clone(), records::encode(&rec)),
            )?;
            if let TxnOutcome::Committed { .. } = out {
                return Ok(());
            }
        }
    }

    /// Verifies and moves an ingest into place, then records it in the namespace
    /// (and in `lease`). Holds the GC lock shared throughout so a collection
    /// cannot sweep the blob between its rename and its record. Content the
    /// namespace already has is `AlreadyExists` (after the lease holds it too).
    pub fn commit(
        &self,
        ns: &str,
        lease: Option<&str>,
        ingest: crate::blobs::Ingest,
        size: i64,
        expected: Option<&molde_common::Digest>,
        labels: records::Labels,
    ) -> Result<molde_common::Digest> {
        let _gc = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        // A failed check leaves the ingest on disk so the client can resume or abort.
        let (digest, size) = ingest.commit(&self.blobs, size, expected)?;
        let created = self.record_content(ns, lease, &digest, size, labels)?;
        if !created {
            return Err(ContentError::AlreadyExists(format!("content {digest}")));
        }
        tracing::info!(namespace = %ns, %digest, size, "content committed");
        Ok(digest)
    }

    /// Gives `ns` a record of a blob that is on disk; false if it had one.
    /// The caller holds the GC lock.
    pub(crate) fn record_content(
        &self,
        ns: &str,
        lease: Option<&str>,
        digest: &molde_common::Digest,
        size: i64,
        labels: records::Labels,
    ) -> Result<bool> {
        self.ensure_namespace(ns)?;
        let key = records::content_key(ns, &digest.to_string());
        let now = molde_common::now_nanos();
        let rec = records::ContentRecord {
            size,
            created_at: now,
            updated_at: now,
            labels,
        };
        let out = self.store.txn(
            Txn::new()
                .when(Compare::absent(key.clone()))
                .put(key, records::encode(&rec)),
        )?;
        if let Some(lease) = lease {
            let d = digest.to_string();
            self.modify_lease(ns, lease, |l| {
                l.resources.insert(("content".into(), d.clone()));
            })?;
        }
        Ok(out != TxnOutcome::CompareFailed)
    }

    /// Adds labels to content the namespace holds.
    pub fn set_labels(
        &self,
        ns: &str,
        digest: &str,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<()> {
        let key = records::content_key(ns, digest);
        loop {
            let (mut rec, rev): (records::ContentRecord, u64) = records::load(&*self.store, &key)?
                .ok_or_else(|| ContentError::NotFound(format!("content {digest}")))?;
            rec.labels.extend(labels.clone());
            rec.updated_at = molde_common::now_nanos();
            let out = self.store.txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .put(key.clone(), records::encode(&rec)),
            )?;
            if out != TxnOutcome::CompareFailed {
                return Ok(());
            }
        }
    }

    /// Points image `name` at `target`, creating or updating its record.
    pub fn put_image(&self, ns: &str, name: &str, target: records::DescriptorRecord) -> Result<()> {
        molde_common::reference::check_name(name)?;
        self.ensure_namespace(ns)?;
        let key = records::image_key(ns, name);
        let now = molde_common::now_nanos();
        loop {
            let existing: Option<(records::ImageRecord, u64)> = records::load(&*self.store, &key)?;
            let (rec, cmp) = match existing {
                Some((mut r, rev)) => {
                    r.target = target.clone();
                    r.updated_at = now;
                    (r, Compare::ModRevision(key.clone(), rev))
                }
                None => (
                    records::ImageRecord {
                        target: target.clone(),
                        labels: Default::default(),
                        created_at: now,
                        updated_at: now,
                    },
                    Compare::absent(key.clone()),
                ),
            };
            if self
                .store
                .txn(Txn::new().when(cmp).put(key.clone(), records::encode(&rec)))?
                != TxnOutcome::CompareFailed
            {
                return Ok(());
            }
        }
    }

    /// Fails unless the lease exists.
    pub fn check_lease(&self, ns: &str, lease: &str) -> Result<()> {
        match self.store.get(&records::lease_key(ns, lease))? {
            Some(_) => Ok(()),
            None => Err(ContentError::NotFound(format!("lease {lease:?}"))),
        }
    }
}
