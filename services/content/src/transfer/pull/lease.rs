//! The lease that holds what a pull stores until the image record does.

use super::*;

/// A lease that holds what a pull stores until the image record holds it.
pub(crate) struct PullLease<'a> {
    shared: &'a Shared,
    ns: String,
    pub id: String,
}

impl<'a> PullLease<'a> {
    pub(crate) fn new(shared: &'a Shared, ns: &str) -> Result<Self> {
        let id = format!("pull-{}", uuid::Uuid::new_v4().simple());
        let expire = (chrono::Utc::now() + chrono::Duration::hours(1))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rec = LeaseRecord {
            created_at: molde_common::now_nanos(),
            labels: [(GC_EXPIRE.to_string(), expire)].into(),
            resources: Default::default(),
        };
        shared.ensure_namespace(ns)?;
        shared
            .store
            .txn(Txn::new().put(records::lease_key(ns, &id), records::encode(&rec)))?;
        Ok(PullLease {
            shared,
            ns: ns.to_string(),
            id,
        })
    }
}

impl Drop for PullLease<'_> {
    fn drop(&mut self) {
        let _ = self
            .shared
            .store
            .txn(Txn::new().delete(records::lease_key(&self.ns, &self.id)));
        self.shared.schedule_gc();
    }
}
