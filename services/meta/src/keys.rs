//! The metadata schema: every key any service reads or writes, in the local
//! store (redb) and in a cluster's etcd, is spelled here and nowhere else
//! (tests/layout.rs holds the other crates to it). Each service owns the
//! keys of its section and reaches another service's records only through
//! that service's API.
//!
//! ```text
//! /v1/namespaces/<ns>                          content: a namespace and its labels
//! /v1/ns/<ns>/content/<digest>                 content: a blob's labels
//! /v1/ns/<ns>/images/<name>                    content: an image
//! /v1/ns/<ns>/leases/<id>                      content: a lease and what it holds
//! /v1/ns/<ns>/containers/<id>                  runtime: a container
//! /v1/ns/<ns>/snapshots/<driver>/<key>         snapshotter: a snapshot
//! /v1/snapshotter/namespaces/<ns>              snapshotter: ns has snapshots
//! /v1/snapshotter/indexed                      snapshotter: the index above is built
//! /v1/cri/sandboxes/<id>                       cri: a pod sandbox
//! /v1/cri/containers/<id>                      cri: a CRI container
//! /v1/cri/names/<kind>/<name>                  cri: a name held by an id
//! /molde/nodes/<name>                          cluster (etcd): a node, under its lease
//! /molde/blobs/<digest>/<node>                 cluster: node holds the blob
//! /molde/claims/<digest>                       cluster: node downloading the blob
//! /molde/build-cache/<step key>/<node>         cluster: node built the step
//! /molde/revoked/<serial>                      cluster: a refused certificate
//! ```

/// Every namespaced record lives under `/v1/ns/<ns>/`.
const NS: &str = "/v1/ns/";

/// Everything namespace `ns` holds, whoever owns it.
pub fn namespaced(ns: &str) -> String {
    format!("{NS}{ns}/")
}

/// The content service's records: namespaces, blobs' labels, images, leases.
pub mod content {
    use super::NS;

    pub const NAMESPACES: &str = "/v1/namespaces/";

    pub fn namespace(ns: &str) -> String {
        format!("{NAMESPACES}{ns}")
    }
    pub fn blobs(ns: &str) -> String {
        format!("{NS}{ns}/content/")
    }
    pub fn blob(ns: &str, digest: &str) -> String {
        format!("{NS}{ns}/content/{digest}")
    }
    /// The namespace and digest of a blob's key.
    pub fn parse_blob(key: &str) -> Option<(&str, &str)> {
        key.strip_prefix(NS)?.split_once("/content/")
    }
    pub fn images(ns: &str) -> String {
        format!("{NS}{ns}/images/")
    }
    pub fn image(ns: &str, name: &str) -> String {
        format!("{NS}{ns}/images/{name}")
    }
    /// Whether `key` is an image's, in any namespace.
    pub fn is_image(key: &str) -> bool {
        key.strip_prefix(NS)
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(_, rest)| rest.starts_with("images/"))
    }
    pub fn leases(ns: &str) -> String {
        format!("{NS}{ns}/leases/")
    }
    pub fn lease(ns: &str, id: &str) -> String {
        format!("{NS}{ns}/leases/{id}")
    }
    /// Every namespaced record, for scans across namespaces.
    pub const ALL_NAMESPACED: &str = NS;
}

/// The runtime's container records.
pub mod containers {
    use super::NS;

    pub fn prefix(ns: &str) -> String {
        format!("{NS}{ns}/containers/")
    }
    pub fn key(ns: &str, id: &str) -> String {
        format!("{NS}{ns}/containers/{id}")
    }
    /// Where to scan for containers of every namespace.
    pub const ALL: &str = NS;
    /// The namespace and id of a container's key (None for other keys).
    pub fn parse(key: &str) -> Option<(&str, &str)> {
        let (ns, id) = key.strip_prefix(NS)?.split_once("/containers/")?;
        (!ns.contains('/') && !id.is_empty()).then_some((ns, id))
    }
}

/// The snapshotter's records.
pub mod snapshots {
    use super::NS;

    /// `<ns>` under it: the namespace has (or had) snapshot records.
    pub const NAMESPACES: &str = "/v1/snapshotter/namespaces/";
    /// Set once the namespace index was built from older records.
    pub const INDEXED: &str = "/v1/snapshotter/indexed";

    pub fn namespace(ns: &str) -> String {
        format!("{NAMESPACES}{ns}")
    }
    pub fn prefix(ns: &str, driver: &str) -> String {
        format!("{NS}{ns}/snapshots/{driver}/")
    }
    pub fn key(ns: &str, driver: &str, k: &str) -> String {
        format!("{NS}{ns}/snapshots/{driver}/{k}")
    }
    /// The namespace and driver of a snapshot record's key.
    pub fn parse(key: &str) -> Option<(&str, &str)> {
        let (ns, rest) = key.strip_prefix(NS)?.split_once('/')?;
        let (driver, _) = rest.strip_prefix("snapshots/")?.split_once('/')?;
        Some((ns, driver))
    }
}

/// The CRI's pods, containers and the names they hold.
pub mod cri {
    pub const SANDBOXES: &str = "/v1/cri/sandboxes/";
    pub const CONTAINERS: &str = "/v1/cri/containers/";
    pub const NAMES: &str = "/v1/cri/names/";
    /// `<pod id>`: a stopped pod's network, released in the background.
    pub const TEARDOWNS: &str = "/v1/cri/teardowns/";

    pub fn name(kind: &str, name: &str) -> String {
        format!("{NAMES}{kind}/{name}")
    }
}

/// What the nodes of a cluster share in etcd.
pub mod cluster {
    pub const PREFIX: &str = "/molde/";
    /// `<name>`: a node's record, bound to its lease.
    pub const NODES: &str = "/molde/nodes/";
    /// `<digest>/<node>`: node holds the blob (the value: a namespace it has
    /// it in), bound to the node's lease.
    pub const BLOBS: &str = "/molde/blobs/";
    /// `<digest>`: the node that downloads the blob from the registry now,
    /// bound to its lease.
    pub const CLAIMS: &str = "/molde/claims/";
    /// `<step key>/<node>`: node built the step (the value: its build
    /// cache's record of the layer), bound to the node's lease.
    pub const BUILD_CACHE: &str = "/molde/build-cache/";
    /// `<serial>`: a certificate every node refuses (the value: whom it was
    /// issued to and when it expires, JSON).
    pub const REVOKED: &str = "/molde/revoked/";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back() {
        assert_eq!(
            content::parse_blob(&content::blob("default", "sha256:ab")),
            Some(("default", "sha256:ab"))
        );
        assert_eq!(content::parse_blob(&content::image("default", "x")), None);
        assert!(content::is_image(&content::image(
            "k8s.io",
            "docker.io/library/a:b"
        )));
        assert!(!content::is_image(&content::blob("images", "sha256:ab")));
        assert_eq!(
            snapshots::parse(&snapshots::key("n", "overlayfs", "k/1")),
            Some(("n", "overlayfs"))
        );
        assert!(containers::key("n", "c").starts_with(&namespaced("n")));
        assert_eq!(containers::parse(&containers::key("n", "c")), Some(("n", "c")));
        assert_eq!(containers::parse(&content::image("n", "a/containers/b")), None);
        assert!(containers::key("n", "c").starts_with(containers::ALL));
    }
}
