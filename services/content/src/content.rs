//! containerd.services.content.v1.Content: reading, listing, labelling and
//! deleting committed blobs, and the status of ingests. Writes live in `ingest.rs`.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use molde_api::containerd::services::content::v1 as api;
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Txn, TxnOutcome};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{ContentError, Result};
use crate::records::{self, ContentRecord, timestamp};
use crate::state::Shared;
use molde_common::context::RequestContext;
use molde_common::digest::Digest;

/// Largest data chunk in one Read response.
const READ_CHUNK: usize = 1 << 20;
/// Infos per List response message.
const LIST_BATCH: usize = 100;

/// How long a followed download may write nothing before its reader gives up.
const FOLLOW_STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Streams blob `digest` from `offset` as the ingest writing it (`data`,
/// `total` bytes once done) grows, until all of it is sent. The file stays
/// open, so a commit (a rename to `blob`) changes nothing for the reader; a
/// download that restarts (the file shrinks), is given up (gone without a
/// blob) or stalls ends the stream with an error, and the reader turns
/// elsewhere.
fn follow(
    digest: &Digest,
    data: &std::path::Path,
    blob: &std::path::Path,
    total: i64,
    offset: i64,
    tx: &mpsc::Sender<std::result::Result<api::ReadContentResponse, Status>>,
) {
    let fail = |s: Status| {
        let _ = tx.blocking_send(Err(s));
    };
    let mut file = match std::fs::File::open(data).or_else(|_| std::fs::File::open(blob)) {
        Ok(f) => f,
        Err(e) => {
            return fail(Status::not_found(format!(
                "content {digest}: its download ended ({e})"
            )));
        }
    };
    let mut pos = offset;
    if let Err(e) = file.seek(SeekFrom::Start(pos as u64)) {
        return fail(Status::internal(format!("seeking content {digest}: {e}")));
    }
    let mut quiet_since = std::time::Instant::now();
    let mut buf = vec![0u8; READ_CHUNK];
    while total <= 0 || pos < total {
        match file.read(&mut buf) {
            Ok(0) => {
                let len = file.metadata().map(|m| m.len() as i64).unwrap_or(0);
                if len < pos {
                    return fail(Status::aborted(format!(
                        "content {digest}: its download started over"
                    )));
                }
                let committed = std::fs::metadata(blob).is_ok_and(|m| m.len() as i64 == len);
                if committed && len == pos {
                    break;
                }
                if !committed && !data.exists() {
                    return fail(Status::aborted(format!(
                        "content {digest}: its download was given up"
                    )));
                }
                if quiet_since.elapsed() > FOLLOW_STALL {
                    return fail(Status::unavailable(format!(
                        "content {digest}: its download stalled"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(n) => {
                quiet_since = std::time::Instant::now();
                let msg = api::ReadContentResponse {
                    offset: pos,
                    data: buf[..n].to_vec().into(),
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return;
                }
                pos += n as i64;
            }
            Err(e) => {
                return fail(Status::data_loss(format!(
                    "reading content {digest} at {pos}: {e}"
                )));
            }
        }
    }
}

/// The content.v1 gRPC service.
#[derive(Clone)]
pub struct ContentService {
    pub(crate) shared: Arc<Shared>,
}

struct ContentFields<'a>(&'a str, &'a ContentRecord);

impl Fields for ContentFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "digest" => Some(self.0.to_string()),
            "size" => Some(self.1.size.to_string()),
            "labels" => label_field(&self.1.labels, path),
            _ => None,
        }
    }
}

pub(crate) fn info(digest: &str, r: &ContentRecord) -> api::Info {
    api::Info {
        digest: digest.to_string(),
        size: r.size,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        labels: r.labels.clone().into_iter().collect(),
    }
}

pub(crate) fn ingest_status(st: &crate::blobs::IngestStatus) -> api::Status {
    api::Status {
        started_at: Some(timestamp(st.meta.started_at)),
        updated_at: Some(timestamp(st.updated_at)),
        r#ref: st.meta.reference.clone(),
        offset: st.offset,
        total: st.meta.total,
        expected: st.meta.expected.clone().unwrap_or_default(),
    }
}

impl ContentService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The content record of `digest` in `ns`, or NotFound.
    pub(crate) fn record(&self, ns: &str, digest: &Digest) -> Result<(ContentRecord, u64)> {
        records::load(
            &*self.shared.store,
            &records::content_key(ns, &digest.to_string()),
        )?
        .ok_or_else(|| ContentError::NotFound(format!("content {digest}")))
    }

    fn update_labels(&self, ctx: &RequestContext, req: api::UpdateRequest) -> Result<api::Info> {
        let new = req
            .info
            .ok_or_else(|| ContentError::InvalidArgument("update needs info".into()))?;
        let digest = Digest::parse_field(&new.digest, "info.digest")?;
        let key = records::content_key(&ctx.namespace, &digest.to_string());
        let new_labels: records::Labels = new.labels.into_iter().collect();
        molde_common::labels::validate(&new_labels)?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        for p in &paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(ContentError::InvalidArgument(format!(
                    "cannot update field {p:?} of content {digest}: only labels are mutable"
                )));
            }
        }
        loop {
            let (mut rec, rev) = self.record(&ctx.namespace, &digest)?;
            if paths.is_empty() {
                rec.labels = new_labels.clone();
            } else {
                molde_common::labels::apply_mask(&mut rec.labels, &new_labels, &paths)?;
            }
            rec.updated_at = records::now_nanos();
            let out = self.shared.store.txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .put(key.clone(), records::encode(&rec)),
            )?;
            if let TxnOutcome::Committed { .. } = out {
                return Ok(info(&digest.to_string(), &rec));
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl api::content_server::Content for ContentService {
    async fn info(
        &self,
        req: Request<api::InfoRequest>,
    ) -> std::result::Result<Response<api::InfoResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let digest = Digest::parse_field(&req.get_ref().digest, "digest")?;
        let (rec, _) = self.record(&ctx.namespace, &digest)?;
        Ok(Response::new(api::InfoResponse {
            info: Some(info(&digest.to_string(), &rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateRequest>,
    ) -> std::result::Result<Response<api::UpdateResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let info = self.update_labels(&ctx, req.into_inner())?;
        Ok(Response::new(api::UpdateResponse { info: Some(info) }))
    }

    type ListStream = BoxStream<api::ListContentResponse>;

    async fn list(
        &self,
        req: Request<api::ListContentRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let ctx = RequestContext::of(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(ContentError::from)?;
        let prefix = records::content_prefix(&ctx.namespace);
        let mut infos = Vec::new();
        for e in self.shared.store.range(&prefix).map_err(ContentError::from)? {
            let digest = &e.key[prefix.len()..];
            let rec: ContentRecord = records::decode(&e)?;
            if filter.matches(&ContentFields(digest, &rec)) {
                infos.push(info(digest, &rec));
            }
        }
        let batches: Vec<_> = infos
            .chunks(LIST_BATCH)
            .map(|c| Ok(api::ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(
        &self,
        req: Request<api::DeleteContentRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let digest = Digest::parse_field(&req.get_ref().digest, "digest")?;
        let key = records::content_key(&ctx.namespace, &digest.to_string());
        let (_, rev) = self.record(&ctx.namespace, &digest)?;
        let out = self
            .shared
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .delete(key),
            )
            .map_err(ContentError::from)?;
        if out == TxnOutcome::CompareFailed {
            return Err(Status::aborted(format!(
                "content {digest} changed during delete; retry"
            )));
        }
        tracing::debug!(namespace = %ctx.namespace, %digest, "content deleted");
        self.shared.schedule_gc();
        Ok(Response::new(()))
    }

    type ReadStream = ReceiverStream<std::result::Result<api::ReadContentResponse, Status>>;

    async fn read(
        &self,
        req: Request<api::ReadContentRequest>,
    ) -> std::result::Result<Response<Self::ReadStream>, Status> {
        let ctx = RequestContext::of(&req)?;
        let req_follow = req.metadata().get(molde_common::context::FOLLOW_INGEST).is_some();
        let r = req.into_inner();
        let digest = Digest::parse_field(&r.digest, "digest")?;
        let rec = match self.record(&ctx.namespace, &digest) {
            Ok((rec, _)) => rec,
            Err(ContentError::NotFound(m)) => {
                let Some((data, total)) = req_follow
                    .then(|| self.shared.blobs.ingest_writing(&digest))
                    .flatten()
                else {
                    return Err(ContentError::NotFound(m).into());
                };
                let (tx, rx) = mpsc::channel(4);
                let blob = self.shared.blobs.blob_path(&digest);
                tokio::task::spawn_blocking(move || {
                    follow(&digest, &data, &blob, total, r.offset.max(0), &tx)
                });
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
            Err(e) => return Err(e.into()),
        };
        if r.offset < 0 || r.size < 0 {
            return Err(ContentError::InvalidArgument(format!(
                "read of content {digest}: offset {} and size {} must not be negative",
                r.offset, r.size
            ))
            .into());
        }
        let offset = r.offset;
        if offset > rec.size {
            return Err(ContentError::OutOfRange(format!(
                "read of content {digest} at offset {offset} is past its size {}",
                rec.size
            ))
            .into());
        }
        // A size past the end (up to i64::MAX) reads to the end.
        let end = if r.size > 0 {
            offset.saturating_add(r.size).min(rec.size)
        } else {
            rec.size
        };
        let mut file = self.shared.blobs.open_blob(&digest)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let send = |m| tx.blocking_send(m).is_ok();
            if let Err(e) = file.seek(SeekFrom::Start(offset as u64)) {
                send(Err(Status::internal(format!("seeking content {digest}: {e}"))));
                return;
            }
            let mut pos = offset;
            while pos < end {
                let n = ((end - pos) as usize).min(READ_CHUNK);
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut buf) {
                    send(Err(Status::data_loss(format!(
                        "reading content {digest} at {pos}: {e}"
                    ))));
                    return;
                }
                if !send(Ok(api::ReadContentResponse {
                    offset: pos,
                    data: buf.into(),
                })) {
                    return;
                }
                pos += n as i64;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        req: Request<api::StatusRequest>,
    ) -> std::result::Result<Response<api::StatusResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let st = self
            .shared
            .blobs
            .ingest_status(&ctx.namespace, &req.get_ref().r#ref)?;
        Ok(Response::new(api::StatusResponse {
            status: Some(ingest_status(&st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<api::ListStatusesRequest>,
    ) -> std::result::Result<Response<api::ListStatusesResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(ContentError::from)?;
        let mut statuses = Vec::new();
        for (_, st) in self.shared.blobs.list_ingests()? {
            let Ok(st) = st else { continue };
            if st.meta.namespace != ctx.namespace {
                continue;
            }
            let s = ingest_status(&st);
            if filter.matches(&StatusFields(&s)) {
                statuses.push(s);
            }
        }
        statuses.sort_by(|a, b| a.r#ref.cmp(&b.r#ref));
        Ok(Response::new(api::ListStatusesResponse { statuses }))
    }

    type WriteStream = ReceiverStream<std::result::Result<api::WriteContentResponse, Status>>;

    async fn write(
        &self,
        req: Request<Streaming<api::WriteContentRequest>>,
    ) -> std::result::Result<Response<Self::WriteStream>, Status> {
        crate::ingest::write(self.shared.clone(), req).await
    }

    async fn abort(&self, req: Request<api::AbortRequest>) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let reference = &req.get_ref().r#ref;
        let _guard = self.shared.lock_writer(&ctx.namespace, reference)?;
        self.shared.blobs.abort_ingest(&ctx.namespace, reference)?;
        tracing::debug!(namespace = %ctx.namespace, reference, "ingest aborted");
        Ok(Response::new(()))
    }
}

struct StatusFields<'a>(&'a api::Status);

impl Fields for StatusFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "ref" => Some(self.0.r#ref.clone()),
            "expected" => Some(self.0.expected.clone()),
            _ => None,
        }
    }
}
