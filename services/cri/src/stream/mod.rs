//! The CRI streaming server: the URLs `Exec`, `Attach` and `PortForward`
//! return, which the kubelet (or critest, or crictl) connects to and upgrades
//! to SPDY/3.1 or WebSocket.
//!
//! Each URL is `http://ADDR:PORT/{exec,attach,portforward}/TOKEN`. A token
//! stands for the request it was made for, is good for one connection and
//! expires after a minute; an unknown, used or expired one gets 404.
//!
//! - `spdy.rs`: SPDY/3.1 framing; `connection.rs`: a SPDY connection's
//!   streams; `session.rs`: the Kubernetes protocols spoken over one.
//! - `ws.rs`: the WebSocket channel protocols.
//! - `remote.rs`: exec and attach over the runtime's gRPC API, whatever the
//!   wire; `portforward.rs`: connections made inside the pod's network
//!   namespace.

pub mod connection;
pub mod portforward;
pub mod remote;
pub mod session;
pub mod spdy;
pub mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use molde_common::errdefs::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Cri;

/// How long a URL stays good.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long a client gets to open the streams it asked for.
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Connections served at once; more wait in the listen backlog. A kubelet
/// opens one per exec, attach or port-forward in flight.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to present its token (TLS handshake and
/// request head): an idle connection holds a slot no longer.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What a token was made for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The tokens handed out and where the server listens.
#[derive(Default)]
pub struct Streams {
    pending: Mutex<HashMap<String, (Pending, Instant)>>,
    base: OnceLock<String>,
}

impl Streams {
    /// A URL for `p`, good for one connection within a minute.
    pub fn url(&self, p: Pending) -> Result<String, Error> {
        let base = self
            .base
            .get()
            .ok_or_else(|| Error::Unavailable("the CRI streaming server is not listening".into()))?;
        let token = crate::new_id();
        let kind = p.kind();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pending.retain(|_, (_, at)| now.duration_since(*at) < TOKEN_TTL);
        pending.insert(token.clone(), (p, now));
        Ok(format!("{base}/{kind}/{token}"))
    }

    /// Takes the request a token stands for: once, and within its minute.
    pub fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (p, at) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL && p.kind() == kind).then_some(p)
    }

    #[cfg(test)]
    fn age(&self, token: &str, by: Duration) {
        if let Some((_, at)) = self.pending.lock().unwrap().get_mut(token) {
            *at -= by;
        }
    }
}

/// A certificate (chain) and its key, PEM files, for serving over TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

