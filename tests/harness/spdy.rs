//! A small blocking SPDY/3.1 client for the tests, written from the draft
//! (not from molde's server module): the HTTP upgrade, SYN_STREAM to open
//! streams, data frames both ways, and the zlib header blocks with the
//! SPDY/3 dictionary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The draft's header dictionary: length-prefixed common names, then a run of
/// status lines, dates and media types.
fn dictionary() -> Vec<u8> {
    let words = "options head post put delete trace accept accept-charset accept-encoding \
        accept-language accept-ranges age allow authorization cache-control connection \
        content-base content-encoding content-language content-length content-location \
        content-md5 content-range content-type date etag expect expires from host if-match \
        if-modified-since if-none-match if-range if-unmodified-since last-modified location \
        max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after \
        server te trailer transfer-encoding upgrade user-agent vary via warning \
        www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie \
        keep-alive origin";
    let mut d = Vec::new();
    for w in words.split_whitespace() {
        let w = w.replace('_', " ");
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(
        concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
        )
        .as_bytes(),
    );
    d
}

/// What the client reads.
#[derive(Debug)]
pub enum Event {
    /// The server's data on a stream; `fin` ends its side.
    Data {
        stream: u32,
        data: Vec<u8>,
        fin: bool,
    },
    Reply {
        stream: u32,
    },
    Reset {
        stream: u32,
        status: u32,
    },
    GoAway,
    /// A control frame the tests do not look into (PING, WINDOW_UPDATE, ...).
    Other(u16),
}

pub struct Client {
    conn: TcpStream,
    enc: Compress,
    dec: Decompress,
    next_id: u32,
    /// The protocol the server chose.
    pub protocol: String,
}

impl Client {
    /// Connects to `url` (http://HOST:PORT/PATH) and upgrades to SPDY/3.1
    /// offering `protocols`; the status line and body when the server says no.
    pub fn connect(url: &str, protocols: &[&str]) -> Result<Client, String> {
        let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
        let (host, path) = rest.split_once('/').ok_or("no path")?;
        let mut conn = TcpStream::connect(host).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req =
            format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("Content-Length: 0\r\n\r\n");
        conn.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // The response head, byte by byte: SPDY frames may follow at once.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            match conn.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        if !text.starts_with("HTTP/1.1 101") {
            let mut body = String::new();
            let _ = conn.read_to_string(&mut body);
            return Err(format!("{}{body}", text.lines().next().unwrap_or("")));
        }
        let protocol = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let mut enc = Compress::new(Compression::default(), true);
        enc.set_dictionary(&dictionary()).unwrap();
        Ok(Client {
            conn,
            enc,
            dec: Decompress::new(true),
            next_id: 1,
            protocol,
        })
    }

    fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) {
        let mut f = vec![0x80, 0x03];
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        self.conn.write_all(&f).unwrap();
    }

    /// Opens a stream with these headers; its id (odd, as a client's are).
    pub fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let mut block = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k.to_ascii_lowercase(), v.to_string()] {
                block.extend_from_slice(&(s.len() as u32).to_be_bytes());
                block.extend_from_slice(s.as_bytes());
            }
        }
        let mut z = Vec::with_capacity(block.len() + 1024);
        self.enc
            .compress_vec(&block, &mut z, FlushCompress::Sync)
            .unwrap();
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend_from_slice(&z);
        self.control(1, 0, &p);
        id
    }

    pub fn send(&mut self, stream: u32, data: &[u8], fin: bool) {
        let mut f = stream.to_be_bytes().to_vec();
        f.push(if fin { 1 } else { 0 });
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.conn.write_all(&f).unwrap();
    }

    pub fn ping(&mut self, id: u32) {
        self.control(6, 0, &id.to_be_bytes());
    }

    /// The next frame; None when the connection ends.
    pub fn next_event(&mut self) -> Option<Event> {
        let mut head = [0u8; 8];
        self.conn.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let flags = head[4];
        let mut p = vec![0u8; len];
        self.conn.read_exact(&mut p).ok()?;
        if head[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Some(Event::Data {
                stream,
                data: p,
                fin: flags & 1 != 0,
            });
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]) & 0x7fff_ffff;
        Some(match kind {
            2 => {
                // Read the header block so the shared context stays in step.
                let mut out = Vec::with_capacity(4096);
                if let Err(e) = self.dec.decompress_vec(&p[4..], &mut out, FlushDecompress::Sync)
                    && e.needs_dictionary().is_some()
                {
                    self.dec.set_dictionary(&dictionary()).unwrap();
                    let done = self.dec.total_in() as usize;
                    let _ = self.dec.decompress_vec(
                        &p[4 + done.min(p.len() - 4)..],
                        &mut out,
                        FlushDecompress::Sync,
                    );
                }
                Event::Reply { stream: word(0) }
            }
            3 => Event::Reset {
                stream: word(0),
                status: word(4),
            },
            7 => Event::GoAway,
            k => Event::Other(k),
        })
    }
}

/// What a remote command gave back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the error stream carried (v4: a Status as JSON).
    pub error: Vec<u8>,
}

/// Opens the streams of a remote command (error, then stdin/stdout/stderr/
/// resize as asked), and returns the client and the stream ids by name.
pub fn open_remote(client: &mut Client, names: &[&str]) -> std::collections::HashMap<String, u32> {
    names
        .iter()
        .map(|n| (n.to_string(), client.open(&[("streamType", n)])))
        .collect()
}

/// Reads until the error stream ends, collecting every stream's data.
pub fn collect(client: &mut Client, ids: &std::collections::HashMap<String, u32>) -> Outcome {
    let mut o = Outcome::default();
    let id = |n: &str| ids.get(n).copied().unwrap_or(0);
    while let Some(ev) = client.next_event() {
        if let Event::Data { stream, data, fin } = ev {
            if stream == id("stdout") {
                o.stdout.extend(data);
            } else if stream == id("stderr") {
                o.stderr.extend(data);
            } else if stream == id("error") {
                o.error.extend(data);
                if fin {
                    break;
                }
            }
        }
    }
    o
}
