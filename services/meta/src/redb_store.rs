//! The embedded metadata backend: one redb file, one table of key → (revision, value).
//!
//! After a failed write (a full disk, say) redb refuses every later call
//! ("previous I/O error") until the database is opened again. The store
//! does that itself: the call that failed returns its error, the database is
//! reopened (redb recovers to the last committed transaction, so nothing
//! committed is lost), and a call that met only the earlier error is tried
//! once more. molded goes on without a restart once space is back.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::{Compare, Entry, Event, MetaError, Op, Result, Store, Txn, TxnOutcome};

/// key → (mod_revision, value)
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// "revision" → last committed revision
const REV: TableDefinition<&str, u64> = TableDefinition::new("rev");

/// Metadata in a single redb file. Writers are serialised by redb; readers never block.
pub struct RedbStore {
    path: PathBuf,
    /// None only while a reopen failed; the next call tries again.
    db: RwLock<Option<Database>>,
    watchers: Mutex<Vec<(String, mpsc::UnboundedSender<Event>)>>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

/// Whether an error leaves redb refusing calls until it is reopened.
fn needs_reopen(e: &redb::Error) -> bool {
    matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo)
}

fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path).map_err(|e| MetaError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let w = db.begin_write().map_err(backend)?;
    {
        w.open_table(KV).map_err(backend)?;
        w.open_table(REV).map_err(backend)?;
    }
    w.commit().map_err(backend)?;
    Ok(db)
}

impl RedbStore {
    /// Opens (or creates) the database at `path`. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            db: RwLock::new(Some(open_db(path)?)),
            watchers: Mutex::new(Vec::new()),
        })
    }

    /// Runs `op` on the database; after an I/O failure reopens it, and
    /// runs `op` once more when all it met was the earlier failure.
    fn with_db<T>(&self, op: impl Fn(&Database) -> std::result::Result<T, redb::Error>) -> Result<T> {
        for attempt in 0..2 {
            let outcome = {
                let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
                guard.as_ref().map(&op)
            };
            let e = match outcome {
                Some(Ok(v)) => return Ok(v),
                Some(Err(e)) if !needs_reopen(&e) => return Err(backend(e)),
                Some(Err(e)) => Some(e),
                None => None,
            };
            self.reopen();
            match e {
                Some(redb::Error::PreviousIo) | None if attempt == 0 => continue,
                Some(e) => return Err(backend(e)),
                None => break,
            }
        }
        Err(MetaError::Open {
            path: self.path.display().to_string(),
            message: "the metadata database could not be opened again after an I/O error".into(),
        })
    }

    fn reopen(&self) {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        // The old handle goes first: it holds the file's lock.
        guard.take();
        match open_db(&self.path) {
            Ok(db) => {
                tracing::warn!(path = %self.path.display(), "metadata database reopened after an I/O error");
                *guard = Some(db);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "reopening the metadata database failed")
            }
        }
    }

    fn notify(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.retain(|(prefix, tx)| {
            for ev in &events {
                let key = match ev {
                    Event::Put(e) => &e.key,
                    Event::Delete { key, .. } => key,
                };
                if key.starts_with(prefix.as_str()) && tx.send(ev.clone()).is_err() {
                    return false;
                }
            }
            !tx.is_closed()
        });
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.with_db(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            Ok(t.get(key)?.map(|v| {
                let (rev, val) = v.value();
                Entry {
                    key: key.to_string(),
                    value: val.to_vec(),
                    mod_revision: rev,
                }
            }))
        })
    }

    fn range(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.with_db(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            let mut out = Vec::new();
            for item in t.range(prefix..)? {
                let (k, v) = item?;
                let key = k.value();
                if !key.starts_with(prefix) {
                    break;
                }
                let (rev, val) = v.value();
                out.push(Entry {
                    key: key.to_string(),
                    value: val.to_vec(),
                    mod_revision: rev,
                });
            }
            Ok(out)
        })
    }

    fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let (outcome, events) = self.with_db(|db| apply(db, &txn))?;
        self.notify(events);
        Ok(outcome)
    }

    fn watch(&self, prefix: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((prefix.to_string(), tx));
        rx
    }
}

