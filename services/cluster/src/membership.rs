//! A node's registration: `/molde/nodes/<name>` holds its record, bound to
//! a lease the node renews every few seconds. A node that dies, or loses
//! etcd for longer than the lease, drops out by itself; once etcd answers
//! again the node takes a new lease and registers again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molde_meta::{EtcdStore, Store};
use serde::{Deserialize, Serialize};

/// How long a node stays listed after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often a node renews its lease (and brings its blob index in line).
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Every how many renewals a node rewrites its record (free disk, image
/// count): etcd's write load grows with the nodes, so the record is
/// refreshed less often than the lease.
pub const REFRESH_EVERY: u32 = 8;

/// Index entries: etcd key → value.
type Entries = BTreeMap<String, Vec<u8>>;

/// What a node publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    pub address: String,
    pub version: String,
    pub free_disk_bytes: u64,
    pub images: u64,
    pub registered_unix: i64,
    pub refreshed_unix: i64,
}

/// How the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Starting,
    Registered,
    /// etcd did not answer: why.
    Unreachable(String),
}

pub struct Membership {
    pub store: Arc<EtcdStore>,
    pub name: String,
    pub address: String,
    standing: Mutex<Standing>,
    /// The lease this node holds now, and what it published under it: its
    /// index entries (blobs, build-cache records), etcd key → value.
    held: Mutex<(Option<i64>, Entries)>,
}

/// What the node counts of itself each time it refreshes its record.
pub type ImageCount = Box<dyn Fn() -> u64 + Send + Sync>;

/// The blobs the node holds now: digest → a namespace that has it.
pub type LocalBlobs = Box<dyn Fn() -> BTreeMap<String, String> + Send + Sync>;

/// The node's build-cache records now: step key (hex) → the record.
pub type LocalBuildCache = Box<dyn Fn() -> BTreeMap<String, Vec<u8>> + Send + Sync>;

/// What the node lists of itself in the cluster's index.
pub struct Index {
    pub blobs: LocalBlobs,
    pub build_cache: LocalBuildCache,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn free_disk(root: &PathBuf) -> u64 {
    rustix::fs::statvfs(root)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .unwrap_or(0)
}

impl Membership {
    /// Registers this node and keeps it registered, on a thread of its own,
    /// for the life of the process.
    pub fn start(
        store: Arc<EtcdStore>,
        name: String,
        address: String,
        version: String,
        root: PathBuf,
        images: ImageCount,
        index: Index,
    ) -> Arc<Membership> {
        let m = Arc::new(Membership {
            store,
            name,
            address,
            standing: Mutex::new(Standing::Starting),
            held: Default::default(),
        });
        let me = m.clone();
        std::thread::Builder::new()
            .name("cluster-membership".into())
            .spawn(move || me.run(version, root, images, index))
            .expect("starting the membership thread");
        m
    }

    pub fn standing(&self) -> Standing {
        self.standing.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: Standing) {
        let mut cur = self.standing.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != s {
            match &s {
                Standing::Registered => tracing::info!(node = %self.name, "registered in the cluster"),
                Standing::Unreachable(why) => tracing::warn!(node = %self.name, "cluster: {why}"),
                Standing::Starting => {}
            }
        }
        *cur = s;
    }

    fn key(&self) -> String {
        format!("{}{}", crate::NODES, self.name)
    }

