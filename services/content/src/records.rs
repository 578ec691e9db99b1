//! Metadata records and where they live in the metadata store.
//!
//! Key layout (one namespace's records share a prefix, so a namespace is empty
//! exactly when its prefix is):
//!
//! ```text
//! /v1/namespaces/<ns>                     NamespaceRecord
//! /v1/ns/<ns>/content/<digest>            ContentRecord
//! /v1/ns/<ns>/images/<name>               ImageRecord
//! /v1/ns/<ns>/leases/<id>                 LeaseRecord
//! ```

use std::collections::BTreeSet;

use molde_meta::{Entry, Store};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{ContentError, Result};

pub use molde_common::labels::Labels;
pub use molde_common::{now_nanos, timestamp};

/// Lease label: RFC 3339 time after which the lease is removed.
pub use molde_common::labels::GC_EXPIRE;
/// Labels with this prefix name content (by digest) that the labelled object holds.
pub use molde_common::labels::GC_REF_CONTENT;
/// Label that makes content a garbage-collection root.
pub use molde_common::labels::GC_ROOT;

// The content service's keys, from the one schema (molde_meta::keys).
pub use molde_meta::keys::content::NAMESPACES as NAMESPACES_PREFIX;
pub use molde_meta::keys::content::{
    blob as content_key, blobs as content_prefix, image as image_key, images as images_prefix,
    lease as lease_key, leases as leases_prefix, namespace as namespace_key,
};
pub use molde_meta::keys::namespaced as ns_prefix;

/// The blobs this node's store holds: (digest, a namespace holding it).
/// What the cluster index advertises; read here so no other crate parses
/// content keys.
pub fn local_blobs(store: &dyn molde_meta::Store) -> Vec<(String, String)> {
    store
        .range(molde_meta::keys::content::ALL_NAMESPACED)
        .map(|es| {
            es.iter()
                .filter_map(|e| {
                    let (ns, digest) = molde_meta::keys::content::parse_blob(&e.key)?;
                    Some((digest.to_string(), ns.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many images this node's store holds, in every namespace.
pub fn image_count(store: &dyn molde_meta::Store) -> u64 {
    store
        .range(molde_meta::keys::content::ALL_NAMESPACED)
        .map(|es| {
            es.iter()
                .filter(|e| molde_meta::keys::content::is_image(&e.key))
                .count() as u64
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NamespaceRecord {
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentRecord {
    pub size: i64,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DescriptorRecord {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub target: DescriptorRecord,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A resource a lease holds: (type, id), e.g. ("content", "sha256:…").
pub type LeaseResource = (String, String);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub created_at: i64,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub resources: BTreeSet<LeaseResource>,
}

impl LeaseRecord {
    /// Whether the lease's `containerd.io/gc.expire` time has passed.
    pub fn expired(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.labels
            .get(GC_EXPIRE)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t < now)
    }
}

pub fn encode<T: Serialize>(rec: &T) -> Vec<u8> {
    serde_json::to_vec(rec).expect("records always serialise")
}

pub fn decode<T: DeserializeOwned>(e: &Entry) -> Result<T> {
    serde_json::from_slice(&e.value).map_err(|err| ContentError::Corrupt {
        key: e.key.clone(),
        message: err.to_string(),
    })
}

/// Reads and decodes one record with its revision.
pub fn load<T: DeserializeOwned>(store: &dyn Store, key: &str) -> Result<Option<(T, u64)>> {
    match store.get(key)? {
        Some(e) => Ok(Some((decode(&e)?, e.mod_revision))),
        None => Ok(None),
    }
}

/// Every namespace that has a record.
pub fn namespaces(store: &dyn Store) -> Result<Vec<String>> {
    Ok(store
        .range(NAMESPACES_PREFIX)?
        .into_iter()
        .map(|e| e.key[NAMESPACES_PREFIX.len()..].to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_reads_rfc3339() {
        let now = chrono::Utc::now();
        let mut l = LeaseRecord {
            created_at: 0,
            labels: Labels::new(),
            resources: Default::default(),
        };
        assert!(!l.expired(now));
        l.labels.insert(GC_EXPIRE.into(), "2000-01-01T00:00:00Z".into());
        assert!(l.expired(now));
        l.labels
            .insert(GC_EXPIRE.into(), "2999-01-01T00:00:00+02:00".into());
        assert!(!l.expired(now));
    }
}
