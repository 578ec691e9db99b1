//! Snapshot garbage collection, run by snapshots.v1 `Cleanup`.
//!
//! Roots, per namespace and snapshotter: active and view snapshots (a client
//! made them and removes them), snapshots a live lease holds (`snapshots/<name>`
//! resources, asked of leases.v1), and snapshots named by a content label
//! `containerd.io/gc.ref.snapshot.<name>` (asked of content.v1 — an image's
//! config carries its top chain ID there). Marking follows parents. Committed
//! snapshots nothing reaches are removed, children before parents, and then
//! directories no record points at.
//!
//! **Architecture invariant:** snapshot GC never removes what a live lease, an
//! image (through its config's label) or an active snapshot holds.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use molde_api::containerd::services::content::v1::{ListContentRequest, content_client::ContentClient};
use molde_api::containerd::services::leases::v1::{
    ListRequest, ListResourcesRequest, leases_client::LeasesClient,
};
use molde_common::context::namespaced;
use tonic::transport::Channel;

use crate::error::{Result, SnapshotError};
use crate::snapshotter::Snapshotter;
use crate::store::{self, DEFERRED_PARENT, Driver, Kind};

/// Snapshot keys that content labels and leases hold in `ns`.
async fn held(channel: &Channel, ns: &str, d: Driver) -> Result<HashSet<String>> {
    let label = format!("{}{}", molde_common::labels::GC_REF_SNAPSHOT, d.name());
    let mut out = HashSet::new();
    let mut s = ContentClient::new(channel.clone())
        .list(namespaced(
            ns,
            ListContentRequest {
                filters: vec![format!("labels.\"{label}\"")],
            },
        ))
        .await
        .map_err(SnapshotError::from)?
        .into_inner();
    while let Some(batch) = s.next().await {
        for info in batch.map_err(SnapshotError::from)?.info {
            if let Some(k) = info.labels.get(&label) {
                out.insert(k.clone());
            }
        }
    }
    let mut leases = LeasesClient::new(channel.clone());
    let list = leases
        .list(namespaced(ns, ListRequest::default()))
        .await
        .map_err(SnapshotError::from)?
        .into_inner()
        .leases;
    let kind = format!("snapshots/{}", d.name());
    for l in list {
        let res = leases
            .list_resources(namespaced(ns, ListResourcesRequest { id: l.id }))
            .await
            .map_err(SnapshotError::from)?
            .into_inner()
            .resources;
        out.extend(res.into_iter().filter(|r| r.r#type == kind).map(|r| r.id));
    }
    Ok(out)
}

/// Removes unreachable committed snapshots of `d` in every namespace; returns how many.
pub async fn collect(s: &Snapshotter, content: &Channel, d: Driver) -> Result<u64> {
    let mut removed = 0;
    for ns in store::namespaces(&*s.store)? {
        let prefix = store::prefix(&ns, d);
        let records: HashMap<String, store::SnapshotRecord> = s
            .store
            .range(&prefix)?
            .iter()
            .map(|e| Ok((e.key[prefix.len()..].to_string(), store::decode(e)?)))
            .collect::<Result<_>>()?;
        let mut stack: Vec<String> = held(content, &ns, d).await?.into_iter().collect();
        stack.extend(
            records
                .iter()
                .filter(|(_, r)| r.kind != Kind::Committed)
                .map(|(k, _)| k.clone()),
        );
        let mut marked = HashSet::new();
        while let Some(k) = stack.pop() {
            if !marked.insert(k.clone()) {
                continue;
            }
            if let Some(r) = records.get(&k) {
                if !r.parent.is_empty() {
                    stack.push(r.parent.clone());
                }
                if let Some(p) = r.labels.get(DEFERRED_PARENT) {
                    stack.push(p.clone());
                }
            }
        }
        let mut doomed: HashSet<String> = records.keys().filter(|k| !marked.contains(*k)).cloned().collect();
        // Children first: remove those no other doomed snapshot names as parent.
        while !doomed.is_empty() {
            let leaves: Vec<String> = doomed
                .iter()
                .filter(|k| {
                    !doomed
                        .iter()
                        .any(|o| records.get(o).is_some_and(|r| &r.parent == *k))
                })
                .cloned()
                .collect();
            if leaves.is_empty() {
                break;
            }
            for k in leaves {
                doomed.remove(&k);
                match s.remove(&ns, d, &k) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(namespace = %ns, snapshot = %k, error = %e, "gc: snapshot not removed")
                    }
                }
            }
        }
    }
    removed += s.cleanup(d)?;
    if removed > 0 {
        tracing::info!(snapshotter = d.name(), removed, "snapshots collected");
    }
    Ok(removed)
}
