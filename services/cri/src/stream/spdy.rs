//! SPDY/3.1 framing, as the Kubernetes streaming protocols use it
//! (draft-mbelshe-httpbis-spdy-00, with SPDY/3.1's session flow control).
//!
//! ```text
//! control frame   |1| version (15) | type (16) | flags (8) | length (24) | data
//! data frame      |0| stream id (31)           | flags (8) | length (24) | data
//! ```
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a count and
//! length-prefixed names and values, zlib-compressed with the SPDY/3
//! dictionary; each direction of a session keeps one compression context
//! for all its blocks. This module is the codec only: no I/O.

use std::io::{Read, Write};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The largest frame payload accepted (the length field allows 16 MiB).
pub const MAX_PAYLOAD: usize = 1 << 24;
/// The most decompressed header block bytes accepted for one frame.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const STREAM_IN_USE: u32 = 8;
    pub const STREAM_ALREADY_CLOSED: u32 = 9;
}

/// Header names (lower case, as SPDY/3 requires) and values.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("SPDY: version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("SPDY: a frame of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("SPDY: a {what} frame of {len} bytes is too short")]
    Short { what: &'static str, len: usize },
    #[error("SPDY: bad header block: {0}")]
    HeaderBlock(String),
}

/// The SPDY/3 header compression dictionary (draft section 2.6.10.1):
/// common header names and values, each with a 32-bit length, then a run
/// of status codes, reason phrases, dates and media types without lengths.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
        " 00:00:00",
        " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    for t in TAIL {
        d.extend_from_slice(t.as_bytes());
    }
    d
}

/// One direction's header compression context.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary())
            .expect("zlib takes the SPDY dictionary");
        HeaderEncoder { z }
    }
}

impl HeaderEncoder {
    /// The compressed block for `headers` (flushed, so the peer can read it now).
    pub fn encode(&mut self, headers: &Headers) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            for s in [k.as_str(), v.as_str()] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before = self.z.total_in();
            self.z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("compressing into a growing buffer");
            input = &input[(self.z.total_in() - before) as usize..];
            // Done once everything went in and the flush left room to spare.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// The other direction's decompression context.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        HeaderDecoder {
            z: Decompress::new(true),
        }
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |m: String| SpdyError::HeaderBlock(m);
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            raw.reserve(1024);
            let before = self.z.total_in();
            let r = self.z.decompress_vec(input, &mut raw, FlushDecompress::Sync);
            let r = match r {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&dictionary())
                        .map_err(|e| bad(format!("dictionary: {e}")))?;
                    Ok(Status::Ok)
                }
                other => other,
            };
            let status = r.map_err(|e| bad(e.to_string()))?;
            input = &input[(self.z.total_in() - before) as usize..];
            if raw.len() > MAX_HEADER_BLOCK {
                return Err(bad(format!("over {MAX_HEADER_BLOCK} bytes")));
            }
            if input.is_empty() && (raw.len() < raw.capacity() || status == Status::StreamEnd) {
                break;
            }
        }
        let mut r = raw.as_slice();
        let count = read_u32(&mut r).ok_or_else(|| bad("no pair count".into()))? as usize;
        if count > 4096 {
            return Err(bad(format!("{count} pairs")));
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let k = read_string(&mut r).ok_or_else(|| bad("a truncated name".into()))?;
            let v = read_string(&mut r).ok_or_else(|| bad("a truncated value".into()))?;
            if k.is_empty() {
                return Err(bad("an empty name".into()));
            }
            headers.push((k, v));
        }
        Ok(headers)
    }
}

fn read_u32(r: &mut &[u8]) -> Option<u32> {
    let (head, rest) = r.split_first_chunk::<4>()?;
    *r = rest;
    Some(u32::from_be_bytes(*head))
}

fn read_string(r: &mut &[u8]) -> Option<String> {
    let n = read_u32(r)? as usize;
    if r.len() < n {
        return None;
    }
    let (s, rest) = r.split_at(n);
    *r = rest;
    Some(String::from_utf8_lossy(s).into_owned())
}

