//! Getting blobs from a registry into the content store: one download per
//! digest at a time, streamed straight into an ingest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use molde_common::Digest;
use oci_client::Reference;

use molde_common::errdefs::{Error, Result};
use molde_common::store::{BlobWriter, ContentStore};

use crate::registry::{ATTEMPTS, Registry, backoff};

/// One download per digest at a time, whichever pulls want it: the second
/// waiter finds the blob committed.
#[derive(Default)]
pub struct Inflight {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inflight {
    pub async fn hold(&self, digest: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }
}

/// Where a download goes: a namespace of the content store, under a lease.
pub struct Dest<'a> {
    pub store: &'a dyn ContentStore,
    pub ns: &'a str,
    pub lease: &'a str,
}

/// Takes `digest` from a peer of the cluster that holds it, into an ingest,
/// and commits it: a peer that breaks off is left for the next from where it
/// stopped; bytes that do not match the digest (a lying or broken peer) are
/// dropped at commit and the next peer starts over. Ok(None) when no peer
/// gave it: the caller goes to the registry.
pub async fn from_peers(
    dest: &Dest<'_>,
    peers: &dyn molde_common::store::PeerBlobs,
    digest: &Digest,
    size: i64,
    progress: &impl Fn(u64),
) -> Result<Option<u64>> {
    for peer in peers.holders(&digest.to_string()).await {
        if let Some(n) = from_peer(dest, peers, &peer, digest, size, false, progress).await? {
            molde_common::metrics::PEER_BLOBS.add(1);
            molde_common::metrics::PEER_BYTES.add(n);
            return Ok(Some(n));
        }
    }
    Ok(None)
}

