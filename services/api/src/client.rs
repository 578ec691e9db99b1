//! Connecting to a molde service by address.
//!
//! Addresses are unix socket paths, with or without a `unix://` prefix:
//! `/run/molde/molde.sock`, `unix:///run/molde/content.sock`.

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, String> {
        let path = s.strip_prefix("unix://").unwrap_or(s);
        if path.is_empty() {
            return Err("empty address".into());
        }
        if let Some((scheme, _)) = path.split_once("://") {
            return Err(format!(
                "address {s:?}: scheme {scheme:?} is not supported; use a unix socket path"
            ));
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
