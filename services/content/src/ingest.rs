//! The content Write stream: resumable ingests keyed by ref.
//!
//! One writer per ref at a time (a second stream gets `Unavailable` naming the
//! ref, which containerd clients retry). The session runs on a blocking thread:
//! it pulls messages from the stream, appends and hashes on the way, and on
//! COMMIT verifies size and digest before the blob becomes visible (see
//! `blobs.rs` for the rename that makes it so).

use std::sync::Arc;

use molde_api::containerd::services::content::v1::{self as api, WriteAction};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::blobs::Ingest;
use crate::error::{ContentError, Result};
use crate::records::{self, timestamp};
use crate::state::{Shared, WriterGuard};
use molde_common::context::RequestContext;
use molde_common::digest::Digest;

/// Messages decoded ahead of the session thread.
const READ_AHEAD: usize = 4;

type Tx = mpsc::Sender<std::result::Result<api::WriteContentResponse, Status>>;

pub(crate) async fn write(
    shared: Arc<Shared>,
    req: Request<Streaming<api::WriteContentRequest>>,
) -> std::result::Result<
    Response<ReceiverStream<std::result::Result<api::WriteContentResponse, Status>>>,
    Status,
> {
    let ctx = RequestContext::of(&req)?;
    if let Some(lease) = &ctx.lease {
        shared.check_lease(&ctx.namespace, lease)?;
    }
    let mut inbound = req.into_inner();
    let first = inbound.message().await?.ok_or_else(|| {
        ContentError::InvalidArgument("write stream closed before its first message".into())
    })?;
    if first.r#ref.is_empty() {
        return Err(ContentError::InvalidArgument("first write message must name a ref".into()).into());
    }
    let reference = first.r#ref.clone();
    let guard = shared.lock_writer(&ctx.namespace, &reference)?;
    let expected = parse_expected(&first.expected)?;
    if let Some(d) = &expected {
        exists_in_namespace(&shared, &ctx.namespace, ctx.lease.as_deref(), d)?;
    }
    shared.ensure_namespace(&ctx.namespace)?;
    if let Some(lease) = &ctx.lease {
        let r = reference.clone();
        shared.modify_lease(&ctx.namespace, lease, |l| {
            l.resources.insert(("ingests".into(), r.clone()));
        })?;
    }
    let ingest = {
        let shared = shared.clone();
        let ns = ctx.namespace.clone();
        let r = reference.clone();
        let total = first.total;
        tokio::task::spawn_blocking(move || shared.blobs.open_ingest(&ns, &r, total, expected.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("opening ingest {reference:?}: {e}")))??
    };
    tracing::debug!(namespace = %ctx.namespace, reference, offset = ingest.offset(), "ingest opened");

    // Messages are decoded on the runtime while the session thread writes and
    // hashes the previous ones: a few chunks of read-ahead keep both busy.
    let (in_tx, in_rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        loop {
            let next = inbound.message().await.transpose();
            let end = !matches!(next, Some(Ok(_)));
            if let Some(m) = next
                && in_tx.send(m).await.is_err()
            {
                return;
            }
            if end {
                return;
            }
        }
    });
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut s = Session {
            shared,
            ctx,
            ingest: Some(ingest),
            _guard: guard,
        };
        if let Err(st) = s.run(first, in_rx, &tx) {
            let _ = tx.blocking_send(Err(st));
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

fn parse_expected(s: &str) -> Result<Option<Digest>> {
    if s.is_empty() {
        return Ok(None);
    }
    Ok(Some(Digest::parse_field(s, "expected")?))
}

/// AlreadyExists if the namespace already has this content, which then joins
/// the writer's lease (as containerd's metadata store does): a writer that
/// finds its blob present relies on it, and a collection already scheduled
/// (an image removed a moment before) must not take it away.
/// The check and the lease's update hold the GC lock shared: a collection
/// between them would sweep what the lease was about to hold.
fn exists_in_namespace(shared: &Shared, ns: &str, lease: Option<&str>, d: &Digest) -> Result<()> {
    let _gc = shared.gc_lock.read().unwrap_or_else(|p| p.into_inner());
    if shared
        .store
        .get(&records::content_key(ns, &d.to_string()))?
        .is_some()
    {
        if let Some(lease) = lease {
            let digest = d.to_string();
            shared.modify_lease(ns, lease, |l| {
                l.resources.insert(("content".into(), digest.clone()));
            })?;
        }
        return Err(ContentError::AlreadyExists(format!("content {d}")));
    }
    Ok(())
}

struct Session {
    shared: Arc<Shared>,
    ctx: RequestContext,
    ingest: Option<Ingest>,
    _guard: WriterGuard,
}

impl Session {
    fn run(
        &mut self,
        first: api::WriteContentRequest,
        mut inbound: mpsc::Receiver<std::result::Result<api::WriteContentRequest, Status>>,
        tx: &Tx,
    ) -> std::result::Result<(), Status> {
        let mut msg = first;
        loop {
            let commit = msg.action == WriteAction::Commit as i32;
            let resp = self.handle(msg)?;
            if tx.blocking_send(Ok(resp)).is_err() || commit {
                return Ok(());
            }
            msg = match inbound.blocking_recv() {
                Some(m) => m?,
                None => return Ok(()),
            };
        }
    }

    fn handle(&mut self, msg: api::WriteContentRequest) -> Result<api::WriteContentResponse> {
        let ingest = self.ingest.as_mut().expect("ingest is open until commit");
        let reference = ingest.meta().reference.clone();
        if !msg.r#ref.is_empty() && msg.r#ref != reference {
            return Err(ContentError::InvalidArgument(format!(
                "write stream for ref {reference:?} got a message for ref {:?}",
                msg.r#ref
            )));
        }
        let expected = parse_expected(&msg.expected)?;
        if let Some(d) = &expected {
            exists_in_namespace(&self.shared, &self.ctx.namespace, self.ctx.lease.as_deref(), d)?;
        }
        ingest.set_expectations(msg.total, expected.as_ref())?;
        let action = WriteAction::try_from(msg.action)
            .map_err(|_| ContentError::InvalidArgument(format!("unknown write action {}", msg.action)))?;
        let mut resp = api::WriteContentResponse {
            action: msg.action,
            offset: ingest.offset() as i64,
            ..Default::default()
        };
        match action {
            WriteAction::Stat => {
                resp.started_at = Some(timestamp(ingest.meta().started_at));
                resp.updated_at = Some(timestamp(ingest.updated_at()));
                resp.total = ingest.meta().total;
                resp.digest = ingest.digest().to_string();
            }
            WriteAction::Write | WriteAction::Commit => {
                let current = ingest.offset() as i64;
                if msg.offset > 0 && msg.offset != current {
                    return Err(ContentError::OutOfRange(format!(
                        "ingest {reference:?}: write at offset {} must occur at current offset {current}",
                        msg.offset
                    )));
                }
                if msg.offset == 0 && current > 0 {
                    ingest.reset()?;
                }
                if !msg.data.is_empty() {
                    ingest.append(&msg.data)?;
                }
                resp.offset = ingest.offset() as i64;
                if action == WriteAction::Commit {
                    let labels: records::Labels = msg.labels.into_iter().collect();
                    molde_common::labels::validate(&labels)?;
                    let digest = self.commit(msg.total, expected.as_ref(), labels)?;
                    resp.digest = digest.to_string();
                    resp.total = resp.offset;
                    let now = timestamp(records::now_nanos());
                    resp.updated_at = Some(now);
                } else {
                    resp.digest = ingest.digest().to_string();
                }
            }
        }
        Ok(resp)
    }

    fn commit(&mut self, size: i64, expected: Option<&Digest>, labels: records::Labels) -> Result<Digest> {
        let ingest = self.ingest.take().expect("ingest is open until commit");
        self.shared.commit(
            &self.ctx.namespace,
            self.ctx.lease.as_deref(),
            ingest,
            size,
            expected,
            labels,
        )
    }
}
