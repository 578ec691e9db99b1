//! The cluster's build cache as the builder sees it: step records other
//! nodes published (read from etcd by `Peers`), and their layers taken from
//! a node that holds them into this node's content store.

use std::sync::Arc;

use molde_cluster::peers::Peers;
use molde_common::Digest;
use molde_common::errdefs::{Error, Result};
use molde_common::store::{ContentStore, SharedBuildCache};
use molde_transfer::fetch::{Dest, from_peers};

pub struct ClusterBuildCache {
    pub peers: Arc<Peers>,
    pub content: Arc<dyn ContentStore>,
}

#[tonic::async_trait]
impl SharedBuildCache for ClusterBuildCache {
    async fn lookup(&self, key: &str) -> Vec<Vec<u8>> {
        self.peers.build_records(key).await
    }

    async fn fetch(&self, ns: &str, lease: &str, digest: &str, size: i64) -> Result<bool> {
        let d: Digest = digest
            .parse()
            .map_err(|e| Error::InvalidArgument(format!("a build-cache layer {digest:?}: {e}")))?;
        let dest = Dest {
            store: self.content.as_ref(),
            ns,
            lease,
        };
        Ok(from_peers(&dest, self.peers.as_ref(), &d, size, &|_| {})
            .await?
            .is_some())
    }
}