/// The value of header `name` in a block.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Frame {
    /// The frame's bytes; header blocks go through `enc`.
    pub fn encode(&self, enc: &mut HeaderEncoder) -> Vec<u8> {
        let control = |kind: u16, flags: u8, payload: Vec<u8>| {
            let mut out = Vec::with_capacity(8 + payload.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((flags as u32) << 24 | payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&payload);
            out
        };
        let id = |n: u32| (n & 0x7fff_ffff).to_be_bytes();
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&id(*stream_id));
                p.extend_from_slice(&id(*associated_to));
                p.push((priority & 0x7) << 5);
                p.push(0); // slot
                p.extend_from_slice(&enc.encode(headers));
                control(SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&enc.encode(headers));
                control(SYN_REPLY, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&enc.encode(headers));
                control(HEADERS, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, p)
            }
            Frame::Settings { flags, entries } => {
                let mut p = (entries.len() as u32).to_be_bytes().to_vec();
                for (f, i, v) in entries {
                    p.extend_from_slice(&(((*f as u32) << 24) | (i & 0x00ff_ffff)).to_be_bytes());
                    p.extend_from_slice(&v.to_be_bytes());
                }
                control(SETTINGS, *flags, p)
            }
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = id(*last_good_stream_id).to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = id(*stream_id).to_vec();
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(WINDOW_UPDATE, 0, p)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&id(*stream_id));
                out.extend_from_slice(&((*flags as u32) << 24 | data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
                out
            }
        }
    }

    /// Reads one frame; `Ok(None)` at a clean end of the connection. Frames
    /// of types SPDY/3 does not define are skipped, as the draft asks.
    pub fn read(r: &mut impl Read, dec: &mut HeaderDecoder) -> Result<Option<Frame>, ReadError> {
        loop {
            let mut head = [0u8; 8];
            match r.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let word = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let (flags, len) = ((word >> 24) as u8, (word & 0x00ff_ffff) as usize);
            if len > MAX_PAYLOAD {
                return Err(SpdyError::TooLarge(len).into());
            }
            let mut payload = vec![0u8; len];
            r.read_exact(&mut payload)?;
            if let Some(f) = Self::parse(head, flags, payload, dec)? {
                return Ok(Some(f));
            }
        }
    }

    fn parse(
        head: [u8; 8],
        flags: u8,
        p: Vec<u8>,
        dec: &mut HeaderDecoder,
    ) -> Result<Option<Frame>, SpdyError> {
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                flags,
                data: p,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let need = |what: &'static str, n: usize| {
            if p.len() < n {
                Err(SpdyError::Short { what, len: p.len() })
            } else {
                Ok(())
            }
        };
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let frame = match kind {
            SYN_STREAM => {
                need("SYN_STREAM", 10)?;
                Frame::SynStream {
                    stream_id: word(0) & 0x7fff_ffff,
                    associated_to: word(4) & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    headers: dec.decode(&p[10..])?,
                }
            }
            SYN_REPLY => {
                need("SYN_REPLY", 4)?;
                Frame::SynReply {
                    stream_id: word(0) & 0x7fff_ffff,
                    flags,
                    headers: dec.decode(&p[4..])?,
                }
            }
            HEADERS => {
                need("HEADERS", 4)?;
                Frame::Headers {
                    stream_id: word(0) & 0x7fff_ffff,
                    flags,
                    headers: dec.decode(&p[4..])?,
                }
            }
            RST_STREAM => {
                need("RST_STREAM", 8)?;
                Frame::RstStream {
                    stream_id: word(0) & 0x7fff_ffff,
                    status: word(4),
                }
            }
            SETTINGS => {
                need("SETTINGS", 4)?;
                let n = word(0) as usize;
                need("SETTINGS", 4 + n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|i| {
                        let e = word(4 + i * 8);
                        ((e >> 24) as u8, e & 0x00ff_ffff, word(8 + i * 8))
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need("PING", 4)?;
                Frame::Ping { id: word(0) }
            }
            GOAWAY => {
                need("GOAWAY", 8)?;
                Frame::GoAway {
                    last_good_stream_id: word(0) & 0x7fff_ffff,
                    status: word(4),
                }
            }
            WINDOW_UPDATE => {
                need("WINDOW_UPDATE", 8)?;
                Frame::WindowUpdate {
                    stream_id: word(0) & 0x7fff_ffff,
                    delta: word(4) & 0x7fff_ffff,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Spdy(#[from] SpdyError),
}

/// Writes a frame (a convenience for blocking writers).
pub fn write(w: &mut impl Write, f: &Frame, enc: &mut HeaderEncoder) -> std::io::Result<()> {
    w.write_all(&f.encode(enc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame]) {
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let mut wire = Vec::new();
        for f in frames {
            write(&mut wire, f, &mut enc).unwrap();
        }
        let mut r = wire.as_slice();
        for f in frames {
            assert_eq!(Frame::read(&mut r, &mut dec).unwrap().as_ref(), Some(f));
        }
        assert!(Frame::read(&mut r, &mut dec).unwrap().is_none());
    }

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_drafts() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b"enq=0."));
        // zlib names a dictionary by its Adler-32; peers check it.
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&d).unwrap();
        let mut out = Vec::with_capacity(64);
        z.compress_vec(b"x", &mut out, FlushCompress::Sync).unwrap();
        assert_eq!(&out[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: h(&[]),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: h(&[("x", "y")]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Vec::new(),
            },
        ]);
    }

    #[test]
    fn header_blocks_share_one_context_per_direction() {
        // The second block refers back into the first one's window: a decoder
        // that started over would fail on it.
        let headers = h(&[("streamtype", "stdout"), ("requestid", "0")]);
        round_trip(
            &(1..=20)
                .map(|i| Frame::SynStream {
                    stream_id: 2 * i - 1,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: headers.clone(),
                })
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn control_frame_layout() {
        let mut enc = HeaderEncoder::default();
        let ping = Frame::Ping { id: 0x0102_0304 }.encode(&mut enc);
        assert_eq!(ping, [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4]);
        let data = Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: b"ab".to_vec(),
        }
        .encode(&mut enc);
        assert_eq!(data, [0, 0, 0, 3, 0x01, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut dec = HeaderDecoder::default();
        // Version 2.
        let v2 = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            Frame::read(&mut v2.as_slice(), &mut dec),
            Err(ReadError::Spdy(SpdyError::Version(2)))
        ));
        // A RST_STREAM too short for its fields.
        let short = [0x80, 0x03, 0x00, 0x03, 0, 0, 0, 2, 0, 1];
        assert!(Frame::read(&mut short.as_slice(), &mut HeaderDecoder::default()).is_err());
        // A header block that is not zlib.
        let junk = [0x80, 0x03, 0x00, 0x02, 0, 0, 0, 8, 0, 0, 0, 1, 9, 9, 9, 9];
        assert!(Frame::read(&mut junk.as_slice(), &mut HeaderDecoder::default()).is_err());
        // An unknown control type is skipped.
        let mut wire = vec![0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 1, 0];
        wire.extend(Frame::Ping { id: 1 }.encode(&mut HeaderEncoder::default()));
        assert_eq!(
            Frame::read(&mut wire.as_slice(), &mut HeaderDecoder::default()).unwrap(),
            Some(Frame::Ping { id: 1 })
        );
    }
}
