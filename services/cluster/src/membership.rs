//! A node's registration: `/molde/nodes/<name>` holds its record, bound to
//! a lease the node renews every few seconds. A node that dies, or loses
//! etcd for longer than the lease, drops out by itself; once etcd answers
//! again the node takes a new lease and registers again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use molde_common::errdefs::Error;
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

/// Why a registration did not happen.
enum Refused {
    /// Another live node holds the name: its record.
    Taken(NodeRecord),
    Etcd(molde_meta::MetaError),
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
    /// Serial numbers (hex) of the revoked certificates, read again each
    /// renewal: the peer listener refuses them.
    revoked: std::sync::RwLock<std::collections::HashSet<String>>,
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

/// What a node needs to register and to keep its record and index fresh.
pub struct Registration {
    pub version: String,
    pub root: PathBuf,
    pub images: ImageCount,
    pub index: Index,
}

impl Membership {
    /// This node of the cluster, not registered yet: see [`Membership::join`].
    pub fn new(store: Arc<EtcdStore>, name: String, address: String) -> Arc<Membership> {
        Arc::new(Membership {
            store,
            name,
            address,
            standing: Mutex::new(Standing::Starting),
            held: Default::default(),
            revoked: Default::default(),
        })
    }

    /// Whether the certificate with this serial (hex) is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&serial.to_ascii_lowercase())
    }

    /// Records a certificate as revoked, for every node.
    pub fn revoke(&self, name: &str, serial: &str, not_after: i64) -> molde_meta::Result<()> {
        let serial = serial.to_ascii_lowercase();
        let value = serde_json::json!({"name": name, "not_after": not_after}).to_string();
        self.store
            .txn(molde_meta::Txn::new().put(format!("{}{serial}", crate::REVOKED), value.into_bytes()))?;
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(serial);
        Ok(())
    }

    fn read_revoked(&self) {
        match self.store.range(crate::REVOKED) {
            Ok(entries) => {
                let set = entries
                    .iter()
                    .filter_map(|e| e.key.strip_prefix(crate::REVOKED).map(str::to_string))
                    .collect();
                *self.revoked.write().unwrap_or_else(|e| e.into_inner()) = set;
            }
            Err(e) => tracing::debug!("reading the revoked certificates: {e}"),
        }
    }

    /// Registers this node — its name is its own only if no other node
    /// holds it — and keeps it registered on a thread of its own for the
    /// life of the process. Called once every listener is bound, so a node
    /// that cannot serve never appears. A name another live node holds is
    /// an error naming that node; an etcd that does not answer now is not
    /// (the node registers when it does).
    pub fn join(self: &Arc<Self>, r: Registration) -> Result<(), Error> {
        let mut lease = None;
        let mut registered = now();
        self.read_revoked();
        match self.register(&r, &mut registered) {
            Ok(l) => {
                lease = Some(l);
                self.set(Standing::Registered);
            }
            Err(Refused::Taken(holder)) => return Err(self.taken(&holder)),
            Err(Refused::Etcd(e)) => self.set(Standing::Unreachable(e.to_string())),
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("cluster-membership".into())
            .spawn(move || me.run(r, lease, registered))
            .map_err(Error::io("starting the membership thread"))?;
        Ok(())
    }

    fn taken(&self, holder: &NodeRecord) -> Error {
        Error::FailedPrecondition(format!(
            "node name {:?} is registered by another molded (advertising {}, registered at {} s since the epoch): \
             stop it or choose another --node-name",
            self.name, holder.address, holder.registered_unix
        ))
    }

    /// A new lease and this node's record under it, created only if no
    /// record of that name exists.
    fn register(&self, r: &Registration, registered: &mut i64) -> Result<i64, Refused> {
        let l = self.store.grant(LEASE_TTL).map_err(Refused::Etcd)?;
        *registered = now();
        let value = serde_json::to_vec(&self.record(r, *registered)).expect("a JSON record");
        if self.store.claim(&self.key(), value, l).map_err(Refused::Etcd)? {
            return Ok(l);
        }
        let _ = self.store.revoke(l);
        let holder = self
            .store
            .get(&self.key())
            .map_err(Refused::Etcd)?
            .and_then(|e| serde_json::from_slice::<NodeRecord>(&e.value).ok());
        match holder {
            Some(h) => Err(Refused::Taken(h)),
            // Gone meanwhile: the next round takes it.
            None => Err(Refused::Etcd(molde_meta::MetaError::Backend(
                "the node's record changed while registering".into(),
            ))),
        }
    }

    fn record(&self, r: &Registration, registered: i64) -> NodeRecord {
        NodeRecord {
            name: self.name.clone(),
            address: self.address.clone(),
            version: r.version.clone(),
            free_disk_bytes: free_disk(&r.root),
            images: (r.images)(),
            registered_unix: registered,
            refreshed_unix: now(),
        }
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

    fn run(&self, r: Registration, mut lease: Option<i64>, mut registered: i64) {
        let mut round = 0u32;
        loop {
            self.read_revoked();
            if lease.is_some() {
                self.publish_round(&r, lease);
            }
            std::thread::sleep(RENEW_EVERY);
            let step = match lease {
                Some(l) => match self.store.keep_alive(l) {
                    Ok(true) => {
                        round += 1;
                        if round.is_multiple_of(REFRESH_EVERY) {
                            let value =
                                serde_json::to_vec(&self.record(&r, registered)).expect("a JSON record");
                            self.store
                                .put_leased(&self.key(), value, l)
                                .map(|_| l)
                                .map_err(Refused::Etcd)
                        } else {
                            Ok(l)
                        }
                    }
                    // It expired while etcd was away: register again.
                    Ok(false) => self.register(&r, &mut registered),
                    Err(e) => Err(Refused::Etcd(e)),
                },
                None => self.register(&r, &mut registered),
            };
            match step {
                Ok(l) => lease = Some(l),
                Err(Refused::Taken(holder)) => {
                    lease = None;
                    self.set(Standing::Unreachable(self.taken(&holder).to_string()));
                }
                Err(Refused::Etcd(e)) => self.set(Standing::Unreachable(e.to_string())),
            }
        }
    }

    /// After a renewal: the index brought in line under the lease held.
    fn publish_round(&self, r: &Registration, lease: Option<i64>) {
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.0 != lease {
                // A new lease: what was published went with the old one.
                held.1.clear();
                held.0 = lease;
            }
        }
        match self.publish(&self.entries(&r.index)) {
            Ok(()) => self.set(Standing::Registered),
            Err(e) => self.set(Standing::Unreachable(e.to_string())),
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