    fn run(&self, version: String, root: PathBuf, images: ImageCount, index: Index) {
        let mut lease: Option<i64> = None;
        let mut registered = now();
        let mut round = 0u32;
        loop {
            let record = |registered| NodeRecord {
                name: self.name.clone(),
                address: self.address.clone(),
                version: version.clone(),
                free_disk_bytes: free_disk(&root),
                images: images(),
                registered_unix: registered,
                refreshed_unix: now(),
            };
            let mut step = || -> molde_meta::Result<Option<i64>> {
                match lease {
                    Some(l) if self.store.keep_alive(l)? => {
                        round += 1;
                        if round.is_multiple_of(REFRESH_EVERY) {
                            let value = serde_json::to_vec(&record(registered)).expect("a JSON record");
                            self.store.put_leased(&self.key(), value, l)?;
                        }
                        Ok(Some(l))
                    }
                    // No lease yet, or it expired while etcd was away.
                    _ => {
                        let l = self.store.grant(LEASE_TTL)?;
                        registered = now();
                        let value = serde_json::to_vec(&record(registered)).expect("a JSON record");
                        self.store.put_leased(&self.key(), value, l)?;
                        Ok(Some(l))
                    }
                }
            };
            match step() {
                Ok(l) => {
                    lease = l;
                    {
                        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                        if held.0 != lease {
                            // A new lease: what was published went with the old one.
                            held.1.clear();
                            held.0 = lease;
                        }
                    }
                    match self.publish(&self.entries(&index)) {
                        Ok(()) => self.set(Standing::Registered),
                        Err(e) => self.set(Standing::Unreachable(e.to_string())),
                    }
                }
                Err(e) => self.set(Standing::Unreachable(e.to_string())),
            }
            std::thread::sleep(RENEW_EVERY);
        }
    }

    /// The index entries that say what this node holds now.
    fn entries(&self, index: &Index) -> BTreeMap<String, Vec<u8>> {
        let mut all: BTreeMap<String, Vec<u8>> = (index.blobs)()
            .into_iter()
            .map(|(digest, ns)| (self.blob_key(&digest), ns.into_bytes()))
            .collect();
        all.extend(
            (index.build_cache)()
                .into_iter()
                .map(|(key, record)| (format!("{}{key}/{}", crate::BUILD_CACHE, self.name), record)),
        );
        all
    }

    /// Brings this node's index entries (`/molde/blobs/<digest>/<node>`,
    /// `/molde/build-cache/<key>/<node>`, bound to its lease) in line with
    /// what it holds: new ones added, changed ones rewritten, gone ones
    /// deleted — also those whose delete failed while etcd was away — so
    /// the index never names what the node lost.
    fn publish(&self, now: &BTreeMap<String, Vec<u8>>) -> molde_meta::Result<()> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lease) = held.0 else {
            return Ok(());
        };
        // New and changed entries, in transactions of many.
        let new: Vec<(String, Vec<u8>)> = now
            .iter()
            .filter(|(k, v)| held.1.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (put, result) = self.store.put_leased_many(&new, lease);
        for (k, v) in new.into_iter().take(put) {
            held.1.insert(k, v);
        }
        result?;
        let gone: Vec<String> = held.1.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        for chunk in gone.chunks(molde_meta::TXN_OPS) {
            let txn = chunk
                .iter()
                .fold(molde_meta::Txn::new(), |t, k| t.delete(k.clone()));
            self.store.txn(txn)?;
            for k in chunk {
                held.1.remove(k);
            }
        }
        Ok(())
    }

    fn blob_key(&self, digest: &str) -> String {
        format!("{}{digest}/{}", crate::BLOBS, self.name)
    }

    /// This node's current lease, when it is registered.
    pub fn lease(&self) -> Option<i64> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Publishes one blob now (it was just committed), ahead of the next renewal.
    pub fn publish_one(&self, digest: &str, ns: &str) -> molde_meta::Result<()> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let Some(lease) = held.0 else {
            return Ok(());
        };
        let key = self.blob_key(digest);
        self.store.put_leased(&key, ns.as_bytes().to_vec(), lease)?;
        held.1.insert(key, ns.as_bytes().to_vec());
        Ok(())
    }

    /// The nodes registered now.
    pub fn nodes(&self) -> molde_meta::Result<Vec<NodeRecord>> {
        Ok(self
            .store
            .range(crate::NODES)?
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.value).ok())
            .collect())
    }
}
