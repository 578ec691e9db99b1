//! Cluster mode: many nodes, one etcd (`molded --cluster etcd=URL,...`).
//! etcd holds what the nodes share, under `/molde/`; each node's own state
//! (containers, snapshots, ingests) stays in its redb.
//!
//! `membership.rs`: a node registers under an etcd lease it keeps alive,
//! so a node that stops renewing drops out by itself; it re-registers when
//! etcd comes back after an outage. `certs.rs`: the cluster's CA and the
//! nodes' certificates; `peer.rs`: gRPC between nodes over mutual TLS.
//! `peers.rs`: blobs and build-cache records of the other nodes.
//! `service.rs`: molde's cluster.v1 (`molde node ls`).

pub mod certs;
#[cfg(feature = "node")]
pub mod membership;
pub mod peer;
#[cfg(feature = "node")]
pub mod peers;
#[cfg(feature = "node")]
pub mod service;

#[cfg(feature = "node")]
pub use membership::{Membership, NodeRecord, Registration};

// The cluster's keys in etcd, from the one schema.
#[cfg(feature = "node")]
pub use molde_meta::keys::cluster::{BLOBS, BUILD_CACHE, CLAIMS, NODES, PREFIX, REVOKED};

/// A node name: letters, digits, `-`, `_`, `.`, at most 63 (it is a key
/// component and a certificate name).
pub fn check_node_name(name: &str) -> Result<(), molde_common::errdefs::Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(molde_common::errdefs::Error::InvalidArgument(format!(
            "node name {name:?}: use 1 to 63 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_names() {
        for ok in ["a", "node-1", "n_2.example"] {
            assert!(super::check_node_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", &"x".repeat(64)] {
            assert!(super::check_node_name(bad).is_err(), "{bad:?}");
        }
    }
}
