//! A blocking writer that feeds a streaming RPC: what a tar builder (or any
//! `Write`) produces goes out as messages of a bounded size.

use std::io::Write;

use tokio::sync::mpsc;

/// Sends what is written on `tx` in messages of about `size` bytes, each made
/// by `wrap`; a closed channel is a broken pipe named by `gone`. Call `flush`
/// at the end: it sends the last, shorter message.
pub struct ChunkSender<T> {
    tx: mpsc::Sender<T>,
    wrap: fn(Vec<u8>) -> T,
    size: usize,
    gone: &'static str,
    buf: Vec<u8>,
}

impl<T> ChunkSender<T> {
    pub fn new(tx: mpsc::Sender<T>, size: usize, gone: &'static str, wrap: fn(Vec<u8>) -> T) -> Self {
        ChunkSender {
            tx,
            wrap,
            size,
            gone,
            buf: Vec::new(),
        }
    }
}

impl<T> Write for ChunkSender<T> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.size {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let msg = (self.wrap)(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(msg)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, self.gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_full_chunks_then_the_rest_on_flush() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut w = ChunkSender::new(tx, 4, "gone", |v| v);
        w.write_all(b"abcdef").unwrap();
        assert_eq!(rx.try_recv().unwrap(), b"abcdef");
        w.write_all(b"gh").unwrap();
        assert!(rx.try_recv().is_err(), "a short chunk waits for flush");
        w.flush().unwrap();
        assert_eq!(rx.try_recv().unwrap(), b"gh");
        drop(rx);
        w.write_all(b"x").unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(e.to_string(), "gone");
    }
}
