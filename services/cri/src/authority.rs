//! The kubelet of Kubernetes 1.26 (and critest and crictl of its time) dial
//! the CRI socket through grpc-go with the socket's *path* as the target, and
//! send it as the HTTP/2 `:authority` (`/run/molde/cri.sock`). That is not an
//! authority, and the h2 server under tonic refuses the request
//! (PROTOCOL_ERROR). containerd and CRI-O, in Go, do not look.
//!
//! So each connection to the CRI socket passes through here on its way to the
//! gRPC server: the client's HTTP/2 frames are read one by one; a request's
//! header block (HEADERS and CONTINUATION frames) is decoded (HPACK, with the
//! client's dynamic table), its `:authority` replaced by `localhost` when it
//! is not a valid authority, and re-encoded as literals that need no dynamic
//! table; every other frame, and everything the server sends back, passes
//! unchanged.
//!
//! The relay decodes what any local client sends, so it is bounded like a
//! server: a header block of at most [`MAX_HEADER_LIST`] bytes, a decoded
//! header list no larger (a small block that expands, a "header bomb",
//! stops there), a dynamic table of at most the 4 KiB the server advertises,
//! and no panic on malformed input. A client that breaks a bound gets a
//! GOAWAY (COMPRESSION_ERROR for HPACK it cannot decode, PROTOCOL_ERROR
//! otherwise) and its connection ends; other connections go on.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's floor).
const MAX_FRAME: usize = 16_384;
/// Header blocks, and the header lists they decode to, larger than this
/// are refused (the connection ends).
const MAX_HEADER_LIST: usize = molde_api::client::MAX_HEADER_LIST as usize;
/// The dynamic table a client's encoder may use: h2's default
/// SETTINGS_HEADER_TABLE_SIZE, which the gRPC server behind advertises.
const MAX_TABLE: usize = 4096;
const GOAWAY: u8 = 0x7;
const PROTOCOL_ERROR: u32 = 0x1;
const COMPRESSION_ERROR: u32 = 0x9;

/// Accepts connections on `listener`, each relayed through an authority fixer
/// to the stream the gRPC server reads.
pub fn incoming(listener: UnixListener) -> tokio_stream::wrappers::ReceiverStream<io::Result<DuplexStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let (ours, server) = tokio::io::duplex(256 << 10);
                    tokio::spawn(relay(client, ours));
                    if tx.send(Ok(server)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn relay(client: UnixStream, server: DuplexStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let up = async move {
        let r = fix_frames(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
        r
    };
    let down = async { tokio::io::copy(&mut sr, &mut cw).await.map(|_| ()) };
    let (a, b) = tokio::join!(up, down);
    // The server has said all it will (it saw the client's side end), so a
    // GOAWAY can follow its last frame whole.
    if let Err(e) = &a
        && let Some(code) = refusal(e)
    {
        tracing::info!(error = %e, "a CRI client broke the HTTP/2 limits; its connection ends");
        let _ = cw.write_all(&goaway(code, &e.to_string())).await;
    }
    let _ = cw.shutdown().await;
    if let Err(e) = a.and(b)
        && e.kind() != io::ErrorKind::UnexpectedEof
        && e.kind() != io::ErrorKind::BrokenPipe
        && e.kind() != io::ErrorKind::ConnectionReset
    {
        tracing::debug!(error = %e, "CRI connection ended");
    }
}

/// A refusal this relay made, and its HTTP/2 error code.
#[derive(Debug)]
struct Refused {
    code: u32,
    why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Refused {}

fn refuse(code: u32, why: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Refused {
            code,
            why: why.into(),
        },
    )
}

fn refusal(e: &io::Error) -> Option<u32> {
    e.get_ref()
        .and_then(|r| r.downcast_ref::<Refused>())
        .map(|r| r.code)
}

/// A GOAWAY frame: no stream processed past what the server answered (0
/// here: the relay does not track streams), the code, and why.
fn goaway(code: u32, why: &str) -> Vec<u8> {
    let debug = &why.as_bytes()[..why.len().min(256)];
    let len = (8 + debug.len()) as u32;
    let mut f = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        GOAWAY,
        0,
        0,
        0,
        0,
        0,
    ];
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(debug);
    f
}

/// Whether `s` can be an HTTP authority (`host[:port]`, no path): what h2 accepts.
fn valid_authority(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%".contains(b))
}

/// Reads the client's frames and writes them on, fixing header blocks.
async fn fix_frames<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if preface != PREFACE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP/2 connection",
        ));
    }
    to.write_all(&preface).await?;
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(MAX_TABLE);
    // A header block being gathered: (stream, flags of its HEADERS frame, fragments).
    let mut block: Option<(u32, u8, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if matches!(kind, HEADERS | CONTINUATION) && len > MAX_HEADER_LIST {
            return Err(refuse(PROTOCOL_ERROR, format!("a header frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        match kind {
            HEADERS => {
                let mut p = payload.as_slice();
                if flags & PADDED != 0 {
                    let pad = *p.first().ok_or_else(bad_frame)? as usize;
                    p = p
                        .get(1..p.len().checked_sub(pad).ok_or_else(bad_frame)?)
                        .ok_or_else(bad_frame)?;
                }
                if flags & PRIORITY != 0 {
                    p = p.get(5..).ok_or_else(bad_frame)?;
                }
                let fragment = p.to_vec();
                if flags & END_HEADERS != 0 {
                    let fixed = rewrite(&mut decoder, &fragment)?;
                    write_block(to, stream, flags & END_STREAM, &fixed).await?;
                } else {
                    block = Some((stream, flags & END_STREAM, fragment));
                }
            }
            CONTINUATION => {
                let Some((s, end_stream, mut fragments)) = block.take() else {
                    return Err(bad_frame());
                };
                if s != stream {
                    return Err(bad_frame());
                }
                if fragments.len() + payload.len() > MAX_HEADER_LIST {
                    return Err(refuse(
                        PROTOCOL_ERROR,
                        format!("a header block over {MAX_HEADER_LIST} bytes"),
                    ));
                }
                fragments.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    let fixed = rewrite(&mut decoder, &fragments)?;
                    write_block(to, stream, end_stream, &fixed).await?;
                } else {
                    block = Some((s, end_stream, fragments));
                }
            }
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
            }
        }
    }
}

