//! The content store as the transfer service sees it: blobs by digest, written
//! through ingests and held by leases, their labels, and image records.
//!
//! molde-content implements it over its own state (the GC lock held inside each
//! commit); a transfer service in a process of its own reaches the same store
//! through content.v1, images.v1 and leases.v1. Nothing else of the content
//! service is visible through it.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::Digest;
use crate::errdefs::Result;

/// What the store knows of a blob a namespace holds.
#[derive(Debug, Clone, Default)]
pub struct BlobInfo {
    pub size: i64,
    pub labels: HashMap<String, String>,
}

/// What an image record points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTarget {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// How a namespace came to hold a blob without downloading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The namespace had it.
    Present,
    /// Another namespace had the bytes; this one got a record.
    Shared,
}

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

#[tonic::async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// The blob `digest` as namespace `ns` holds it; None if it does not.
    async fn info(&self, ns: &str, digest: &str) -> Result<Option<BlobInfo>>;

    /// A whole blob of at most `max` bytes; NotFound if the namespace lacks it.
    async fn read(&self, ns: &str, digest: &str, max: usize) -> Result<Vec<u8>>;

    /// A blob's bytes from the start, in chunks.
    async fn read_stream(&self, ns: &str, digest: &str) -> Result<ByteStream>;

    /// Puts `digest` (of `size` bytes) under `lease` if the store already has
    /// it, in this namespace or as bytes another namespace stored.
    async fn hold(&self, ns: &str, lease: &str, digest: &Digest, size: i64) -> Result<Option<Held>>;

    /// Stores bytes already in hand under `lease`.
    async fn put(&self, ns: &str, lease: &str, digest: &Digest, data: Bytes) -> Result<()>;

    /// Opens (or resumes) the ingest `reference`, its one writer until dropped.
    async fn writer(
        &self,
        ns: &str,
        lease: &str,
        reference: &str,
        size: i64,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn BlobWriter>>;

    /// Adds labels to a blob the namespace holds.
    async fn set_labels(&self, ns: &str, digest: &str, labels: HashMap<String, String>) -> Result<()>;

    /// What image `name` points at, if it exists.
    async fn image(&self, ns: &str, name: &str) -> Result<Option<ImageTarget>>;

    /// Points image `name` at `target`, creating it if needed.
    async fn put_image(&self, ns: &str, name: &str, target: ImageTarget) -> Result<()>;

    /// A lease that expires after `ttl` unless deleted first; returns its id.
    async fn create_lease(&self, ns: &str, prefix: &str, ttl: Duration) -> Result<String>;

    /// Deletes a lease; what only it held becomes collectable.
    async fn delete_lease(&self, ns: &str, id: &str) -> Result<()>;
}

/// One ingest, written in order.
#[tonic::async_trait]
pub trait BlobWriter: Send {
    /// Bytes written so far (where a resumed download starts).
    fn offset(&self) -> u64;

    async fn write(&mut self, data: Bytes) -> Result<()>;

    /// Drops what was written, to start over.
    async fn reset(&mut self) -> Result<()>;

    /// Verifies size and digest and makes the blob visible under the writer's
    /// lease. A blob the namespace already had is held by the lease and is
    /// not an error. A failed check leaves the ingest to resume or abort.
    async fn commit(self: Box<Self>) -> Result<Digest>;

    /// Removes the ingest.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Other nodes of a cluster that may hold a blob (cluster mode): a pull
/// takes a layer from one of them before it asks the registry.
#[tonic::async_trait]
pub trait PeerBlobs: Send + Sync {
    /// The peers that say they hold `digest`, best first (never this node).
    async fn holders(&self, digest: &str) -> Vec<String>;

    /// The blob's bytes from `offset`, from peer `peer`; with `follow`, also
    /// while that peer is still downloading it (the bytes come as they
    /// arrive there).
    async fn read(
        &self,
        peer: &str,
        digest: &str,
        offset: u64,
        follow: bool,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>>;

    /// The node whose claim on downloading `digest` stands, if any.
    async fn claimant(&self, digest: &str) -> Option<String>;

    /// This node committed `digest` (in namespace `ns`) that another node
    /// downloaded: it is published at once.
    async fn holds(&self, digest: &str, ns: &str);

    /// Claims the registry download of `digest` for this node. True: this
    /// node downloads it (and calls `downloaded`); false: another node's
    /// claim stands — it downloads, and this node reads from it once it
    /// holds the blob. Without the cluster's store, every node is on its own:
    /// true.
    async fn claim(&self, digest: &str) -> bool;

    /// This node committed `digest` (in namespace `ns`): it is published at
    /// once and the claim is dropped.
    async fn downloaded(&self, digest: &str, ns: &str);

    /// This node's download of `digest` failed: its claim is dropped at
    /// once, so the others need not wait for it to lapse.
    async fn abandon(&self, digest: &str);

    /// What image `name` points at on the other nodes (namespace `ns`): the
    /// most recently updated, and the node that has it. None: no node holds
    /// it, or the cluster cannot be asked.
    async fn image(&self, ns: &str, name: &str) -> Option<(ImageTarget, String)>;
}

/// The build cache of a cluster's other nodes (cluster mode): a step
/// another node built is reused here, its layer taken from a node that
/// holds it.
#[tonic::async_trait]
pub trait SharedBuildCache: Send + Sync {
    /// The records other nodes published for step key `key` (each the JSON
    /// a node's build cache keeps for the key), nearest first.
    async fn lookup(&self, key: &str) -> Vec<Vec<u8>>;

    /// Brings blob `digest` (`size` bytes) from a node that holds it into
    /// namespace `ns` under `lease`, verified against its digest. Ok(false):
    /// no node gave it.
    async fn fetch(&self, ns: &str, lease: &str, digest: &str, size: i64) -> Result<bool>;
}
