//! Snapshot records and their directories.
//!
//! ```text
//! metadata: /v1/ns/<ns>/snapshots/<snapshotter>/<key>  → SnapshotRecord
//!           /v1/snapshotter/namespaces/<ns>             the namespaces that have records
//! disk:     <root>/<snapshotter>/<id>/fs     the snapshot's files (overlay: its upper layer)
//!           <root>/<snapshotter>/<id>/work   overlayfs work directory
//!           <root>/<snapshotter>/empty       an always-empty lower directory
//! ```
//!
//! Commit renames a record (active key → committed name) and keeps the
//! directory: the id, not the key, names the files.
//!
//! The snapshotter reads only its own keys: collection and cleanup go
//! through the namespaces it recorded when it made a snapshot there, then
//! each namespace's `snapshots/<snapshotter>/` prefix, never through other
//! services' records (an image named `x/snapshots/overlayfs/y` is an image).

use std::path::{Path, PathBuf};

use molde_api::containerd::types::Mount;
use molde_common::labels::Labels;
use molde_meta::Store;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SnapshotError};

/// The snapshotters molde has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Each snapshot is an overlayfs layer; a layer needs no copy of its parent.
    Overlay,
    /// Each snapshot is a full copy of its parent tree; works on any filesystem.
    Native,
}

impl Driver {
    pub fn parse(name: &str) -> Result<Driver> {
        match name {
            "" | "overlayfs" => Ok(Driver::Overlay),
            "native" => Ok(Driver::Native),
            other => Err(SnapshotError::InvalidArgument(format!(
                "snapshotter {other:?}: molde has overlayfs and native"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Overlay => "overlayfs",
            Driver::Native => "native",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    View,
    Active,
    Committed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub kind: Kind,
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Label on an active snapshot naming the parent it will have once committed.
/// Lets a layer be prepared and applied before its parent exists, so all layers
/// of an image unpack at once; Commit requires the parent to be committed by then.
pub use molde_common::labels::SNAPSHOT_PARENT as DEFERRED_PARENT;

use molde_meta::keys::snapshots::{self as keys, NAMESPACES};

/// The key that says namespace `ns` has snapshot records.
pub fn namespace_key(ns: &str) -> String {
    keys::namespace(ns)
}

/// The namespaces that have (or had) snapshot records.
pub fn namespaces(store: &dyn Store) -> Result<Vec<String>> {
    Ok(store
        .range(NAMESPACES)?
        .into_iter()
        .map(|e| e.key[NAMESPACES.len()..].to_string())
        .collect())
}

/// Records made before the namespace index existed are found once, by the
/// exact shape of their keys, and indexed.
pub fn index_namespaces(store: &dyn Store) -> Result<()> {
    if store.get(keys::INDEXED)?.is_some() {
        return Ok(());
    }
    let mut txn = molde_meta::Txn::new().put(keys::INDEXED, Vec::new());
    let mut seen = std::collections::HashSet::new();
    for e in store.range(molde_meta::keys::content::ALL_NAMESPACED)? {
        let Some((ns, driver)) = keys::parse(&e.key) else {
            continue;
        };
        let ours = [Driver::Overlay, Driver::Native]
            .iter()
            .any(|d| d.name() == driver);
        if ours && seen.insert(ns.to_string()) {
            txn = txn.put(namespace_key(ns), Vec::new());
        }
    }
    store.txn(txn)?;
    Ok(())
}

pub fn prefix(ns: &str, driver: Driver) -> String {
    keys::prefix(ns, driver.name())
}

pub fn key(ns: &str, driver: Driver, k: &str) -> String {
    format!("{}{k}", prefix(ns, driver))
}

pub fn decode(e: &molde_meta::Entry) -> Result<SnapshotRecord> {
    serde_json::from_slice(&e.value).map_err(|err| SnapshotError::Corrupt {
        key: e.key.clone(),
        message: err.to_string(),
    })
}

pub fn encode(r: &SnapshotRecord) -> Vec<u8> {
    serde_json::to_vec(r).expect("records serialise")
}

pub fn load(store: &dyn Store, ns: &str, driver: Driver, k: &str) -> Result<Option<(SnapshotRecord, u64)>> {
    match store.get(&key(ns, driver, k))? {
        Some(e) => Ok(Some((decode(&e)?, e.mod_revision))),
        None => Ok(None),
    }
}

/// Where one snapshotter keeps its directories.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new(base: &Path, driver: Driver) -> Result<Dirs> {
        let root = base.join(driver.name());
        for d in [root.clone(), root.join("empty")] {
            std::fs::create_dir_all(&d).map_err(SnapshotError::io(format!("creating {}", d.display())))?;
        }
        Ok(Dirs { root })
    }

    pub fn fs(&self, id: &str) -> PathBuf {
        self.root.join(id).join("fs")
    }

    pub fn work(&self, id: &str) -> PathBuf {
        self.root.join(id).join("work")
    }

    pub fn empty(&self) -> PathBuf {
        self.root.join("empty")
    }

    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }
}

/// The mounts that present snapshot `rec` with lower directories `lowers` (top first).
pub fn mounts(driver: Driver, dirs: &Dirs, rec: &SnapshotRecord, lowers: &[PathBuf]) -> Vec<Mount> {
    let bind = |src: &Path, ro: bool| Mount {
        r#type: "bind".into(),
        source: src.display().to_string(),
        target: String::new(),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    };
    let fs = dirs.fs(&rec.id);
    match (driver, rec.kind) {
        (Driver::Native, Kind::View) => vec![bind(&fs, true)],
        (Driver::Native, _) => vec![bind(&fs, false)],
        (Driver::Overlay, Kind::View) => match lowers {
            [] => vec![bind(&fs, true)],
            [one] => vec![bind(one, true)],
            many => vec![Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![format!("lowerdir={}", join(many))],
            }],
        },
        (Driver::Overlay, _) => {
            let deferred = rec.labels.contains_key(DEFERRED_PARENT);
            if lowers.is_empty() && !deferred {
                return vec![bind(&fs, false)];
            }
            // A layer whose parent is deferred is presented over an empty lower
            // dir: writes land in its upper dir exactly as they will stay.
            let lower = if lowers.is_empty() {
                join(&[dirs.empty()])
            } else {
                join(lowers)
            };
            vec![Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    format!("workdir={}", dirs.work(&rec.id).display()),
                    format!("upperdir={}", fs.display()),
                    format!("lowerdir={lower}"),
                ],
            }]
        }
    }
}

fn join(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}
