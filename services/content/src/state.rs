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
}

impl ContentConfig {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            ingest_expiry: Duration::from_secs(24 * 3600),
            gc_interval: Duration::from_secs(3600),
            gc_delay: Duration::from_millis(100),
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

    /// Fails unless the lease exists.
    pub fn check_lease(&self, ns: &str, lease: &str) -> Result<()> {
        match self.store.get(&records::lease_key(ns, lease))? {
            Some(_) => Ok(()),
            None => Err(ContentError::NotFound(format!("lease {lease:?}"))),
        }
    }
}
