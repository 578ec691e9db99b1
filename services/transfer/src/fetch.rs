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
    let Dest { store, ns, lease } = *dest;
    let ingest_ref = format!("pull-{digest}");
    let d = digest.to_string();
    let mut fetched = 0u64;
    for peer in peers.holders(&d).await {
        let mut w = store.writer(ns, lease, &ingest_ref, size, Some(digest)).await?;
        let mut stream = match peers.read(&peer, &d, w.offset()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%digest, %peer, error = %e, "a peer could not serve a blob");
                continue;
            }
        };
        let mut broke = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    fetched += c.len() as u64;
                    w.write(c).await?;
                    progress(fetched);
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = broke {
            tracing::warn!(%digest, %peer, error = %e, "a peer broke off; the next one resumes");
            continue;
        }
        match w.commit().await {
            Ok(_) => {
                tracing::info!(%digest, %peer, "blob taken from a peer");
                return Ok(Some(fetched));
            }
            Err(Error::FailedPrecondition(m)) => {
                tracing::warn!(%digest, %peer, "a peer's bytes do not match the digest ({m}); dropped");
                store
                    .writer(ns, lease, &ingest_ref, size, Some(digest))
                    .await?
                    .reset()
                    .await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// How long a node waits for another node's registry download of a blob it
/// also wants before it downloads the blob itself.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// `digest` the cluster's way: from a peer that holds it; else, if no other
/// node is downloading it, from the registry (claimed, so the others wait and
/// then read it from this node); else, once the node that claimed it holds
/// it, from that node. A claim that lapses (its node died) is taken over.
pub async fn through_cluster(
    dest: &Dest<'_>,
    peers: &dyn molde_common::store::PeerBlobs,
    reg: &Registry,
    reference: &Reference,
    digest: &Digest,
    size: i64,
    progress: &(impl Fn(u64) + Sync),
) -> Result<u64> {
    let d = digest.to_string();
    let started = tokio::time::Instant::now();
    let mut waiting = false;
    loop {
        if let Some(n) = from_peers(dest, peers, digest, size, progress).await? {
            return Ok(n);
        }
        if started.elapsed() > CLAIM_WAIT || peers.claim(&d).await {
            // The node whose claim this was may have published the blob and
            // dropped its claim just after this node last looked.
            let n = match from_peers(dest, peers, digest, size, progress).await? {
                Some(n) => n,
                None => download(dest, reg, reference, digest, size, progress).await?,
            };
            peers.downloaded(&d, dest.ns).await;
            return Ok(n);
        }
        if !waiting {
            tracing::info!(%digest, "another node is downloading this blob; waiting to read it from there");
            waiting = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Downloads `digest` from the registry into an ingest and commits it. Resumes
/// an ingest an earlier pull (or an earlier molded) left with a Range request,
/// and retries broken downloads from where they broke.
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
        let (mut stream, partial) = match reg.blob(reference, &digest.to_string(), offset).await {
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
        // Chunks are gathered to ~1 MiB and written by a task of their own,
        // so the network and the disk are busy at once.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let mut w: Box<dyn BlobWriter> = ingest.take().expect("open");
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
        let (back, wrote) = writer.await.map_err(|e| Error::Io {
            context: "writing download".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        ingest = Some(back);
        wrote?;
        progress(fetched);
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
        Ok(_) => Ok(fetched),
        Err(Error::FailedPrecondition(m)) => Err(Error::Remote {
            code: tonic::Code::DataLoss,
            message: format!("blob {digest} of {reference} does not match its descriptor: {m}"),
        }),
        Err(e) => Err(e),
    }
}
