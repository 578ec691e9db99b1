//! The attach socket's frames: what an attach client (molded, relaying
//! `molde run -it`, `molde attach` or an interactive exec) sends the shim.
//! The container's output comes back as raw bytes.
//!
//! ```text
//! 0, u32 length (big-endian), bytes   stdin
//! 1, u16 rows, u16 columns            a terminal resize
//! 2                                   close stdin
//! ```

use std::io::{self, Read};

/// The most stdin one frame carries; a larger length is refused.
pub const MAX_STDIN: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    Resize {
        rows: u16,
        cols: u16,
    },
    CloseStdin,
    /// Reopen the container's CRI log file (it was rotated); the shim closes
    /// the connection once the new file is open.
    ReopenLog,
}

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Frame::Stdin(data) => {
                // Longer input goes in several frames.
                for chunk in data.chunks(MAX_STDIN) {
                    out.push(0);
                    out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                    out.extend_from_slice(chunk);
                }
            }
            Frame::Resize { rows, cols } => {
                out.push(1);
                out.extend_from_slice(&rows.to_be_bytes());
                out.extend_from_slice(&cols.to_be_bytes());
            }
            Frame::CloseStdin => out.push(2),
            Frame::ReopenLog => out.push(3),
        }
    }

    /// Reads the next frame; None at the end of the stream.
    pub fn read(r: &mut impl Read) -> io::Result<Option<Frame>> {
        let mut kind = [0u8; 1];
        match r.read_exact(&mut kind) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        match kind[0] {
            0 => {
                let mut len = [0u8; 4];
                r.read_exact(&mut len)?;
                let len = u32::from_be_bytes(len) as usize;
                if len > MAX_STDIN {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("attach: a stdin frame of {len} bytes, over {MAX_STDIN}"),
                    ));
                }
                let mut data = vec![0u8; len];
                r.read_exact(&mut data)?;
                Ok(Some(Frame::Stdin(data)))
            }
            1 => {
                let mut size = [0u8; 4];
                r.read_exact(&mut size)?;
                Ok(Some(Frame::Resize {
                    rows: u16::from_be_bytes([size[0], size[1]]),
                    cols: u16::from_be_bytes([size[2], size[3]]),
                }))
            }
            2 => Ok(Some(Frame::CloseStdin)),
            3 => Ok(Some(Frame::ReopenLog)),
            k => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach: unknown frame kind {k}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Stdin(b"echo hi\n".to_vec()),
            Frame::CloseStdin,
            Frame::ReopenLog,
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let mut r = buf.as_slice();
        for f in &frames {
            assert_eq!(Frame::read(&mut r).unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read(&mut r).unwrap(), None);
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused() {
        let mut buf = vec![0u8];
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Frame::read(&mut buf.as_slice()).is_err());
        assert!(Frame::read(&mut [9u8].as_slice()).is_err());
    }
}
