//! Getting blobs into the content store during a pull: bytes already in hand,
//! and registry downloads streamed straight into an ingest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use molde_common::Digest;
use oci_client::Reference;

use crate::error::{ContentError, Result};
use crate::records::{self, Labels};
use crate::state::Shared;

use super::registry::{ATTEMPTS, Registry, backoff};

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

/// How a blob came to be in the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The namespace already had it.
    Present,
    /// Another namespace had the bytes; this one got a record.
    Shared,
    /// Downloaded this many bytes.
    Downloaded(u64),
}

/// Makes sure `ns` has the blob `digest` (of `size` bytes), under `lease`.
pub fn adopt_existing(
    shared: &Shared,
    ns: &str,
    lease: &str,
    digest: &Digest,
    size: i64,
) -> Result<Option<Fetched>> {
    let key = records::content_key(ns, &digest.to_string());
    if shared.store.get(&key)?.is_some() {
        let d = digest.to_string();
        shared.modify_lease(ns, lease, |l| {
            l.resources.insert(("content".into(), d.clone()));
        })?;
        return Ok(Some(Fetched::Present));
    }
    let _gc = shared.gc_lock.read().unwrap_or_else(|p| p.into_inner());
    let path = shared.blobs.blob_path(digest);
    if let Ok(md) = std::fs::metadata(&path)
        && md.len() as i64 == size
    {
        shared.record_content(ns, Some(lease), digest, size, Labels::new())?;
        return Ok(Some(Fetched::Shared));
    }
    Ok(None)
}

/// Stores bytes a pull already holds (a manifest, an index, a config).
pub fn put_bytes(shared: &Shared, ns: &str, lease: &str, digest: &Digest, data: &[u8]) -> Result<()> {
    if adopt_existing(shared, ns, lease, digest, data.len() as i64)?.is_some() {
        return Ok(());
    }
    // An ingest of its own: concurrent pulls of one image store the same
    // manifest at once, and must not write into one another's file.
    let reference = format!("pull-{digest}-{}", uuid::Uuid::new_v4().simple());
    let mut ingest = shared
        .blobs
        .open_ingest(ns, &reference, data.len() as i64, Some(digest))?;
    let written = ingest.append(data).and_then(|()| {
        shared.commit(
            ns,
            Some(lease),
            ingest,
            data.len() as i64,
            Some(digest),
            Labels::new(),
        )
    });
    match written {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(()),
        Err(e) => {
            let _ = shared.blobs.abort_ingest(ns, &reference);
            Err(e)
        }
    }
}

/// Downloads `digest` from the registry into an ingest and commits it. Resumes
/// an ingest an earlier pull (or an earlier molded) left with a Range request,
/// and retries broken downloads from where they broke.
/// Where a download goes: a namespace of the content store, under a lease.
pub struct Dest<'a> {
    pub shared: &'a Arc<Shared>,
    pub ns: &'a str,
    pub lease: &'a str,
}

pub async fn download(
    dest: &Dest<'_>,
    reg: &Registry,
    reference: &Reference,
    digest: &Digest,
    size: i64,
    progress: impl Fn(u64),
) -> Result<u64> {
    let Dest { shared, ns, lease } = *dest;
    let ingest_ref = format!("pull-{digest}");
    let guard = shared.lock_writer(ns, &ingest_ref)?;
    let ingest = {
        let shared = shared.clone();
        let (ns, r, d) = (ns.to_string(), ingest_ref.clone(), digest.clone());
        tokio::task::spawn_blocking(move || shared.blobs.open_ingest(&ns, &r, size, Some(&d)))
            .await
            .map_err(|e| ContentError::Io {
                context: "opening ingest".into(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    let mut ingest = Some(ingest);
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
                    && matches!(&e, ContentError::Remote { code, .. } if *code == tonic::Code::Unavailable) =>
            {
                tracing::warn!(%digest, attempt, error = %e, "blob request failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if offset > 0 && !partial {
            ingest.as_mut().expect("open").reset()?;
        } else if offset > 0 && partial {
            tracing::info!(%digest, offset, "resuming download");
        }
        // Chunks are gathered to ~1 MiB and written on a blocking thread.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
        let mut writer_ingest = ingest.take().expect("open");
        let writer = tokio::task::spawn_blocking(move || {
            let r = (|| {
                for chunk in rx {
                    writer_ingest.append(&chunk)?;
                }
                Ok::<_, ContentError>(())
            })();
            (writer_ingest, r)
        });
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    fetched += chunk.len() as u64;
                    buf.extend_from_slice(&chunk);
                    if buf.len() >= 1 << 20 {
                        if tx.send(buf.split().freeze()).is_err() {
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
            let _ = tx.send(buf.split().freeze());
        }
        drop(tx);
        let (back, wrote) = writer.await.map_err(|e| ContentError::Io {
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
                return Err(ContentError::Remote {
                    code: tonic::Code::Unavailable,
                    message: format!("fetching {digest} of {reference}: {e} (after {attempt} attempts)"),
                });
            }
        }
    }
    let ingest = ingest.take().expect("open");
    let shared2 = shared.clone();
    let (ns2, lease2, d2) = (ns.to_string(), lease.to_string(), digest.clone());
    let res = tokio::task::spawn_blocking(move || {
        shared2.commit(&ns2, Some(&lease2), ingest, size, Some(&d2), Labels::new())
    })
    .await
    .map_err(|e| ContentError::Io {
        context: "committing download".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    drop(guard);
    match res {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(fetched),
        Err(ContentError::FailedPrecondition(m)) => Err(ContentError::Remote {
            code: tonic::Code::DataLoss,
            message: format!("blob {digest} of {reference} does not match its descriptor: {m}"),
        }),
        Err(e) => Err(e),
    }
}
