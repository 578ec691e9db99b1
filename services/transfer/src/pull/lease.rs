//! The lease that holds what a pull stores until the image record does.

use std::sync::Arc;
use std::time::Duration;

use molde_common::errdefs::Result;
use molde_common::store::ContentStore;

/// A lease that holds what a pull stores until the image record holds it.
/// `release` deletes it; a pull that fails or is dropped deletes it in the
/// background, and it expires after an hour whatever happens.
pub(crate) struct PullLease {
    store: Arc<dyn ContentStore>,
    ns: String,
    pub id: String,
    released: bool,
}

impl PullLease {
    pub(crate) async fn new(store: &Arc<dyn ContentStore>, ns: &str) -> Result<Self> {
        let id = store.create_lease(ns, "pull", Duration::from_secs(3600)).await?;
        Ok(PullLease {
            store: store.clone(),
            ns: ns.to_string(),
            id,
            released: false,
        })
    }

    pub(crate) async fn release(mut self) {
        self.released = true;
        if let Err(e) = self.store.delete_lease(&self.ns, &self.id).await {
            tracing::warn!(lease = %self.id, error = %e, "could not delete a pull's lease; it expires in an hour");
        }
    }
}

impl Drop for PullLease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (store, ns, id) = (self.store.clone(), self.ns.clone(), self.id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(async move {
                    if let Err(e) = store.delete_lease(&ns, &id).await {
                        tracing::warn!(lease = %id, error = %e, "could not delete a pull's lease; it expires in an hour");
                    }
                });
            }
            Err(_) => tracing::warn!(lease = %id, "a pull's lease is left to expire"),
        }
    }
}
