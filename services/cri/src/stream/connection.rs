//! A SPDY/3.1 connection on the server side.
//!
//! The client opens every stream (SYN_STREAM, with a `streamtype` header);
//! the server answers each with SYN_REPLY. Data the client sends on a
//! stream is handed over in order until its FIN; the server's data goes out
//! through [`Out`]. A reader task and a writer task own the two halves of the
//! connection and their header compression contexts.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, watch};

use super::spdy::{
    FLAG_FIN, Frame, HeaderDecoder, HeaderEncoder, Headers, MAX_PAYLOAD, ReadError, SpdyError,
};

/// The most data one frame carries from the server.
const CHUNK: usize = 32 << 10;
/// Data consumed before the server opens the client's window again.
const WINDOW_STEP: u32 = 32 << 10;

/// The bytes that came with the request head, then the connection.
pub struct Prefixed<T> {
    early: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(early: Vec<u8>, inner: T) -> Self {
        Prefixed { early, at: 0, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.early.len() {
            let n = (self.early.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.early[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// Its data, in order; closed at its FIN or reset.
    pub data: mpsc::Receiver<Vec<u8>>,
}

enum Cmd {
    Frame(Frame),
    Close,
}

/// Sends on the connection.
#[derive(Clone)]
pub struct Out(mpsc::Sender<Cmd>);

impl Out {
    async fn frame(&self, f: Frame) -> bool {
        self.0.send(Cmd::Frame(f)).await.is_ok()
    }

    /// Sends data on stream `id`; false once the connection is gone.
    pub async fn data(&self, id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let f = Frame::Data {
                stream_id: id,
                flags: 0,
                data: chunk.to_vec(),
            };
            if !self.frame(f).await {
                return false;
            }
        }
        true
    }

    /// Ends the server's side of stream `id`.
    pub async fn fin(&self, id: u32) {
        self.frame(Frame::Data {
            stream_id: id,
            flags: FLAG_FIN,
            data: Vec::new(),
        })
        .await;
    }

    /// Says goodbye and closes the connection once everything queued is out.
    pub async fn close(&self) {
        self.frame(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
        let _ = self.0.send(Cmd::Close).await;
    }

    /// A sender of data on stream `id`, as a channel: what is sent goes out
    /// in order, and the stream ends (FIN) when every sender is dropped.
    pub fn sink(&self, id: u32) -> (mpsc::Sender<Vec<u8>>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let out = self.clone();
        let task = tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                if !out.data(id, &d).await {
                    return;
                }
            }
            out.fin(id).await;
        });
        (tx, task)
    }
}

/// Runs a SPDY connection: the streams the client opens come out of the
/// returned receiver, and the watch turns true when the client's side of
/// the connection is gone; the reader and writer tasks end with it.
pub fn start<T>(conn: T) -> (Out, mpsc::Receiver<Incoming>, watch::Receiver<bool>)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(64);
    let out = Out(cmd_tx);
    tokio::spawn(async move {
        let mut enc = HeaderEncoder::default();
        while let Some(cmd) = cmd_rx.recv().await {
            match cmd {
                Cmd::Frame(f) => {
                    if wr.write_all(&f.encode(&mut enc)).await.is_err() {
                        return;
                    }
                }
                Cmd::Close => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let (in_tx, in_rx) = mpsc::channel(16);
    let reader_out = out.clone();
    let (gone_tx, gone_rx) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(e) = read_loop(&mut rd, &reader_out, in_tx).await {
            tracing::debug!("SPDY connection: {e}");
        }
        let _ = gone_tx.send(true);
        // Kept until every reader of the watch is done with it.
        gone_tx.closed().await;
    });
    (out, in_rx, gone_rx)
}

async fn read_frame(
    rd: &mut (impl AsyncRead + Unpin),
    dec: &mut HeaderDecoder,
) -> Result<Option<Frame>, ReadError> {
    loop {
        let mut head = [0u8; 8];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = (u32::from_be_bytes([head[4], head[5], head[6], head[7]]) & 0x00ff_ffff) as usize;
        if len > MAX_PAYLOAD {
            return Err(SpdyError::TooLarge(len).into());
        }
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        let mut whole = head.to_vec();
        whole.extend_from_slice(&payload);
        match Frame::read(&mut whole.as_slice(), dec) {
            Ok(Some(f)) => return Ok(Some(f)),
            // A frame type SPDY/3 does not define: skipped.
            Ok(None) => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn read_loop(
    rd: &mut (impl AsyncRead + Unpin),
    out: &Out,
    incoming: mpsc::Sender<Incoming>,
) -> Result<(), ReadError> {
    let mut dec = HeaderDecoder::default();
    let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut unacked: HashMap<u32, u32> = HashMap::new();
    let mut session_unacked = 0u32;
    while let Some(f) = read_frame(rd, &mut dec).await? {
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                out.frame(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })
                .await;
                let (tx, rx) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let s = Incoming {
                    id: stream_id,
                    headers,
                    data: rx,
                };
                if incoming.send(s).await.is_err() {
                    out.frame(Frame::RstStream {
                        stream_id,
                        status: super::spdy::rst::REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let n = data.len() as u32;
                if let Some(tx) = streams.get(&stream_id)
                    && !data.is_empty()
                {
                    let _ = tx.send(data).await;
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                    unacked.remove(&stream_id);
                } else if n > 0 {
                    let u = unacked.entry(stream_id).or_default();
                    *u += n;
                    if *u >= WINDOW_STEP {
                        let delta = std::mem::take(u);
                        out.frame(Frame::WindowUpdate { stream_id, delta }).await;
                    }
                }
                session_unacked += n;
                if session_unacked >= WINDOW_STEP {
                    let delta = std::mem::take(&mut session_unacked);
                    out.frame(Frame::WindowUpdate { stream_id: 0, delta }).await;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping { id } => {
                out.frame(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => return Ok(()),
            Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::SynReply { .. } => {}
        }
    }
    Ok(())
}
