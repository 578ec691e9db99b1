//! The Kubernetes protocols over a SPDY/3.1 connection: remote command
//! (`v4.channel.k8s.io` down to `channel.k8s.io`) and port forwarding
//! (`portforward.k8s.io`).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::connection::{Incoming, Out, start};
use super::spdy::header;
use super::{Head, Pending, STREAM_CREATION_TIMEOUT, remote, respond};
use crate::Cri;

/// Remote command protocols, best first.
pub const REMOTE_COMMAND: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub const PORT_FORWARD: &str = "portforward.k8s.io";

/// The protocol to speak: the first of the client's offers the server
/// speaks (the client lists them best first).
pub fn negotiate(offered: &[String], ours: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|o| ours.iter().find(|p| **p == o.as_str()).copied())
}

/// Upgrades the connection to SPDY/3.1 and serves `pending` on it.
pub async fn serve<T>(cri: Arc<Cri>, head: Head, mut conn: T, pending: Pending) -> std::io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let offered = head.all("x-stream-protocol-version");
    let protocol = match &pending {
        Pending::PortForward(_) => {
            negotiate(&offered, &[PORT_FORWARD]).or(offered.is_empty().then_some(PORT_FORWARD))
        }
        _ => negotiate(&offered, REMOTE_COMMAND).or(offered.is_empty().then_some("channel.k8s.io")),
    };
    let Some(protocol) = protocol else {
        return respond(
            &mut conn,
            "403 Forbidden",
            &format!("none of the stream protocols {offered:?} is spoken here\n"),
        )
        .await;
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
    );
    conn.write_all(reply.as_bytes()).await?;
    let (out, incoming, gone) = start(conn);
    match pending {
        Pending::PortForward(req) => super::portforward::serve_spdy(cri, req, out, incoming).await,
        Pending::Exec(_) | Pending::Attach(_) => {
            remote_command(cri, protocol, pending, out, incoming, gone).await
        }
    }
    Ok(())
}

/// Waits for the streams a remote command needs, runs it, reports how it
/// ended on the error stream and closes the connection.
async fn remote_command(
    cri: Arc<Cri>,
    protocol: &str,
    pending: Pending,
    out: Out,
    mut incoming: mpsc::Receiver<Incoming>,
    gone: watch::Receiver<bool>,
) {
    let opts = remote::Options::of(&pending);
    let v4 = protocol == "v4.channel.k8s.io";
    let resize_stream = opts.tty && protocol != "v2.channel.k8s.io" && protocol != "channel.k8s.io";
    let mut wanted: Vec<&str> = vec!["error"];
    if opts.stdin {
        wanted.push("stdin");
    }
    if opts.stdout {
        wanted.push("stdout");
    }
    if opts.stderr && !opts.tty {
        wanted.push("stderr");
    }
    if resize_stream {
        wanted.push("resize");
    }
    let mut got: HashMap<String, Incoming> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !wanted.iter().all(|w| got.contains_key(*w)) {
        match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => {
                let kind = header(&s.headers, "streamtype").unwrap_or("").to_string();
                got.insert(kind, s);
            }
            Ok(None) | Err(_) => {
                tracing::debug!("a remote command's client did not open its streams");
                out.close().await;
                return;
            }
        }
    }
    let error = got.remove("error").expect("waited for");
    let mut sinks = Vec::new();
    let mut sink = |s: Option<Incoming>| {
        s.map(|s| {
            let (tx, task) = out.sink(s.id);
            sinks.push(task);
            tx
        })
    };
    let stdout = sink(got.remove("stdout"));
    let stderr = sink(got.remove("stderr"));
    let channels = remote::Channels {
        stdin: got.remove("stdin").map(|s| s.data),
        stdout,
        stderr,
        resize: got.remove("resize").map(|s| remote::resizes(s.data)),
        gone,
    };
    let outcome = remote::run(&cri, pending, channels).await;
    for t in sinks {
        let _ = t.await;
    }
    let message = super::error_stream(&outcome, v4);
    if let Some(m) = message {
        out.data(error.id, &m).await;
    }
    out.fin(error.id).await;
    out.close().await;
}
