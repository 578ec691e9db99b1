//! The snapshotter's core: snapshot records in the metadata store and their
//! directories (`store.rs`), for overlayfs and native. The snapshots.v1
//! service (`snapshots.rs`), the diff service and garbage collection (`gc.rs`)
//! all act through this type.

use std::path::PathBuf;
use std::sync::Arc;

use molde_common::labels::{self, Labels};
use molde_common::now_nanos;
use molde_meta::{Compare, Store, Txn, TxnOutcome};

use crate::error::{Result, SnapshotError};
use crate::store::{self, DEFERRED_PARENT, Dirs, Driver, Kind, SnapshotRecord};

/// State shared by the snapshots and diff services.
pub struct Snapshotter {
    pub(crate) store: Arc<dyn Store>,
    overlay: Dirs,
    native: Dirs,
    /// Held while a snapshot's directory exists without its record (create),
    /// and while cleanup looks for directories without records.
    dirs_lock: std::sync::Mutex<()>,
}

impl Snapshotter {
    pub fn new(store: Arc<dyn Store>, root: &std::path::Path) -> Result<Arc<Self>> {
        store::index_namespaces(&*store)?;
        Ok(Arc::new(Self {
            store,
            overlay: Dirs::new(root, Driver::Overlay)?,
            native: Dirs::new(root, Driver::Native)?,
            dirs_lock: std::sync::Mutex::new(()),
        }))
    }

    pub fn dirs(&self, d: Driver) -> &Dirs {
        match d {
            Driver::Overlay => &self.overlay,
            Driver::Native => &self.native,
        }
    }

    /// Every directory a snapshot may live in: Apply refuses targets elsewhere.
    pub fn roots(&self) -> [&std::path::Path; 2] {
        [&self.overlay.root, &self.native.root]
    }

    pub(crate) fn get(&self, ns: &str, d: Driver, key: &str) -> Result<(SnapshotRecord, u64)> {
        store::load(&*self.store, ns, d, key)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {key:?}")))
    }