/// `digest` from one peer (`follow`: also while that peer downloads it),
/// resumed where an earlier attempt left the ingest. Ok(None): the peer did
/// not give all of it, or gave bytes that are not the blob (dropped).
#[tracing::instrument(target = "molde_trace", name = "blob from a peer", skip_all, fields(%digest, peer = peer))]
async fn from_peer(
    dest: &Dest<'_>,
    peers: &dyn molde_common::store::PeerBlobs,
    peer: &str,
    digest: &Digest,
    size: i64,
    follow: bool,
    progress: &impl Fn(u64),
) -> Result<Option<u64>> {
    let Dest { store, ns, lease } = *dest;
    let ingest_ref = format!("pull-{digest}");
    let d = digest.to_string();
    let w = store.writer(ns, lease, &ingest_ref, size, Some(digest)).await?;
    let stream = match peers.read(peer, &d, w.offset(), follow).await {
        Ok(s) => s,
        // Following: the peer may not have started its download yet.
        Err(e) if follow => {
            tracing::debug!(%digest, %peer, error = %e, "nothing to follow yet");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(%digest, %peer, error = %e, "a peer could not serve a blob");
            return Ok(None);
        }
    };
    let (w, fetched, failure) = pipe(w, stream, progress).await?;
    match failure {
        None => {}
        Some(e) if follow && fetched == 0 => {
            tracing::debug!(%digest, %peer, error = %e, "nothing to follow yet");
            return Ok(None);
        }
        Some(e) => {
            tracing::warn!(%digest, %peer, error = %e, "a peer broke off; the next one resumes");
            return Ok(None);
        }
    }
    match w.commit().await {
        Ok(_) => {
            let how = if follow {
                "blob taken from a peer as it downloaded it"
            } else {
                "blob taken from a peer"
            };
            tracing::info!(%digest, %peer, "{how}");
            Ok(Some(fetched))
        }
        Err(Error::FailedPrecondition(m)) => {
            tracing::warn!(%digest, %peer, "a peer's bytes do not match the digest ({m}); dropped");
            store
                .writer(ns, lease, &ingest_ref, size, Some(digest))
                .await?
                .reset()
                .await?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How long a node waits for another node's registry download of a blob it
/// also wants before it downloads the blob itself.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `digest` the cluster's way: from a peer that holds it; else, if no other
/// node is downloading it, from the registry (claimed, so the others read it
/// from this node as it arrives); else from the node that claimed it, as it
/// downloads it. A claim that lapses (its node died) is taken over; a
/// claimant that breaks off is followed again or, once its claim is gone,
/// replaced — the ingest keeps what arrived. Only the registry download
/// takes one of `registry_slots`.
pub async fn through_cluster(
    dest: &Dest<'_>,
    peers: &dyn molde_common::store::PeerBlobs,
    (reg, reference, registry_slots): (&Registry, &Reference, &tokio::sync::Semaphore),
    digest: &Digest,
    size: i64,
    progress: &(impl Fn(u64) + Sync),
) -> Result<u64> {
    let d = digest.to_string();
    let started = tokio::time::Instant::now();
    let mut waiting = false;
    let cancelled = |_| Error::FailedPrecondition("pull cancelled".into());
    loop {
        if let Some(n) = from_peers(dest, peers, digest, size, progress).await? {
            return Ok(n);
        }
        // A node claims a download only when it can start it: claims spread
        // over the nodes instead of piling up on the first.
        let (slot, mut claimant) = match registry_slots.try_acquire() {
            Ok(s) => (Some(s), None),
            Err(_) => match peers.claimant(&d).await {
                None => (Some(registry_slots.acquire().await.map_err(cancelled)?), None),
                Some(c) => (None, Some(c)),
            },
        };
        if let Some(_slot) = slot
            && (started.elapsed() > CLAIM_WAIT || peers.claim(&d).await)
        {
            // The node whose claim this was may have published the blob and
            // dropped its claim just after this node last looked.
            let got = match from_peers(dest, peers, digest, size, progress).await {
                Ok(Some(n)) => Ok(n),
                Ok(None) => download(dest, reg, reference, digest, size, progress).await,
                Err(e) => Err(e),
            };
            match got {
                Ok(n) => {
                    peers.downloaded(&d, dest.ns).await;
                    return Ok(n);
                }
                // Whatever failed, the claim goes with it: the others do
                // not wait for a download that will not come.
                Err(e) => {
                    peers.abandon(&d).await;
                    return Err(e);
                }
            }
        }
        if claimant.is_none() {
            // The claim this node did not get: whose it is.
            claimant = peers.claimant(&d).await;
        }
        if let Some(claimant) = claimant {
            if !waiting {
                tracing::info!(%digest, %claimant, "another node is downloading this blob; reading it from there as it arrives");
                waiting = true;
            }
            if let Some(n) = from_peer(dest, peers, &claimant, digest, size, true, progress).await? {
                peers.holds(&d, dest.ns).await;
                return Ok(n);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Streams `stream` into `w`: chunks gathered to ~1 MiB and written by a
/// task of their own, so the network and the disk are busy at once. Gives
/// the writer back with the bytes received and the error that broke the
/// stream, if one did; a write that failed is the Err.
async fn pipe<E>(
    w: Box<dyn BlobWriter>,
    mut stream: futures::stream::BoxStream<'_, std::result::Result<Bytes, E>>,
    progress: &impl Fn(u64),
) -> Result<(Box<dyn BlobWriter>, u64, Option<E>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let mut w = w;
    let writer = tokio::spawn(async move {
        let mut r = Ok(());
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = w.write(chunk).await {
                r = Err(e);
                break;
            }
        }
        (w, r)
    });
    let mut fetched = 0u64;
    let mut buf = bytes::BytesMut::with_capacity(1 << 20);
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                fetched += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                if buf.len() >= 1 << 20 {
                    if tx.send(buf.split().freeze()).await.is_err() {
                        break;
                    }
                    progress(fetched);
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if !buf.is_empty() {
        let _ = tx.send(buf.split().freeze()).await;
    }
    drop(tx);
    let (w, wrote) = writer.await.map_err(|e| Error::Io {
        context: "writing a download".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    wrote?;
    progress(fetched);
    Ok((w, fetched, failure))
}

/// Downloads `digest` from the registry into an ingest and commits it. Resumes
/// an ingest an earlier pull (or an earlier molded) left with a Range request,
/// and retries broken downloads from where they broke.
#[tracing::instrument(target = "molde_trace", name = "blob from the registry", skip_all, fields(%digest, size = size))]
pub async fn download(
    dest: &Dest<'_>,
    reg: &Registry,
    reference: &Reference,
    digest: &Digest,
    size: i64,
    progress: impl Fn(u64),
) -> Result<u64> {
    let Dest { store, ns, lease } = *dest;
    let ingest_ref = format!("pull-{digest}");
    let mut ingest = Some(store.writer(ns, lease, &ingest_ref, size, Some(digest)).await?);
    let mut attempt = 0;
    let mut fetched = 0u64;
    loop {
        attempt += 1;
        let offset = ingest.as_ref().expect("open").offset();
        if offset as i64 == size && size > 0 {
            break;
        }
        let (stream, partial) = match reg.blob(reference, &digest.to_string(), offset).await {
            Ok(s) => s,
            Err(e)
                if attempt < ATTEMPTS
                    && matches!(&e, Error::Remote { code, .. } if *code == tonic::Code::Unavailable) =>
            {
                tracing::warn!(%digest, attempt, error = %e, "blob request failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if offset > 0 && !partial {
            ingest.as_mut().expect("open").reset().await?;
        } else if offset > 0 && partial {
            tracing::info!(%digest, offset, "resuming download");
        }
        let (back, n, failure) =
            pipe(ingest.take().expect("open"), stream, &|n| progress(fetched + n)).await?;
        ingest = Some(back);
        fetched += n;
        match failure {
            None => break,
            Some(e) if attempt < ATTEMPTS => {
                tracing::warn!(%digest, attempt, error = %e, "download broke; resuming");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Some(e) => {
                return Err(Error::Remote {
                    code: tonic::Code::Unavailable,
                    message: format!("fetching {digest} of {reference}: {e} (after {attempt} attempts)"),
                });
            }
        }
    }
    match ingest.take().expect("open").commit().await {
        Ok(_) => {
            molde_common::metrics::REGISTRY_BLOBS.add(1);
            molde_common::metrics::REGISTRY_BYTES.add(fetched);
            Ok(fetched)
        }
        Err(Error::FailedPrecondition(m)) => Err(Error::Remote {
            code: tonic::Code::DataLoss,
            message: format!("blob {digest} of {reference} does not match its descriptor: {m}"),
        }),
        Err(e) => Err(e),
    }
}
