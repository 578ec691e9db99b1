//! The narrow content-store API (`molde_common::store::ContentStore`) over this
//! crate's own state: what a transfer service in this process writes and reads,
//! with the GC lock held inside each commit.

use molde_common::errdefs::OrLog;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use molde_common::Digest;
use molde_common::store::{BlobInfo, BlobWriter, ByteStream, ContentStore, Held, ImageTarget};
use molde_meta::Txn;

use crate::blobs::Ingest;
use crate::error::{ContentError, Result};
use crate::records::{self, ContentRecord, DescriptorRecord, GC_EXPIRE, ImageRecord, Labels, LeaseRecord};
use crate::state::{Shared, WriterGuard};

/// The content store of this process.
#[derive(Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
}

impl LocalStore {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn hold_blocking(&self, ns: &str, lease: &str, digest: &Digest, size: i64) -> Result<Option<Held>> {
        let shared = &self.shared;
        // Held from the check to the lease's update (a collection between
        // them would sweep what the lease was about to hold) and the record.
        let _gc = shared.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let key = records::content_key(ns, &digest.to_string());
        if shared.store.get(&key)?.is_some() {
            let d = digest.to_string();
            shared.modify_lease(ns, lease, |l| {
                l.resources.insert(("content".into(), d.clone()));
            })?;
            return Ok(Some(Held::Present));
        }
        if let Ok(md) = std::fs::metadata(shared.blobs.blob_path(digest))
            && md.len() as i64 == size
        {
            shared.record_content(ns, Some(lease), digest, size, Labels::new())?;
            return Ok(Some(Held::Shared));
        }
        Ok(None)
    }

    /// The blob's file, if namespace `ns` holds it.
    fn open(&self, ns: &str, digest: &str) -> Result<std::fs::File> {
        if self
            .shared
            .store
            .get(&records::content_key(ns, digest))?
            .is_none()
        {
            return Err(ContentError::NotFound(format!("content {digest}")));
        }
        let d = Digest::parse_field(digest, "digest")?;
        std::fs::File::open(self.shared.blobs.blob_path(&d))
            .map_err(ContentError::io(format!("reading {digest}")))
    }
}

/// Runs file and metadata work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContentError::Io {
            context: what.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?
}

#[tonic::async_trait]
impl ContentStore for LocalStore {
    async fn info(&self, ns: &str, digest: &str) -> Result<Option<BlobInfo>> {
        Ok(
            records::load::<ContentRecord>(&*self.shared.store, &records::content_key(ns, digest))?.map(
                |(r, _)| BlobInfo {
                    size: r.size,
                    labels: r.labels.into_iter().collect(),
                },
            ),
        )
    }

    async fn read(&self, ns: &str, digest: &str, max: usize) -> Result<Vec<u8>> {
        let f = self.open(ns, digest)?;
        let digest = digest.to_string();
        blocking("reading a blob", move || {
            let mut out = Vec::new();
            f.take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(ContentError::io(format!("reading {digest}")))?;
            if out.len() > max {
                return Err(ContentError::FailedPrecondition(format!(
                    "{digest} is over {max} bytes"
                )));
            }
            Ok(out)
        })
        .await
    }

