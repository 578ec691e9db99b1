//! The peer transport: gRPC over TCP with mutual TLS, on each node's
//! advertise address. Peers serve each other content reads (content.v1
//! Read, ranges included).

use std::sync::Arc;

use molde_common::errdefs::Error;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::certs::Identity;

/// Connections from peers served at once; more wait in the listen backlog.
pub const MAX_PEER_CONNECTIONS: usize = 256;

/// A TLS connection accepted from a peer. It holds one of the listener's
/// connection slots until it is dropped.
pub struct PeerStream(
    pub tokio_rustls::server::TlsStream<TcpStream>,
    // Held, never read: dropping it frees the slot.
    #[allow(dead_code)] Option<tokio::sync::oneshot::Sender<()>>,
);

impl PeerStream {
    /// What the peer's certificate (verified in the handshake) says of it.
    pub fn presented(&self) -> Option<crate::certs::Presented> {
        let leaf = self.0.get_ref().1.peer_certificates()?.first()?;
        crate::certs::Presented::of(leaf).ok()
    }
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = Option<std::net::SocketAddr>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts peers on `listener`: connections whose TLS handshake fails (no
/// certificate, or one the cluster's CA did not sign) end there.
pub fn incoming(
    listener: tokio::net::TcpListener,
    id: &Identity,
) -> Result<tokio::sync::mpsc::Receiver<Result<PeerStream, std::io::Error>>, Error> {
    let acceptor = TlsAcceptor::from(Arc::new(id.server_config()?));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(molde_common::accept::serve(
        listener,
        MAX_PEER_CONNECTIONS,
        "cluster peers",
        move |tcp, from| {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            async move {
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        // The connection's slot is held while it is served.
                        let (done_tx, done) = tokio::sync::oneshot::channel();
                        if tx.send(Ok(PeerStream(tls, Some(done_tx)))).await.is_ok() {
                            let _ = done.await;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(peer = %from, "a peer was refused: {e}"),
                    Err(_) => tracing::warn!(peer = %from, "a peer did not finish its TLS handshake"),
                }
            }
        },
    ));
    Ok(rx)
}

/// A gRPC channel to peer `name` at `address` (host:port), over mutual TLS.
pub fn channel(id: &Identity, name: &str, address: &str) -> Result<tonic::transport::Channel, Error> {
    let connector = TlsConnector::from(Arc::new(id.client_config()?));
    let server = rustls_pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| Error::Unavailable(format!("peer {name}: {e}")))?;
    let address = address.to_string();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::Unavailable(format!("peer {name} at {address}: {e}")))?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A peer that stops answering (frozen, cut off) is noticed within
        // ten seconds even when no request is waiting on it.
        .http2_keep_alive_interval(std::time::Duration::from_secs(5))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .keep_alive_while_idle(true)
        // Blobs stream between nodes: h2's 64 KiB windows would hold them back.
        .initial_stream_window_size(molde_api::client::STREAM_WINDOW)
        .initial_connection_window_size(molde_api::client::CONNECTION_WINDOW)
        .max_frame_size(molde_api::client::MAX_FRAME);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let (connector, server, address) = (connector.clone(), server.clone(), address.clone());
            async move {
                let tcp = TcpStream::connect(&address).await?;
                let _ = tcp.set_nodelay(true);
                let tls = connector.connect(server, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}