/// One transaction: its compares, then its writes, under the next revision.
fn apply(db: &Database, txn: &Txn) -> std::result::Result<(TxnOutcome, Vec<Event>), redb::Error> {
    let w = db.begin_write()?;
    let mut events = Vec::new();
    let revision;
    {
        let mut kv = w.open_table(KV)?;
        for c in &txn.compares {
            let Compare::ModRevision(key, want) = c;
            let have = kv.get(key.as_str())?.map(|v| v.value().0).unwrap_or(0);
            if have != *want {
                return Ok((TxnOutcome::CompareFailed, Vec::new()));
            }
        }
        let mut rev_t = w.open_table(REV)?;
        revision = rev_t.get("revision")?.map(|v| v.value()).unwrap_or(0) + 1;
        for op in &txn.ops {
            match op {
                Op::Put(k, v) => {
                    kv.insert(k.as_str(), (revision, v.as_slice()))?;
                    events.push(Event::Put(Entry {
                        key: k.clone(),
                        value: v.clone(),
                        mod_revision: revision,
                    }));
                }
                Op::Delete(k) => {
                    if kv.remove(k.as_str())?.is_some() {
                        events.push(Event::Delete {
                            key: k.clone(),
                            revision,
                        });
                    }
                }
                Op::DeletePrefix(p) => {
                    let keys: Vec<String> = kv
                        .range(p.as_str()..)?
                        .map_while(|item| {
                            let (k, _) = item.ok()?;
                            let k = k.value().to_string();
                            k.starts_with(p.as_str()).then_some(k)
                        })
                        .collect();
                    for k in keys {
                        kv.remove(k.as_str())?;
                        events.push(Event::Delete { key: k, revision });
                    }
                }
            }
        }
        rev_t.insert("revision", revision)?;
    }
    w.commit()?;
    Ok((TxnOutcome::Committed { revision }, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(&dir.path().join("meta.redb")).unwrap();
        (dir, s)
    }

    #[test]
    fn put_get_range_delete_prefix() {
        let (_d, s) = store();
        s.txn(
            Txn::new()
                .put("/a/1", b"x".to_vec())
                .put("/a/2", b"y".to_vec())
                .put("/b/1", b"z".to_vec()),
        )
        .unwrap();
        assert_eq!(s.get("/a/1").unwrap().unwrap().value, b"x");
        let keys: Vec<_> = s.range("/a/").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["/a/1", "/a/2"]);
        s.txn(Txn::new().delete_prefix("/a/")).unwrap();
        assert!(s.range("/a/").unwrap().is_empty());
        assert!(s.get("/b/1").unwrap().is_some());
    }

    #[test]
    fn compare_guards_writes() {
        let (_d, s) = store();
        let ok = s
            .txn(Txn::new().when(Compare::absent("/k")).put("/k", b"1".to_vec()))
            .unwrap();
        let TxnOutcome::Committed { revision } = ok else {
            panic!("first create must commit")
        };
        let again = s
            .txn(Txn::new().when(Compare::absent("/k")).put("/k", b"2".to_vec()))
            .unwrap();
        assert_eq!(again, TxnOutcome::CompareFailed);
        assert_eq!(s.get("/k").unwrap().unwrap().value, b"1");
        let cas = s
            .txn(
                Txn::new()
                    .when(Compare::ModRevision("/k".into(), revision))
                    .put("/k", b"3".to_vec()),
            )
            .unwrap();
        assert!(matches!(cas, TxnOutcome::Committed { .. }));
        assert_eq!(s.get("/k").unwrap().unwrap().value, b"3");
    }

    #[test]
    fn watch_sees_changes_under_prefix_only() {
        let (_d, s) = store();
        let mut rx = s.watch("/w/");
        s.txn(Txn::new().put("/w/a", b"1".to_vec()).put("/x/a", b"2".to_vec()))
            .unwrap();
        s.txn(Txn::new().delete("/w/a")).unwrap();
        assert!(matches!(rx.try_recv().unwrap(), Event::Put(e) if e.key == "/w/a"));
        assert!(matches!(rx.try_recv().unwrap(), Event::Delete { key, .. } if key == "/w/a"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn reopen_keeps_data_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.txn(Txn::new().put("/k", b"v".to_vec())).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let e = s.get("/k").unwrap().unwrap();
        assert_eq!(e.mod_revision, 1);
        let TxnOutcome::Committed { revision } = s.txn(Txn::new().put("/k2", vec![])).unwrap() else {
            panic!()
        };
        assert_eq!(revision, 2);
    }
}
