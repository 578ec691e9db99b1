//! The embedded metadata backend: one redb file, one table of key → (revision, value).

use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::mpsc;

use crate::{Compare, Entry, Event, MetaError, Op, Result, Store, Txn, TxnOutcome};

/// key → (mod_revision, value)
const KV: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("kv");
/// "revision" → last committed revision
const REV: TableDefinition<&str, u64> = TableDefinition::new("rev");

/// Metadata in a single redb file. Writers are serialised by redb; readers never block.
pub struct RedbStore {
    db: Database,
    watchers: Mutex<Vec<(String, mpsc::UnboundedSender<Event>)>>,
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database at `path`. Fails if another process holds it.
    pub fn open(path: &Path) -> Result<Self> {
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
        Ok(Self {
            db,
            watchers: Mutex::new(Vec::new()),
        })
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
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(KV).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| {
            let (rev, val) = v.value();
            Entry {
                key: key.to_string(),
                value: val.to_vec(),
                mod_revision: rev,
            }
        }))
    }

    fn range(&self, prefix: &str) -> Result<Vec<Entry>> {
        let r = self.db.begin_read().map_err(backend)?;
        let t = r.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
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
    }

    fn txn(&self, txn: Txn) -> Result<TxnOutcome> {
        let w = self.db.begin_write().map_err(backend)?;
        let mut events = Vec::new();
        let revision;
        {
            let mut kv = w.open_table(KV).map_err(backend)?;
            for c in &txn.compares {
                let Compare::ModRevision(key, want) = c;
                let have = kv
                    .get(key.as_str())
                    .map_err(backend)?
                    .map(|v| v.value().0)
                    .unwrap_or(0);
                if have != *want {
                    return Ok(TxnOutcome::CompareFailed);
                }
            }
            let mut rev_t = w.open_table(REV).map_err(backend)?;
            revision = rev_t
                .get("revision")
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            for op in &txn.ops {
                match op {
                    Op::Put(k, v) => {
                        kv.insert(k.as_str(), (revision, v.as_slice())).map_err(backend)?;
                        events.push(Event::Put(Entry {
                            key: k.clone(),
                            value: v.clone(),
                            mod_revision: revision,
                        }));
                    }
                    Op::Delete(k) => {
                        if kv.remove(k.as_str()).map_err(backend)?.is_some() {
                            events.push(Event::Delete {
                                key: k.clone(),
                                revision,
                            });
                        }
                    }
                    Op::DeletePrefix(p) => {
                        let keys: Vec<String> = kv
                            .range(p.as_str()..)
                            .map_err(backend)?
                            .map_while(|item| {
                                let (k, _) = item.ok()?;
                                let k = k.value().to_string();
                                k.starts_with(p.as_str()).then_some(k)
                            })
                            .collect();
                        for k in keys {
                            kv.remove(k.as_str()).map_err(backend)?;
                            events.push(Event::Delete { key: k, revision });
                        }
                    }
                }
            }
            rev_t.insert("revision", revision).map_err(backend)?;
        }
        w.commit().map_err(backend)?;
        self.notify(events);
        Ok(TxnOutcome::Committed { revision })
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
