//! Blobs from the cluster's other nodes, for pulls (`PeerBlobs`): who holds
//! a digest comes from the index in etcd; the bytes come over the peer
//! transport (content.v1 Read from an offset). The pull verifies the digest
//! at commit, so a peer that lies poisons nothing. The same index lists the
//! steps the nodes built (their build caches' records).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use molde_api::containerd::services::content::v1::ReadContentRequest;
use molde_api::containerd::services::content::v1::content_client::ContentClient;
use molde_common::errdefs::{Error, Result};
use molde_meta::Store;

use crate::certs::Identity;
use crate::{Membership, NodeRecord};

/// How long a read from a peer may go without a byte before it counts as
/// stalled (a frozen peer, or a download that stopped moving).
pub const READ_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// Deletes the claim `key` if `claimant` still holds it.
fn drop_claim_of(store: &molde_meta::EtcdStore, key: &str, claimant: &str) -> molde_meta::Result<()> {
    if let Some(e) = store.get(key)?
        && e.value == claimant.as_bytes()
    {
        store.txn(
            molde_meta::Txn::new()
                .when(molde_meta::Compare::ModRevision(key.to_string(), e.mod_revision))
                .delete(key.to_string()),
        )?;
    }
    Ok(())
}

pub struct Peers {
    pub membership: Arc<Membership>,
    pub identity: Identity,
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl Peers {
    pub fn new(membership: Arc<Membership>, identity: Identity) -> Peers {
        Peers {
            membership,
            identity,
            channels: Default::default(),
        }
    }

    async fn etcd<T: Send + 'static>(
        &self,
        f: impl FnOnce(&molde_meta::EtcdStore) -> molde_meta::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.membership.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| Error::Unavailable(format!("the cluster's etcd: {e}")))
    }

    /// Whether this node is registered now: with etcd away, cluster lookups
    /// give nothing at once rather than a timeout each.
    fn registered(&self) -> bool {
        matches!(
            self.membership.standing(),
            crate::membership::Standing::Registered
        )
    }

    /// The entries under `prefix` — index keys that end in a node's name —
    /// of the nodes other than this one; none when this node is not
    /// registered or etcd fails (logged, naming `what` was looked up).
    async fn others(&self, prefix: String, what: &str) -> Vec<molde_meta::Entry> {
        if !self.registered() {
            return Vec::new();
        }
        let me = format!("/{}", self.membership.name);
        match self.etcd(move |s| s.range(&prefix)).await {
            Ok(entries) => entries.into_iter().filter(|e| !e.key.ends_with(&me)).collect(),
            Err(e) => {
                tracing::warn!(what, "the cluster was not asked: {e}");
                Vec::new()
            }
        }
    }

    /// The build-cache records other nodes published for step key `key`
    /// (`sha256:<hex>`): empty when etcd is away or no node built it.
    pub async fn build_records(&self, key: &str) -> Vec<Vec<u8>> {
        let prefix = format!("{}{}/", crate::BUILD_CACHE, key.trim_start_matches("sha256:"));
        self.others(prefix, key)
            .await
            .into_iter()
            .map(|e| e.value)
            .collect()
    }

    fn channel(&self, peer: &str, address: &str) -> Result<tonic::transport::Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(peer) {
            return Ok(c.clone());
        }
        let c = crate::peer::channel(&self.identity, peer, address)?;
        channels.insert(peer.to_string(), c.clone());
        Ok(c)
    }
}

