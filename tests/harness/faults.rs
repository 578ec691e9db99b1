//! A faulty network between molde and a real registry: a small HTTP proxy on a
//! loopback port that forwards to the registry and, on request, answers with
//! errors, serves a canned manifest, cuts blob downloads short or slows them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to requests.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer blob requests with this HTTP status.
    pub blob_status: Option<u16>,
    /// Answer manifest requests with this body and content type.
    pub manifest: Option<(String, Vec<u8>)>,
    /// Close this many blob responses after this many body bytes.
    pub cut_blobs: Option<(usize, usize)>,
    /// Pause this long after every 64 KiB of a blob body.
    pub slow: Option<Duration>,
}

pub struct FaultProxy {
    pub host: String,
    pub faults: Arc<Mutex<Faults>>,
    /// Request lines seen ("GET /v2/... Range: ...").
    pub seen: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// A proxy in front of the registry at `upstream` (host:port).
    pub fn start(upstream: &str) -> FaultProxy {
        Self::start_on("127.0.0.1", upstream)
    }

    /// The same, listening on `ip` (e.g. the machine's address on a `hosts::Lan`).
    pub fn start_on(ip: &str, upstream: &str) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind(format!("{ip}:0"))).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let faults: Arc<Mutex<Faults>> = Default::default();
        let seen: Arc<Mutex<Vec<String>>> = Default::default();
        let upstream: SocketAddr = upstream.parse().unwrap();
        let (f, s) = (faults.clone(), seen.clone());
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, upstream, f.clone(), s.clone()));
            }
        });
        FaultProxy {
            host,
            faults,
            seen,
            _rt: rt,
        }
    }

    pub fn set(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_head(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut b).await.ok()? == 0 {
            return None;
        }
        head.push(b[0]);
        if head.len() > 64 << 10 {
            return None;
        }
    }
    Some(head)
}

async fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    // One request per connection: the answer says Connection: close.
    let Some(head) = read_head(&mut conn).await else {
        return;
    };
    let text = String::from_utf8_lossy(&head).to_string();
    let line = text.lines().next().unwrap_or("").to_string();
    let range = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("range:"))
        .unwrap_or("")
        .to_string();
    seen.lock()
        .unwrap()
        .push(format!("{line} {range}").trim().to_string());
    let is_blob = line.contains("/blobs/sha256:");
    let is_manifest = line.contains("/manifests/");
    let f = faults.lock().unwrap().clone();
    if is_blob && let Some(code) = f.blob_status {
        let _ = conn
            .write_all(
                format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        return;
    }
    if is_manifest && let Some((ct, body)) = &f.manifest {
        let _ = conn
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())
            .await;
        let _ = conn.write_all(body).await;
        return;
    }
    let cut = if is_blob && line.starts_with("GET") {
        let mut g = faults.lock().unwrap();
        match g.cut_blobs {
            Some((n, after)) if n > 0 => {
                g.cut_blobs = Some((n - 1, after));
                Some(after)
            }
            _ => None,
        }
    } else {
        None
    };
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    // Ask the registry to close after its answer, so the relay ends with it.
    let head = text
        .replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
        .replace("Connection: keep-alive\r\n", "");
    if up.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut relayed = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match up.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let n = match cut {
            Some(limit) if relayed + n > limit => limit.saturating_sub(relayed),
            _ => n,
        };
        if conn.write_all(&buf[..n]).await.is_err() {
            return;
        }
        relayed += n;
        if cut.is_some_and(|limit| relayed >= limit) {
            return; // the connection drops mid-body
        }
        if is_blob && let Some(d) = f.slow {
            tokio::time::sleep(d).await;
        }
    }
}
