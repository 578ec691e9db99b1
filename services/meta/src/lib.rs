//! molde's metadata store.
//!
//! Services keep their records (content labels, images, leases, namespaces) as
//! keys and values behind the [`Store`] trait. The trait's shape is the one etcd
//! gives: ranged reads by prefix, a per-key modification revision, atomic
//! transactions guarded by revision compares, and watches on a prefix. The
//! embedded default is [`RedbStore`]; cluster mode puts etcd behind the same trait.
//!
//! [`filter`] implements containerd's list filter syntax over any record.

#[cfg(feature = "etcd")]
mod etcd_store;
pub mod filter;
pub mod keys;
#[cfg(feature = "redb")]
mod redb_store;

#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdAccess, EtcdStore, TXN_OPS};
#[cfg(feature = "redb")]
pub use redb_store::RedbStore;

/// One key with its value and the revision of the transaction that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// Store-wide revision of the last write to this key; never 0 for a present key.
    pub mod_revision: u64,
}

/// A guard a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's modification revision equals this; 0 means the key is absent.
    ModRevision(String, u64),
}

impl Compare {
    /// The key must not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::ModRevision(key.into(), 0)
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
    /// Delete every key that starts with the prefix.
    DeletePrefix(String),
}

/// Compares and writes applied atomically: all writes happen only if every compare holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put(key.into(), value));
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.ops.push(Op::DeletePrefix(prefix.into()));
        self
    }
}

/// What a committed transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every compare held; the writes were applied at this revision.
    Committed { revision: u64 },
    /// A compare failed; nothing was written.
    CompareFailed,
}

/// A change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Entry),
    Delete { key: String, revision: u64 },
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database {path}: {message}")]
    Open { path: String, message: String },
    #[error("metadata store: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, MetaError>;

/// The metadata store every service keeps its records in.
pub trait Store: Send + Sync + 'static {
    /// The value of one key.
    fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Every key starting with `prefix`, in key order.
    fn range(&self, prefix: &str) -> Result<Vec<Entry>>;
    /// Applies `txn` atomically.
    fn txn(&self, txn: Txn) -> Result<TxnOutcome>;
    /// Changes under `prefix` committed after this call.
    fn watch(&self, prefix: &str) -> tokio::sync::mpsc::UnboundedReceiver<Event>;
}
