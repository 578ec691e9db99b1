//! Connecting to a molde service by address.
//!
//! Addresses are unix socket paths, with or without a `unix://` prefix:
//! `/run/molde/molde.sock`, `unix:///run/molde/content.sock`.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// An address molde cannot listen on or dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAddress(pub String);

impl std::fmt::Display for InvalidAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidAddress {}

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, InvalidAddress> {
        let path = s.strip_prefix("unix://").unwrap_or(s);
        if path.is_empty() {
            return Err(InvalidAddress("empty address".into()));
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(InvalidAddress(format!(
                "address {s:?}: scheme {scheme:?} is not supported; use a unix socket path"
            )));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// HTTP/2 flow-control windows and frame size for molde's connections. h2's
/// defaults (64 KiB windows, 16 KiB frames) hold a blob stream to a fraction of
/// what a local socket carries.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
pub const MAX_FRAME: u32 = 1 << 20;

/// The largest header list (decoded, as RFC 9113 counts it: names, values
/// and 32 bytes a field) a molde server accepts on a request. gRPC metadata
/// is small; a peer's compressed header block that expands beyond this is a
/// protocol error, not memory molded spends.
pub const MAX_HEADER_LIST: u32 = 64 << 10;

fn endpoint() -> Endpoint {
    // The URI is required by the builder but never dialled: the connector opens the socket.
    Endpoint::from_static("http://localhost")
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send,
> + Clone
+ Send {
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
    })
}

/// A channel that dials `addr` on first use (and again after a failure).
pub fn channel(addr: &Address) -> Channel {
    let Address::Unix(path) = addr.clone();
    endpoint().connect_with_connector_lazy(unix_connector(path))
}

/// A channel that is connected before it is returned, so "not running" shows up here.
pub async fn connect(addr: &Address) -> Result<Channel, tonic::transport::Error> {
    let Address::Unix(path) = addr.clone();
    endpoint().connect_with_connector(unix_connector(path)).await
}

/// A request to a service in namespace `ns` (one the caller validated), under
/// `lease` when given. A name that cannot be a header value is sent as one no
/// service accepts, so the call fails naming it rather than acting in `default`.
pub fn request<T>(ns: &str, lease: Option<&str>, msg: T) -> tonic::Request<T> {
    use tonic::metadata::MetadataValue;
    let header = |v: &str| {
        MetadataValue::try_from(v).unwrap_or_else(|_| MetadataValue::from_static("!unrepresentable"))
    };
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(crate::NAMESPACE_HEADER, header(ns));
    if let Some(l) = lease.filter(|l| !l.is_empty()) {
        r.metadata_mut().insert(crate::LEASE_HEADER, header(l));
    }
    crate::trace::inject_metadata(r.metadata_mut());
    r
}

/// A request in namespace `ns`, under no lease (see `request`).
pub fn namespaced<T>(ns: &str, msg: T) -> tonic::Request<T> {
    request(ns, None, msg)
}

/// Reads a whole blob of at most `max` bytes through content.v1.
pub async fn read_blob(ch: &Channel, ns: &str, digest: &str, max: usize) -> Result<Vec<u8>, tonic::Status> {
    use crate::containerd::services::content::v1::{ReadContentRequest, content_client::ContentClient};
    let mut stream = ContentClient::new(ch.clone())
        .read(namespaced(
            ns,
            ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            },
        ))
        .await
        .map_err(|s| tonic::Status::new(s.code(), format!("reading {digest}: {}", s.message())))?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.extend_from_slice(&m.data);
        if out.len() > max {
            return Err(tonic::Status::failed_precondition(format!(
                "{digest} is over {max} bytes"
            )));
        }
    }
    Ok(out)
}