fn bad_frame() -> io::Error {
    refuse(PROTOCOL_ERROR, "malformed HTTP/2 header frame")
}

/// Decodes a header block, fixes `:authority`, and encodes it again as
/// literals without indexing (no dynamic table on the server's side). A
/// header list that decodes to more than [`MAX_HEADER_LIST`] bytes is
/// refused: nothing past the limit is kept while the rest is decoded (the
/// decoder must still see the whole block to keep its table in step).
fn rewrite(decoder: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() + 64);
    let mut size = 0usize;
    decoder
        .decode_with_cb(block, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            if size > MAX_HEADER_LIST {
                return;
            }
            let value: &[u8] = if &*name == b":authority" && !valid_authority(&value) {
                b"localhost"
            } else {
                &value
            };
            out.push(0x00);
            encode_string(&mut out, &name);
            encode_string(&mut out, value);
        })
        .map_err(|e| refuse(COMPRESSION_ERROR, format!("HPACK: {e:?}")))?;
    if size > MAX_HEADER_LIST {
        return Err(refuse(
            PROTOCOL_ERROR,
            format!("a header list of {size} bytes decoded (the limit is {MAX_HEADER_LIST})"),
        ));
    }
    Ok(out)
}

/// An HPACK string literal, not Huffman-coded.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix, the high bits of its first byte `first`.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// Writes a header block as HEADERS (and CONTINUATION) frames of at most MAX_FRAME.
async fn write_block<W: AsyncWriteExt + Unpin>(
    to: &mut W,
    stream: u32,
    end_stream: u8,
    block: &[u8],
) -> io::Result<()> {
    let chunks: Vec<&[u8]> = if block.is_empty() {
        vec![&[]]
    } else {
        block.chunks(MAX_FRAME).collect()
    };
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i == 0 { end_stream } else { 0 };
        if i == last {
            flags |= END_HEADERS;
        }
        let len = (c.len() as u32).to_be_bytes();
        let mut head = [len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        head[5..9].copy_from_slice(&stream.to_be_bytes());
        to.write_all(&head).await?;
        to.write_all(c).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(headers: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut e = loona_hpack::Encoder::new();
        e.encode(headers.iter().copied())
    }

    #[test]
    fn a_path_authority_becomes_localhost_and_the_rest_stays() {
        let mut d = loona_hpack::Decoder::new();
        let b = block(&[
            (b":method", b"POST"),
            (b":authority", b"/run/molde/cri.sock"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b"content-type", b"application/grpc"),
        ]);
        let fixed = rewrite(&mut d, &b).unwrap();
        let got = loona_hpack::Decoder::new().decode(&fixed).unwrap();
        assert_eq!(got[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(got[2].1, b"/runtime.v1.RuntimeService/Version");
        assert_eq!(got.len(), 4);
        // A valid authority is kept.
        let mut d = loona_hpack::Decoder::new();
        let b = block(&[(b":authority", b"localhost:1234")]);
        let got = loona_hpack::Decoder::new()
            .decode(&rewrite(&mut d, &b).unwrap())
            .unwrap();
        assert_eq!(got[0].1, b"localhost:1234");
    }

    #[test]
    fn a_block_that_expands_past_the_limit_is_refused() {
        // One header of 3 KiB into the dynamic table, then a block of
        // references to it: a few bytes that decode to megabytes.
        let mut d = loona_hpack::Decoder::new();
        d.set_max_allowed_table_size(MAX_TABLE);
        let mut first = vec![0x40];
        encode_string(&mut first, b"x-big");
        encode_string(&mut first, &vec![b'v'; 3000]);
        rewrite(&mut d, &first).unwrap();
        let bomb = vec![0xbe; 4000];
        let e = rewrite(&mut d, &bomb).unwrap_err();
        assert_eq!(refusal(&e), Some(PROTOCOL_ERROR), "{e}");
        assert!(e.to_string().contains("header list"), "{e}");
    }

    #[test]
    fn malformed_hpack_is_an_error_not_a_panic() {
        let mut d = loona_hpack::Decoder::new();
        d.set_max_allowed_table_size(MAX_TABLE);
        // A table size update whose integer never ends.
        let e = rewrite(&mut d, &[0x3f]).unwrap_err();
        assert_eq!(refusal(&e), Some(COMPRESSION_ERROR), "{e}");
        // A table larger than the server allows.
        let mut grow = Vec::new();
        encode_int(&mut grow, 0x20, 5, 1 << 20);
        let mut d = loona_hpack::Decoder::new();
        d.set_max_allowed_table_size(MAX_TABLE);
        assert!(rewrite(&mut d, &grow).is_err());
        // An index past both tables.
        assert!(rewrite(&mut loona_hpack::Decoder::new(), &[0xff, 0x80, 0x10]).is_err());
    }

    #[test]
    fn integers_use_their_prefix_and_continue() {
        let mut out = Vec::new();
        encode_int(&mut out, 0, 7, 10);
        encode_int(&mut out, 0, 7, 1337);
        assert_eq!(out, [10, 127, 0xba, 0x09]);
    }

    #[tokio::test]
    async fn frames_pass_through_with_headers_rewritten_and_split() {
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame, passed as it is.
        input.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        // HEADERS (no END_HEADERS) + CONTINUATION.
        let b = block(&[(b":authority", b"/a/sock"), (b"x-big", &vec![b'v'; 20_000])]);
        let (first, rest) = b.split_at(10);
        let mut h = vec![0, 0, first.len() as u8, HEADERS, END_STREAM, 0, 0, 0, 1];
        h.extend_from_slice(first);
        input.extend_from_slice(&h);
        let len = (rest.len() as u32).to_be_bytes();
        input.extend_from_slice(&[len[1], len[2], len[3], CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        input.extend_from_slice(rest);
        let mut out = Vec::new();
        fix_frames(&mut input.as_slice(), &mut out).await.unwrap();
        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..33], &[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        // The block comes back as HEADERS + CONTINUATION, the first with END_STREAM.
        let mut p = &out[33..];
        let mut gathered = Vec::new();
        let mut kinds = Vec::new();
        while !p.is_empty() {
            let len = u32::from_be_bytes([0, p[0], p[1], p[2]]) as usize;
            kinds.push((p[3], p[4]));
            gathered.extend_from_slice(&p[9..9 + len]);
            p = &p[9 + len..];
        }
        assert_eq!(kinds, [(HEADERS, END_STREAM), (CONTINUATION, END_HEADERS)]);
        let got = loona_hpack::Decoder::new().decode(&gathered).unwrap();
        assert_eq!(got[0].1, b"localhost");
        assert_eq!(got[1].1.len(), 20_000);
    }
}
