//! The kubelet's container log format, written straight to the file the
//! kubelet names (`log_directory/log_path`): one record per line,
//! `RFC3339Nano stdout|stderr P|F content`, with `F` ending a line and `P`
//! marking a piece of a line longer than `MAX_LINE` (the kubelet joins them).
//! `reopen` starts a new file at the same path after the kubelet rotated the
//! old one away.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::attach;

/// The longest piece of a line written as one record, as containerd's CRI does.
pub const MAX_LINE: usize = 16 << 10;

pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        // The kubelet (and `kubectl logs`) read it: readable by its group.
        .mode(0o640)
        .open(path)
}

impl CriLog {
    pub fn open(path: &Path) -> std::io::Result<Arc<CriLog>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(Arc::new(CriLog {
            path: path.to_path_buf(),
            file: Mutex::new(open(path)?),
        }))
    }

    /// Writes on into a new file at the path (the old one was rotated away).
    pub fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = f;
        Ok(())
    }

    fn record(&self, stream: &str, partial: bool, content: &[u8]) {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(crate::now().as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(&line) {
            eprintln!(
                "molde-shim: writing the container log {}: {e}",
                self.path.display()
            );
        }
    }
}

/// Splits a stream into log records: complete lines (`F`) and pieces of
/// over-long ones (`P`); what is left at the end, a line the program never
/// ended, is a last `P` record (as containerd writes it, so the kubelet adds
/// no newline the program did not write).
pub struct Splitter {
    pending: Vec<u8>,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter { pending: Vec::new() }
    }

    /// Feeds bytes; calls `emit(partial, content)` for each record completed.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut impl FnMut(bool, &[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..i]);
            self.flush_long(emit);
            emit(false, &self.pending);
            self.pending.clear();
            data = &data[i + 1..];
        }
        self.pending.extend_from_slice(data);
        self.flush_long(emit);
    }

    fn flush_long(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        while self.pending.len() > MAX_LINE {
            emit(true, &self.pending[..MAX_LINE]);
            self.pending.drain(..MAX_LINE);
        }
    }

    pub fn finish(&mut self, emit: &mut impl FnMut(bool, &[u8])) {
        if !self.pending.is_empty() {
            emit(true, &self.pending);
            self.pending.clear();
        }
    }
}

/// Copies one output stream of the container into the CRI log.
pub fn pump(
    mut from: File,
    stream: &'static str,
    log: Arc<CriLog>,
    attach: attach::Attach,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            let mut split = Splitter::new();
            let mut emit = |partial: bool, content: &[u8]| log.record(stream, partial, content);
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                attach.broadcast(&buf[..n]);
                split.feed(&buf[..n], &mut emit);
            }
            split.finish(&mut emit);
        })
        .expect("spawning a log reader")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]]) -> Vec<(bool, Vec<u8>)> {
        let mut out = Vec::new();
        let mut s = Splitter::new();
        let mut emit = |p: bool, c: &[u8]| out.push((p, c.to_vec()));
        for c in chunks {
            s.feed(c, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn lines_are_full_records_whatever_the_chunks() {
        assert_eq!(
            records(&[b"he", b"llo\nwor", b"ld\n"]),
            [(false, b"hello".to_vec()), (false, b"world".to_vec())]
        );
        // An unterminated last line stays partial.
        assert_eq!(
            records(&[b"first\nsecond"]),
            [(false, b"first".to_vec()), (true, b"second".to_vec())]
        );
        assert_eq!(records(&[b"\n"]), [(false, Vec::new())]);
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        let r = records(&[&input]);
        assert_eq!(r.len(), 3);
        assert!(r[0].0 && r[1].0 && !r[2].0);
        assert_eq!(r.iter().map(|(_, c)| c.len()).sum::<usize>(), long.len());
    }

    #[test]
    fn records_have_the_kubelet_format_and_reopen_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/c/0.log");
        let log = CriLog::open(&path).unwrap();
        log.record("stdout", false, b"hello");
        std::fs::rename(&path, dir.path().join("rotated")).unwrap();
        log.reopen().unwrap();
        log.record("stderr", true, b"part");
        let old = std::fs::read_to_string(dir.path().join("rotated")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        let (ts, rest) = old.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert_eq!(rest, "stdout F hello\n");
        assert!(new.ends_with(" stderr P part\n"), "{new}");
    }
}