/// Writes `data` as the blob `digest` through content.v1, in namespace `ns`
/// under `lease`, with `labels`. A blob the namespace already has is not an error.
pub async fn write_blob(
    ch: &Channel,
    ns: &str,
    lease: Option<&str>,
    digest: &str,
    data: bytes::Bytes,
    labels: std::collections::HashMap<String, String>,
) -> Result<(), tonic::Status> {
    use crate::containerd::services::content::v1::{
        WriteAction, WriteContentRequest, content_client::ContentClient,
    };
    let size = data.len() as i64;
    // A ref of its own, so concurrent writers of one blob never share an ingest.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let msgs = vec![
        WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: format!("write-{digest}-{}-{nonce}", std::process::id()),
            total: size,
            expected: digest.to_string(),
            ..Default::default()
        },
        WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset: 0,
            total: size,
            expected: digest.to_string(),
            data,
            labels,
            ..Default::default()
        },
    ];
    let resp = ContentClient::new(ch.clone())
        .max_encoding_message_size(usize::MAX)
        .write(request(ns, lease, tokio_stream::iter(msgs)))
        .await;
    let mut s = match resp {
        Ok(r) => r.into_inner(),
        Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    };
    loop {
        match s.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(e) if e.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Opens what a streamed write sends, given the offset the content service
/// already holds for the ref: a reader positioned at that offset (resuming)
/// or at 0 (starting over), and the offset it is at.
pub type OpenAt = Box<dyn FnOnce(u64) -> std::io::Result<(Box<dyn std::io::Read + Send>, u64)> + Send>;

/// Streams a blob into the ingest `reference` through content.v1 (in `ns`,
/// under `lease`) and commits it with `labels`: `total` bytes (0 when
/// unknown) of digest `expected` ("" when unknown). Reading runs on a blocking
/// thread, so the upload stays pipelined. Returns the committed digest and
/// size; a blob the namespace already has is `AlreadyExists`.
#[allow(clippy::too_many_arguments)]
pub async fn write_stream(
    ch: &Channel,
    ns: &str,
    lease: Option<&str>,
    reference: &str,
    total: i64,
    expected: &str,
    labels: std::collections::HashMap<String, String>,
    open: OpenAt,
) -> Result<(String, i64), tonic::Status> {
    use crate::containerd::services::content::v1::{
        WriteAction, WriteContentRequest, content_client::ContentClient,
    };
    const CHUNK: usize = 1 << 20;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(8);
    let _ = tx
        .send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.to_string(),
            total,
            expected: expected.to_string(),
            ..Default::default()
        })
        .await;
    let mut responses = ContentClient::new(ch.clone())
        .max_encoding_message_size(4 * CHUNK)
        .write(request(
            ns,
            lease,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await?
        .into_inner();
    let closed = || {
        tonic::Status::unavailable(format!(
            "ingest {reference}: the content service closed the stream"
        ))
    };
    let stat = responses.message().await?.ok_or_else(closed)?;
    let expected = expected.to_string();
    let producer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let (mut source, start) = open(stat.offset.max(0) as u64)?;
        let mut offset = start as i64;
        loop {
            // A fresh buffer per chunk becomes the message's bytes without a copy.
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match source.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                offset,
                data: buf.into(),
                ..Default::default()
            };
            offset += n as i64;
            if tx.blocking_send(msg).is_err() {
                // The service ended the stream; its answer says why.
                return Ok(());
            }
        }
        let _ = tx.blocking_send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            total: if total > 0 { total } else { offset },
            expected,
            offset,
            labels,
            ..Default::default()
        });
        Ok(())
    });
    let mut committed = None;
    while let Some(m) = responses.message().await? {
        if m.action == WriteAction::Commit as i32 {
            committed = Some(m);
            break;
        }
    }
    producer
        .await
        .map_err(|e| tonic::Status::internal(format!("ingest {reference}: {e}")))?
        .map_err(|e| tonic::Status::failed_precondition(format!("ingest {reference}: reading: {e}")))?;
    let done = committed.ok_or_else(closed)?;
    Ok((done.digest, done.offset))
}
