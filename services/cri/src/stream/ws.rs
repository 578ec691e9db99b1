//! The WebSocket forms of the streaming protocols (what kubectl speaks
//! since Kubernetes 1.29).
//!
//! Remote command (`v5.channel.k8s.io`, `v4.channel.k8s.io`,
//! `channel.k8s.io`, and `base64.channel.k8s.io` with text messages): every
//! message starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 error, 4
//! resize; in v5 the client closes its stdin with `[255, 0]`.
//!
//! Port forward (`v4.portforward.k8s.io`, `portforward.k8s.io`): the ports
//! come in the query (`?port=80&port=8080`); the i-th port's data is channel
//! 2i, its errors channel 2i+1, and the first message on each channel is the
//! port, two bytes little-endian.

use std::sync::Arc;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::{Head, Pending, remote, respond};
use crate::Cri;

pub const REMOTE_COMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
pub const PORT_FORWARD: &[&str] = &["v4.portforward.k8s.io", "portforward.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// A channel message in the connection's encoding.
fn message(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push((b'0' + channel) as char);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// A received message's channel and data.
fn parse(base64: bool, m: Message) -> Option<(u8, Vec<u8>)> {
    match m {
        Message::Binary(b) if !base64 && !b.is_empty() => Some((b[0], b[1..].to_vec())),
        Message::Text(t) if base64 && !t.is_empty() => {
            let channel = t.as_bytes()[0].checked_sub(b'0')?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&t.as_bytes()[1..])
                .ok()?;
            Some((channel, data))
        }
        _ => None,
    }
}

/// Answers the WebSocket handshake and serves `pending` on the connection.
pub async fn serve<T>(cri: Arc<Cri>, head: Head, mut conn: T, pending: Pending) -> std::io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(key) = head.header("sec-websocket-key").map(str::to_string) else {
        return respond(
            &mut conn,
            "400 Bad Request",
            "a WebSocket upgrade needs Sec-WebSocket-Key\n",
        )
        .await;
    };
    let offered = head.all("sec-websocket-protocol");
    let ours = match pending {
        Pending::PortForward(_) => PORT_FORWARD,
        _ => REMOTE_COMMAND,
    };
    let protocol = super::session::negotiate(&offered, ours).or(offered.is_empty().then_some(ours[0]));
    let Some(protocol) = protocol else {
        return respond(
            &mut conn,
            "403 Forbidden",
            &format!("none of the WebSocket protocols {offered:?} is spoken here\n"),
        )
        .await;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    conn.write_all(reply.as_bytes()).await?;
    let ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
    match pending {
        Pending::PortForward(req) => port_forward(cri, &head, req, ws).await,
        p => remote_command(cri, protocol, p, ws).await,
    }
    Ok(())
}

async fn remote_command<T>(cri: Arc<Cri>, protocol: &str, pending: Pending, ws: WebSocketStream<T>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let base64 = protocol.starts_with("base64.");
    let status = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    let opts = remote::Options::of(&pending);
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // One forwarder per output channel the client asked for.
    let output = |channel: u8| {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let out = out_tx.clone();
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if out.send(message(base64, channel, &d)).await.is_err() {
                    return;
                }
            }
        });
        (tx, task)
    };
    let mut tasks = Vec::new();
    let mut stdout = None;
    if opts.stdout {
        let (tx, t) = output(STDOUT);
        stdout = Some(tx);
        tasks.push(t);
    }
    let mut stderr = None;
    if opts.stderr && !opts.tty {
        let (tx, t) = output(STDERR);
        stderr = Some(tx);
        tasks.push(t);
    }
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<Vec<u8>>(4);
    let (gone_tx, gone_rx) = watch::channel(false);
    let reader = tokio::spawn(async move {
        let mut stdin = Some(stdin_tx);
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = parse(base64, m) else {
                continue;
            };
            match channel {
                STDIN => {
                    if let Some(s) = &stdin
                        && !data.is_empty()
                    {
                        let _ = s.send(data).await;
                    }
                }
                RESIZE => {
                    let _ = resize_tx.send(data).await;
                }
                CLOSE if data.first() == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        let _ = gone_tx.send(true);
        gone_tx.closed().await;
    });
    let channels = remote::Channels {
        stdin: opts.stdin.then_some(stdin_rx),
        stdout,
        stderr,
        resize: opts.tty.then(|| remote::resizes(resize_rx)),
        gone: gone_rx,
    };
    let outcome = remote::run(&cri, pending, channels).await;
    for t in tasks {
        let _ = t.await;
    }
    let msg = super::error_stream(&outcome, status);
    if let Some(m) = msg {
        let _ = out_tx.send(message(base64, ERROR, &m)).await;
    }
    let _ = out_tx.send(Message::Close(None)).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
}

async fn port_forward<T>(
    cri: Arc<Cri>,
    head: &Head,
    req: k8s_cri::v1::PortForwardRequest,
    ws: WebSocketStream<T>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut ports: Vec<u16> = head
        .query_all("port")
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    if ports.is_empty() {
        ports = req.port.iter().filter_map(|p| u16::try_from(*p).ok()).collect();
    }
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut inputs: Vec<mpsc::Sender<Vec<u8>>> = Vec::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            let _ = out_tx.send(message(false, ch, &port.to_le_bytes())).await;
        }
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(16);
        inputs.push(in_tx);
        let (cri, out, pod) = (cri.clone(), out_tx.clone(), req.pod_sandbox_id.clone());
        tasks.push(tokio::spawn(async move {
            match super::portforward::connect(&cri, &pod, port).await {
                Ok(conn) => {
                    let (to_client, mut rx) = mpsc::channel::<Vec<u8>>(16);
                    let fwd = tokio::spawn(async move {
                        while let Some(d) = rx.recv().await {
                            if out.send(message(false, data_ch, &d)).await.is_err() {
                                return;
                            }
                        }
                    });
                    super::portforward::pump(conn, in_rx, to_client).await;
                    let _ = fwd.await;
                }
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = out.send(message(false, err_ch, msg.as_bytes())).await;
                }
            }
        }));
    }
    // The client's data for each port, until it closes the connection.
    while let Some(Ok(m)) = stream.next().await {
        if matches!(m, Message::Close(_)) {
            break;
        }
        if let Some((ch, data)) = parse(false, m)
            && ch % 2 == 0
            && let Some(tx) = inputs.get(ch as usize / 2)
            && !data.is_empty()
        {
            let _ = tx.send(data).await;
        }
    }
    drop(inputs);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    let _ = out_tx.send(Message::Close(None)).await;
    drop(out_tx);
    let _ = writer.await;
}
