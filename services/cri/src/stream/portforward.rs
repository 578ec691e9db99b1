//! Port forwarding: every connection the client asks for is made from
//! inside the pod's network namespace, to 127.0.0.1:PORT there (a
//! host-network pod's from the host's), and its bytes are copied both ways.

use std::os::fd::AsFd;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::connection::{Incoming, Out};
use super::spdy::header;
use molde_common::errdefs::Error;

use crate::Cri;

/// A TCP connection to `port` on the pod's loopback.
pub async fn connect(cri: &Cri, pod: &str, port: u16) -> Result<tokio::net::TcpStream, Error> {
    let sandbox = cri.sandbox(pod)?;
    if !sandbox.ready {
        return Err(Error::FailedPrecondition(format!(
            "pod sandbox {} is not ready",
            sandbox.id
        )));
    }
    let netns = sandbox.netns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own enters the namespace: the socket keeps it, the
    // thread ends, and no other thread ever runs in the pod's network.
    std::thread::Builder::new()
        .name("portforward".into())
        .stack_size(64 << 10)
        .spawn(move || {
            let r = (|| -> Result<std::net::TcpStream, Error> {
                if !netns.is_empty() {
                    let ns = std::fs::File::open(&netns).map_err(Error::io(format!("opening {netns}")))?;
                    nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::io("entering the pod's network namespace")(e.into()))?;
                }
                let addrs = [
                    std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
                ];
                let mut last = None;
                for a in addrs {
                    match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(10)) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = Some(e),
                    }
                }
                let e = last.unwrap_or_else(|| std::io::ErrorKind::AddrNotAvailable.into());
                Err(Error::Unavailable(format!(
                    "connecting to port {port} in the pod: {e}"
                )))
            })();
            let _ = tx.send(r);
        })
        .map_err(Error::io("starting a port-forward thread"))?;
    let s = rx
        .await
        .map_err(|_| Error::Internal("the port-forward thread died".into()))??;
    s.set_nonblocking(true)
        .map_err(Error::io("making a pod connection non-blocking"))?;
    tokio::net::TcpStream::from_std(s).map_err(Error::io("registering a pod connection"))
}

/// Copies between a connection and the client until both sides are done:
/// `from_client` closes at the client's end of its stream, `to_client`
/// gets the connection's bytes and is dropped at its end.
pub async fn pump(
    conn: tokio::net::TcpStream,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    to_client: mpsc::Sender<Vec<u8>>,
) {
    let (mut rd, mut wr) = conn.into_split();
    let up = async move {
        while let Some(d) = from_client.recv().await {
            if wr.write_all(&d).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to_client.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::join!(up, down);
}

/// `portforward.k8s.io` over SPDY: the client opens an error stream and a
/// data stream per connection, both with `port` and `requestid` headers.
pub async fn serve_spdy(
    cri: Arc<Cri>,
    req: cri::PortForwardRequest,
    out: Out,
    mut incoming: mpsc::Receiver<Incoming>,
) {
    let mut pairs: std::collections::HashMap<String, (Option<Incoming>, Option<Incoming>)> =
        Default::default();
    while let Some(s) = incoming.recv().await {
        let request = header(&s.headers, "requestid").unwrap_or("").to_string();
        let kind = header(&s.headers, "streamtype").unwrap_or("").to_string();
        let entry = pairs.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(s),
            "data" => entry.1 = Some(s),
            _ => {
                out.fin(s.id).await;
                continue;
            }
        }
        if entry.0.is_none() || entry.1.is_none() {
            continue;
        }
        let (Some(error), Some(data)) = pairs.remove(&request).expect("just filled") else {
            continue;
        };
        let (cri, out, pod) = (cri.clone(), out.clone(), req.pod_sandbox_id.clone());
        tokio::spawn(async move {
            let port = header(&data.headers, "port").and_then(|p| p.parse::<u16>().ok());
            let conn = match port {
                Some(p) if p > 0 => connect(&cri, &pod, p).await,
                _ => Err(Error::InvalidArgument(format!(
                    "bad port {:?}",
                    header(&data.headers, "port")
                ))),
            };
            match conn {
                Ok(conn) => {
                    let (to_client, sent) = out.sink(data.id);
                    pump(conn, data.data, to_client).await;
                    let _ = sent.await;
                }
                Err(e) => {
                    let msg = format!(
                        "error forwarding port {} to pod {pod}: {e}",
                        port.map(|p| p.to_string()).unwrap_or_default()
                    );
                    out.data(error.id, msg.as_bytes()).await;
                    out.fin(data.id).await;
                }
            }
            out.fin(error.id).await;
        });
    }
    out.close().await;
}