fn tls_acceptor(tls: &Tls) -> Result<tokio_rustls::TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("CRI streaming TLS: {}: {e}", what.display()))
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| bad(&tls.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&tls.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(&tls.cert, &"no certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad(&tls.key, &e))?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&tls.cert, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(&tls.key, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Binds the streaming server (over TLS when given a certificate) and
/// serves it on a task of its own; the address it listens on.
pub async fn serve(
    cri: Arc<Cri>,
    address: &str,
    port: u16,
    tls: Option<Tls>,
) -> Result<std::net::SocketAddr, Error> {
    let acceptor = tls.as_ref().map(tls_acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind((address, port))
        .await
        .map_err(|e| Error::Unavailable(format!("CRI streaming server on {address}:{port}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("CRI streaming server: {e}")))?;
    let host = match local {
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        a => a.to_string(),
    };
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let _ = cri.streams.base.set(format!("{scheme}://{host}"));
    tokio::spawn(molde_common::accept::serve(
        listener,
        MAX_CONNECTIONS,
        "CRI streaming",
        move |conn, _| {
            let _ = conn.set_nodelay(true);
            let (cri, acceptor) = (cri.clone(), acceptor.clone());
            async move {
                let r = match acceptor {
                    Some(a) => match tokio::time::timeout(HEAD_TIMEOUT, a.accept(conn)).await {
                        Ok(Ok(tls)) => handle(cri, tls).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Ok(()),
                    },
                    None => handle(cri, conn).await,
                };
                if let Err(e) = r {
                    tracing::debug!("CRI streaming connection: {e}");
                }
            }
        },
    ));
    Ok(local)
}

/// A request's line and headers (names lower-cased, repeated ones kept).
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, comma-separated lists split.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The values of query parameter `name`.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .collect()
    }
}

/// Reads the request head; what came after it (a client may send its first
/// frames at once) is returned too.
async fn read_head(conn: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(Head, Vec<u8>)> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 2048];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("the connection closed before a request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf).map_err(|e| bad(format!("bad request: {e}")))? {
            httparse::Status::Complete(len) => {
                let target = req.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                return Ok((head, buf[len..].to_vec()));
            }
            httparse::Status::Partial if buf.len() > MAX_HEAD => {
                return Err(bad(format!("a request head over {MAX_HEAD} bytes")));
            }
            httparse::Status::Partial => {}
        }
    }
}

/// Writes a short plain-text HTTP response and ends the connection.
pub async fn respond(conn: &mut (impl AsyncWrite + Unpin), status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(msg.as_bytes()).await?;
    conn.shutdown().await
}

async fn handle<T>(cri: Arc<Cri>, mut conn: T) -> std::io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (head, early) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut conn)).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    };
    let mut parts = head.path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let Some(pending) = cri.streams.take(kind, token) else {
        return respond(&mut conn, "404 Not Found", "unknown or expired streaming token\n").await;
    };
    let upgrade = head.header("upgrade").unwrap_or("").to_ascii_lowercase();
    let conn = connection::Prefixed::new(early, conn);
    if upgrade == "websocket" {
        ws::serve(cri, head, conn, pending).await
    } else if upgrade.starts_with("spdy/3.1") {
        session::serve(cri, head, conn, pending).await
    } else {
        let mut conn = conn;
        respond(
            &mut conn,
            "400 Bad Request",
            "upgrade to SPDY/3.1 or websocket to use this URL\n",
        )
        .await
    }
}

/// What goes on a remote command's error stream: v4's (and WebSocket v5's)
/// status, always; for older protocols a message, only when it failed.
pub fn error_stream(outcome: &Result<i32, Error>, with_status: bool) -> Option<Vec<u8>> {
    if with_status {
        return Some(status_json(outcome));
    }
    match outcome {
        Ok(0) => None,
        Ok(code) => {
            Some(format!("command terminated with non-zero exit code: exit status {code}").into_bytes())
        }
        Err(e) => Some(e.to_string().into_bytes()),
    }
}

/// The status a v4 (and WebSocket v5) client reads on the error channel,
/// as a Kubernetes `metav1.Status`.
pub fn status_json(outcome: &Result<i32, Error>) -> Vec<u8> {
    let v = match outcome {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": "InternalError",
        }),
    };
    serde_json::to_vec(&v).expect("a JSON value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let s = Streams::default();
        let _ = s.base.set("http://127.0.0.1:1".into());
        let url = s
            .url(Pending::PortForward(cri::PortForwardRequest::default()))
            .unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"));
        // Another kind's path does not take it, and spends it.
        assert!(s.take("exec", &token).is_none());
        let url = s
            .url(Pending::PortForward(cri::PortForwardRequest::default()))
            .unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(s.take("portforward", &token).is_some());
        assert!(s.take("portforward", &token).is_none(), "used once");
        let url = s.url(Pending::Exec(cri::ExecRequest::default())).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        s.age(&token, TOKEN_TTL + Duration::from_secs(1));
        assert!(s.take("exec", &token).is_none(), "expired");
    }

    #[test]
    fn status_carries_the_exit_code() {
        let ok: serde_json::Value = serde_json::from_slice(&status_json(&Ok(0))).unwrap();
        assert_eq!(ok["status"], "Success");
        let v: serde_json::Value = serde_json::from_slice(&status_json(&Ok(3))).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }
}