    async fn read_stream(&self, ns: &str, digest: &str) -> Result<ByteStream> {
        let f = self.open(ns, digest)?;
        let digest = digest.to_string();
        let s = futures::stream::unfold(Some(f), move |f| {
            let digest = digest.clone();
            async move {
                let mut f = f?;
                let r = blocking("reading a blob", move || {
                    let mut buf = vec![0u8; 4 << 20];
                    let n = f
                        .read(&mut buf)
                        .map_err(ContentError::io(format!("reading {digest}")))?;
                    buf.truncate(n);
                    Ok((f, buf))
                })
                .await;
                match r {
                    Ok((_, buf)) if buf.is_empty() => None,
                    Ok((f, buf)) => Some((Ok(Bytes::from(buf)), Some(f))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Ok(Box::pin(s))
    }

    async fn hold(&self, ns: &str, lease: &str, digest: &Digest, size: i64) -> Result<Option<Held>> {
        self.hold_blocking(ns, lease, digest, size)
    }

    async fn put(&self, ns: &str, lease: &str, digest: &Digest, data: Bytes) -> Result<()> {
        if self
            .hold_blocking(ns, lease, digest, data.len() as i64)?
            .is_some()
        {
            return Ok(());
        }
        // An ingest of its own: concurrent pulls of one image store the same
        // manifest at once, and must not write into one another's file.
        let reference = format!("put-{digest}-{}", uuid::Uuid::new_v4().simple());
        let (me, ns, lease, digest) = (self.clone(), ns.to_string(), lease.to_string(), digest.clone());
        blocking("storing a blob", move || {
            let shared = &me.shared;
            let mut ingest = shared
                .blobs
                .open_ingest(&ns, &reference, data.len() as i64, Some(&digest))?;
            let written = ingest.append(&data).and_then(|()| {
                shared.commit(
                    &ns,
                    Some(&lease),
                    ingest,
                    data.len() as i64,
                    Some(&digest),
                    Labels::new(),
                )
            });
            match written {
                Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(()),
                Err(e) => {
                    shared
                        .blobs
                        .abort_ingest(&ns, &reference)
                        .or_log("removing a failed ingest");
                    Err(e)
                }
            }
        })
        .await
    }

    async fn writer(
        &self,
        ns: &str,
        lease: &str,
        reference: &str,
        size: i64,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn BlobWriter>> {
        let guard = self.shared.lock_writer(ns, reference)?;
        let ingest = {
            let shared = self.shared.clone();
            let (ns, r, d) = (ns.to_string(), reference.to_string(), expected.cloned());
            blocking("opening an ingest", move || {
                shared.blobs.open_ingest(&ns, &r, size, d.as_ref())
            })
            .await?
        };
        Ok(Box::new(LocalWriter {
            shared: self.shared.clone(),
            ns: ns.to_string(),
            lease: lease.to_string(),
            reference: reference.to_string(),
            size,
            expected: expected.cloned(),
            ingest: Some(ingest),
            _guard: guard,
        }))
    }

    async fn set_labels(&self, ns: &str, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        self.shared.set_labels(ns, digest, labels)
    }

    async fn image(&self, ns: &str, name: &str) -> Result<Option<ImageTarget>> {
        Ok(
            records::load::<ImageRecord>(&*self.shared.store, &records::image_key(ns, name))?.map(
                |(r, _)| ImageTarget {
                    media_type: r.target.media_type,
                    digest: r.target.digest,
                    size: r.target.size,
                },
            ),
        )
    }

    async fn put_image(&self, ns: &str, name: &str, target: ImageTarget) -> Result<()> {
        self.shared.put_image(
            ns,
            name,
            DescriptorRecord {
                media_type: target.media_type,
                digest: target.digest,
                size: target.size,
                annotations: Default::default(),
            },
        )
    }

    async fn create_lease(&self, ns: &str, prefix: &str, ttl: Duration) -> Result<String> {
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        let expire = (chrono::Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rec = LeaseRecord {
            created_at: molde_common::now_nanos(),
            labels: [(GC_EXPIRE.to_string(), expire)].into(),
            resources: Default::default(),
        };
        self.shared.ensure_namespace(ns)?;
        self.shared
            .store
            .txn(Txn::new().put(records::lease_key(ns, &id), records::encode(&rec)))?;
        Ok(id)
    }

    async fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        self.shared
            .store
            .txn(Txn::new().delete(records::lease_key(ns, id)))?;
        self.shared.schedule_gc();
        Ok(())
    }
}

/// An ingest of this process's store, appended to on blocking threads.
struct LocalWriter {
    shared: Arc<Shared>,
    ns: String,
    lease: String,
    reference: String,
    size: i64,
    expected: Option<Digest>,
    ingest: Option<Ingest>,
    _guard: WriterGuard,
}

impl LocalWriter {
    async fn with_ingest(
        &mut self,
        f: impl FnOnce(&mut Ingest) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let mut ingest = self.ingest.take().expect("an open writer has its ingest");
        let (ingest, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut ingest);
            (ingest, r)
        })
        .await
        .map_err(|e| ContentError::Io {
            context: format!("writing ingest {:?}", self.reference),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.ingest = Some(ingest);
        r
    }
}

#[tonic::async_trait]
impl BlobWriter for LocalWriter {
    fn offset(&self) -> u64 {
        self.ingest.as_ref().map_or(0, Ingest::offset)
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.with_ingest(move |i| i.append(&data)).await
    }

    async fn reset(&mut self) -> Result<()> {
        self.with_ingest(Ingest::reset).await
    }

    async fn commit(mut self: Box<Self>) -> Result<Digest> {
        let ingest = self.ingest.take().expect("an open writer has its ingest");
        let me = *self;
        blocking("committing an ingest", move || {
            let digest = ingest.digest();
            match me.shared.commit(
                &me.ns,
                Some(&me.lease),
                ingest,
                me.size,
                me.expected.as_ref(),
                Labels::new(),
            ) {
                Ok(d) => Ok(d),
                // The namespace had it; the commit put it under the lease.
                Err(ContentError::AlreadyExists(_)) => Ok(digest),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let me = *self;
        // The writer lock is held until the ingest is gone.
        blocking("removing an ingest", move || {
            me.shared.blobs.abort_ingest(&me.ns, &me.reference)
        })
        .await
    }
}
