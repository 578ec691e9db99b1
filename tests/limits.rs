//! What molded bounds against a client that sends too much: header blocks
//! that expand without limit and malformed HPACK on cri.sock and
//! molde.sock, sent as raw HTTP/2 bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use molde_tests::Daemon;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A header block: one 3 KiB header added to the dynamic table, then
/// `refs` one-byte references to it (a few bytes that decode to
/// `refs` × 3 KiB), sent as HEADERS and CONTINUATION frames of 16 KiB.
fn bomb(refs: usize) -> Vec<u8> {
    let mut block = vec![0x40, 5];
    block.extend_from_slice(b"x-big");
    // A 3000-byte value: a length of 127 + 2873 in HPACK's 7-bit prefix.
    block.extend_from_slice(&[0x7f, 0xb9, 0x16]);
    block.extend_from_slice(&[b'v'; 3000]);
    block.extend(std::iter::repeat_n(0xbe, refs));
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 };
        let flags = if i == chunks.len() - 1 { 0x4 } else { 0 };
        out.extend(frame(kind, flags, 1, c));
    }
    out
}

/// Sends `bytes` on the socket and reads what comes back until the
/// connection ends (or 10 s pass).
fn send(sock: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// The frames in what a server sent, as (type, payload).
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 9 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        if b.len() < 9 + len {
            break;
        }
        out.push((b[3], b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    out
}

fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn header_bombs_and_malformed_hpack_end_one_connection_not_molded() {
    let d = Daemon::start();
    let cri = d.dir.path().join("cri.sock");
    let before = peak_kib(d.pid());
    // 70 KiB of references: 210 MB decoded if nothing stopped it.
    for sock in [&cri, &d.sock] {
        for _ in 0..3 {
            send(sock, &bomb(70_000));
        }
    }
    let grown = peak_kib(d.pid()).saturating_sub(before);
    assert!(grown < 64 << 10, "molded's peak memory grew by {grown} KiB");
    // The CRI relay says why it ended the connection: a block too large,
    // or a small one that decodes too large.
    let got = frames(&send(&cri, &bomb(70_000)));
    let goaway = got.iter().find(|(kind, _)| *kind == 0x7).expect("a GOAWAY frame");
    assert!(String::from_utf8_lossy(&goaway.1[8..]).contains("header block"));
    let got = frames(&send(&cri, &bomb(20_000)));
    let goaway = got.iter().find(|(kind, _)| *kind == 0x7).expect("a GOAWAY frame");
    assert_eq!(&goaway.1[4..8], &1u32.to_be_bytes(), "PROTOCOL_ERROR");
    assert!(String::from_utf8_lossy(&goaway.1[8..]).contains("header list"));

    // A one-byte block that is not HPACK (a table size update that never ends).
    let mut bad = PREFACE.to_vec();
    bad.extend(frame(0x4, 0, 0, &[]));
    bad.extend(frame(0x1, 0x4 | 0x1, 1, &[0x3f]));
    let got = frames(&send(&cri, &bad));
    let goaway = got.iter().find(|(kind, _)| *kind == 0x7).expect("a GOAWAY frame");
    assert_eq!(&goaway.1[4..8], &9u32.to_be_bytes(), "COMPRESSION_ERROR");
    send(&d.sock, &bad);

    // molded still serves both sockets.
    d.molde(&["version"]).ok();
    let out = std::process::Command::new(molde_tests::require("ctr"))
        .args(["--address", d.sock.to_str().unwrap(), "version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch =
            molde_api::client::channel(&molde_api::client::Address::parse(cri.to_str().unwrap()).unwrap());
        let mut c = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(ch);
        let v = c
            .version(k8s_cri::v1::VersionRequest::default())
            .await
            .expect("CRI Version after the bombs");
        assert_eq!(v.into_inner().runtime_name, "molde");
    });
}