#[tonic::async_trait]
impl molde_common::store::PeerBlobs for Peers {
    async fn holders(&self, digest: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .others(format!("{}{digest}/", crate::BLOBS), digest)
            .await
            .iter()
            .filter_map(|e| e.key.rsplit('/').next().map(str::to_string))
            .collect();
        // Spread the readers of one blob over its holders.
        if !names.is_empty() {
            let turn = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as usize)
                .unwrap_or(0);
            let n = names.len();
            names.rotate_left(turn % n);
        }
        names
    }

    async fn claim(&self, digest: &str) -> bool {
        let Some(lease) = self.membership.lease() else {
            return true;
        };
        let (key, me) = (format!("{}{digest}", crate::CLAIMS), self.membership.name.clone());
        let r = self
            .etcd(move |s| {
                if s.claim(&key, me.as_bytes().to_vec(), lease)? {
                    molde_common::metrics::CLAIMS_TAKEN.add(1);
                    return Ok(true);
                }
                // A claim of this node's own (an earlier attempt) is still its own.
                Ok(s.get(&key)?.is_some_and(|e| e.value == me.as_bytes()))
            })
            .await;
        r.unwrap_or(true)
    }

    async fn claimant(&self, digest: &str) -> Option<String> {
        let key = format!("{}{digest}", crate::CLAIMS);
        let me = self.membership.name.clone();
        self.etcd(move |s| {
            let Some(claim) = s.get(&key)? else {
                return Ok(None);
            };
            let claimant = String::from_utf8_lossy(&claim.value).into_owned();
            if claimant == me {
                return Ok(None);
            }
            // A claim whose node is not registered (it stopped, or lost its
            // record) has lapsed, whatever its lease says.
            if s.get(&format!("{}{claimant}", crate::NODES))?.is_none() {
                tracing::info!(%key, %claimant, "a claim of a node that is not registered has lapsed");
                drop_claim_of(s, &key, &claimant)?;
                return Ok(None);
            }
            molde_common::metrics::CLAIMS_DEFERRED.add(1);
            Ok(Some(claimant))
        })
        .await
        .ok()
        .flatten()
    }

    async fn abandon(&self, digest: &str) {
        let key = format!("{}{digest}", crate::CLAIMS);
        let me = self.membership.name.clone();
        if let Err(e) = self.etcd(move |s| drop_claim_of(s, &key, &me)).await {
            tracing::warn!(%digest, "dropping the claim on a failed download: {e}");
        }
    }

    async fn holds(&self, digest: &str, ns: &str) {
        let (m, d, ns) = (self.membership.clone(), digest.to_string(), ns.to_string());
        if let Err(e) = self.etcd(move |_| m.publish_one(&d, &ns)).await {
            tracing::warn!(%digest, "publishing a blob: {e}");
        }
    }

    async fn downloaded(&self, digest: &str, ns: &str) {
        self.holds(digest, ns).await;
        let key = format!("{}{digest}", crate::CLAIMS);
        if let Err(e) = self
            .etcd(move |s| s.txn(molde_meta::Txn::new().delete(key)))
            .await
        {
            tracing::warn!(%digest, "dropping the claim on a downloaded blob: {e}");
        }
    }

    async fn image(&self, ns: &str, name: &str) -> Option<(molde_common::store::ImageTarget, String)> {
        use molde_api::containerd::services::images::v1::GetImageRequest;
        use molde_api::containerd::services::images::v1::images_client::ImagesClient;
        if !self.registered() {
            return None;
        }
        let m = self.membership.clone();
        let nodes = match self.etcd(move |_| m.nodes()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(image = name, "the cluster's nodes were not asked: {e}");
                return None;
            }
        };
        // Every other node at once, each given a few seconds.
        let asks = nodes
            .into_iter()
            .filter(|n| n.name != self.membership.name)
            .map(|node| {
                let (ns, name) = (ns.to_string(), name.to_string());
                async move {
                    let ch = self.channel(&node.name, &node.address).ok()?;
                    let got = tokio::time::timeout(
                        std::time::Duration::from_secs(5),
                        ImagesClient::new(ch)
                            .get(molde_api::client::namespaced(&ns, GetImageRequest { name })),
                    )
                    .await
                    .ok()?
                    .ok()?
                    .into_inner()
                    .image?;
                    let updated = got.updated_at.map(|t| (t.seconds, t.nanos)).unwrap_or_default();
                    let t = got.target?;
                    Some((updated, t, node.name))
                }
            });
        let found = futures::future::join_all(asks).await;
        let (_, t, node) = found
            .into_iter()
            .flatten()
            .max_by_key(|(updated, _, _)| *updated)?;
        Some((
            molde_common::store::ImageTarget {
                media_type: t.media_type,
                digest: t.digest,
                size: t.size,
            },
            node,
        ))
    }

    async fn read(
        &self,
        peer: &str,
        digest: &str,
        offset: u64,
        follow: bool,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let (node_key, blob_key) = (
            format!("{}{peer}", crate::NODES),
            format!("{}{digest}/{peer}", crate::BLOBS),
        );
        let (node, ns) = self
            .etcd(move |s| Ok((s.get(&node_key)?, s.get(&blob_key)?)))
            .await?;
        let node: NodeRecord = node
            .and_then(|e| serde_json::from_slice(&e.value).ok())
            .ok_or_else(|| Error::Unavailable(format!("peer {peer} is not registered")))?;
        // A blob still downloading there is found in any namespace.
        let ns = match ns {
            Some(e) => String::from_utf8_lossy(&e.value).into_owned(),
            None if follow => "default".to_string(),
            None => return Err(Error::NotFound(format!("peer {peer} no longer holds {digest}"))),
        };
        let ch = self.channel(peer, &node.address)?;
        let mut req = molde_api::client::namespaced(
            &ns,
            ReadContentRequest {
                digest: digest.to_string(),
                offset: offset as i64,
                size: 0,
            },
        );
        if follow {
            req.metadata_mut().insert(
                molde_common::context::FOLLOW_INGEST,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        let stream = tokio::time::timeout(READ_STALL, ContentClient::new(ch).read(req))
            .await
            .map_err(|_| {
                Error::DeadlineExceeded(format!("peer {peer} did not answer within {READ_STALL:?}"))
            })?
            .map_err(Error::upstream(format!("reading {digest} from peer {peer}")))?
            .into_inner();
        let peer_name = peer.to_string();
        let data = stream
            .map(move |m| {
                m.map(|m| m.data)
                    .map_err(|s| Error::Unavailable(format!("peer {peer_name}: {}", s.message())))
            })
            .boxed();
        // A peer that sends nothing for READ_STALL (frozen, or a download
        // that stopped moving) ends the read: the caller resumes elsewhere.
        // A claim whose download made no progress that long has lapsed.
        let (store, claim, peer) = (
            self.membership.store.clone(),
            format!("{}{digest}", crate::CLAIMS),
            peer.to_string(),
        );
        Ok(futures::stream::unfold(Some(data), move |state| {
            let (store, claim, peer) = (store.clone(), claim.clone(), peer.clone());
            async move {
                let mut data = state?;
                match tokio::time::timeout(READ_STALL, data.next()).await {
                    Ok(Some(item)) => Some((item, Some(data))),
                    Ok(None) => None,
                    Err(_) => {
                        if follow {
                            let p = peer.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || drop_claim_of(&store, &claim, &p)).await;
                        }
                        let e =
                            Error::DeadlineExceeded(format!("peer {peer} sent nothing for {READ_STALL:?}"));
                        Some((Err(e), None))
                    }
                }
            }
        })
        .boxed())
    }
}