    /// The fs directories of `parent` and its ancestors, top first.
    pub(crate) fn lowers(&self, ns: &str, d: Driver, parent: &str) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut next = parent.to_string();
        while !next.is_empty() {
            let (rec, _) = self.get(ns, d, &next)?;
            out.push(self.dirs(d).fs(&rec.id));
            next = rec.parent;
            if out.len() > 500 {
                return Err(SnapshotError::FailedPrecondition(format!(
                    "snapshot {parent:?}: parent chain too deep"
                )));
            }
        }
        Ok(out)
    }

    pub(crate) fn mounts_of(
        &self,
        ns: &str,
        d: Driver,
        rec: &SnapshotRecord,
    ) -> Result<Vec<molde_api::containerd::types::Mount>> {
        let lowers = self.lowers(ns, d, &rec.parent)?;
        Ok(store::mounts(d, self.dirs(d), rec, &lowers))
    }

    pub(crate) fn create(
        &self,
        ns: &str,
        d: Driver,
        key: &str,
        parent: &str,
        kind: Kind,
        labels: Labels,
    ) -> Result<Vec<molde_api::containerd::types::Mount>> {
        if key.is_empty() {
            return Err(SnapshotError::InvalidArgument("snapshot key is required".into()));
        }
        labels::validate(&labels)?;
        if !parent.is_empty() {
            let (p, _) = store::load(&*self.store, ns, d, parent)?
                .ok_or_else(|| SnapshotError::NotFound(format!("parent snapshot {parent:?}")))?;
            if p.kind != Kind::Committed {
                return Err(SnapshotError::FailedPrecondition(format!(
                    "parent snapshot {parent:?} is not committed"
                )));
            }
        }
        if store::load(&*self.store, ns, d, key)?.is_some() {
            return Err(SnapshotError::AlreadyExists(format!("snapshot {key:?}")));
        }
        let _dirs = self.dirs_lock.lock().unwrap_or_else(|p| p.into_inner());
        let dirs = self.dirs(d);
        // Short ids keep an overlay's options short (one page holds them all,
        // see molde-bundle's mount): 12 hex digits, a new draw on a collision.
        let id = loop {
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
            match std::fs::create_dir(dirs.snapshot_dir(&id)) {
                Ok(()) => break id,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(SnapshotError::io(format!(
                        "creating {}",
                        dirs.snapshot_dir(&id).display()
                    ))(e));
                }
            }
        };
        let fs = dirs.fs(&id);
        std::fs::create_dir_all(&fs).map_err(SnapshotError::io(format!("creating {}", fs.display())))?;
        if d == Driver::Overlay {
            std::fs::create_dir_all(dirs.work(&id))
                .map_err(SnapshotError::io("creating overlay work dir"))?;
        }
        if d == Driver::Native && !parent.is_empty() {
            let (p, _) = self.get(ns, d, parent)?;
            copy_tree(&dirs.fs(&p.id), &fs)?;
        }
        let now = now_nanos();
        let rec = SnapshotRecord {
            id,
            kind,
            parent: parent.to_string(),
            labels,
            created_at: now,
            updated_at: now,
        };
        let k = store::key(ns, d, key);
        let out = self.store.txn(
            Txn::new()
                .when(Compare::absent(k.clone()))
                .put(k, store::encode(&rec))
                .put(store::namespace_key(ns), Vec::new()),
        )?;
        if out == TxnOutcome::CompareFailed {
            let _ = std::fs::remove_dir_all(dirs.snapshot_dir(&rec.id));
            return Err(SnapshotError::AlreadyExists(format!("snapshot {key:?}")));
        }
        tracing::debug!(
            namespace = ns,
            snapshotter = d.name(),
            key,
            parent,
            "snapshot prepared"
        );
        self.mounts_of(ns, d, &rec)
    }

    pub(crate) fn commit(&self, ns: &str, d: Driver, name: &str, key: &str, labels: Labels) -> Result<()> {
        if name.is_empty() {
            return Err(SnapshotError::InvalidArgument("commit needs a name".into()));
        }
        labels::validate(&labels)?;
        let (mut rec, rev) = self.get(ns, d, key)?;
        if rec.kind != Kind::Active {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        if let Some(parent) = rec.labels.remove(DEFERRED_PARENT) {
            if !parent.is_empty() {
                let (p, _) = store::load(&*self.store, ns, d, &parent)?.ok_or_else(|| {
                    SnapshotError::FailedPrecondition(format!(
                        "deferred parent {parent:?} of {key:?} does not exist yet"
                    ))
                })?;
                if p.kind != Kind::Committed {
                    return Err(SnapshotError::FailedPrecondition(format!(
                        "deferred parent {parent:?} of {key:?} is not committed"
                    )));
                }
            }
            rec.parent = parent;
        }
        rec.kind = Kind::Committed;
        rec.labels.extend(labels);
        rec.updated_at = now_nanos();
        let old = store::key(ns, d, key);
        let new = store::key(ns, d, name);
        let out = self.store.txn(
            Txn::new()
                .when(Compare::ModRevision(old.clone(), rev))
                .when(Compare::absent(new.clone()))
                .delete(old)
                .put(new, store::encode(&rec)),
        )?;
        if out == TxnOutcome::CompareFailed {
            if store::load(&*self.store, ns, d, name)?.is_some() {
                return Err(SnapshotError::AlreadyExists(format!("snapshot {name:?}")));
            }
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} changed during commit"
            )));
        }
        if d == Driver::Overlay {
            let _ = std::fs::remove_dir_all(self.dirs(d).work(&rec.id));
        }
        tracing::debug!(
            namespace = ns,
            snapshotter = d.name(),
            key,
            name,
            "snapshot committed"
        );
        Ok(())
    }

    pub(crate) fn remove(&self, ns: &str, d: Driver, key: &str) -> Result<()> {
        let (rec, rev) = self.get(ns, d, key)?;
        for e in self.store.range(&store::prefix(ns, d))? {
            let other = store::decode(&e)?;
            if other.parent == key || other.labels.get(DEFERRED_PARENT).is_some_and(|p| p == key) {
                return Err(SnapshotError::FailedPrecondition(format!(
                    "snapshot {key:?} has children: remove them first"
                )));
            }
        }
        let k = store::key(ns, d, key);
        let out = self
            .store
            .txn(Txn::new().when(Compare::ModRevision(k.clone(), rev)).delete(k))?;
        if out == TxnOutcome::CompareFailed {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} changed during remove"
            )));
        }
        let dir = self.dirs(d).snapshot_dir(&rec.id);
        std::fs::remove_dir_all(&dir).map_err(SnapshotError::io(format!("removing {}", dir.display())))?;
        tracing::debug!(namespace = ns, snapshotter = d.name(), key, "snapshot removed");
        Ok(())
    }

    /// Removes directories no record of any namespace points at.
    pub(crate) fn cleanup(&self, d: Driver) -> Result<u64> {
        let _dirs = self.dirs_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut used = std::collections::HashSet::new();
        for ns in store::namespaces(&*self.store)? {
            for e in self.store.range(&store::prefix(&ns, d))? {
                used.insert(store::decode(&e)?.id);
            }
        }
        let mut removed = 0;
        let root = &self.dirs(d).root;
        for e in std::fs::read_dir(root)
            .map_err(SnapshotError::io(format!("listing {}", root.display())))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "empty" && !used.contains(&name) {
                let _ = std::fs::remove_dir_all(e.path());
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .map_err(SnapshotError::io("running cp"))?;
    if !out.status.success() {
        return Err(SnapshotError::Io {
            context: format!("copying {} to {}", from.display(), to.display()),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    Ok(())
}
