//! Attaching the terminal to a container: `molde run -it`, `molde attach`.
//! Stdin goes to the container, its output to stdout. With a container
//! terminal, the local one is put in raw mode and resizes (SIGWINCH)
//! follow; without one, the local terminal keeps its line discipline
//! (output does not staircase, Ctrl-C is a signal) and, with sig-proxy,
//! SIGINT and SIGTERM are forwarded. The detach keys (Ctrl-P Ctrl-Q by
//! default) leave the container running.

use std::io::{IsTerminal, Read, Write};

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::daemon::{Daemon, status};

/// Restores the terminal's settings when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(orig) = nix::sys::termios::tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, orig);
        }
    }
}

/// The terminal's size, if stdout is one.
pub(crate) fn window() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into the winsize we lend it.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row as u32, ws.ws_col as u32))
}

pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// The key sequence that detaches, as docker's `--detach-keys` spells it:
/// comma-separated `ctrl-X` or single characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachKeys(Vec<u8>);

impl DetachKeys {
    pub fn parse(spec: &str) -> Result<DetachKeys> {
        let mut keys = Vec::new();
        for k in spec.split(',').filter(|k| !k.is_empty()) {
            let byte = match k.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let c = c.as_bytes()[0].to_ascii_uppercase();
                    match c {
                        b'@'..=b'_' => c - b'@',
                        _ => anyhow::bail!("--detach-keys {spec:?}: ctrl-{} is not a control key", c as char),
                    }
                }
                None if k.len() == 1 && k.is_ascii() => k.as_bytes()[0],
                _ => anyhow::bail!(
                    "--detach-keys {spec:?}: {k:?} is neither a letter nor ctrl-<key> (e.g. ctrl-p,ctrl-q)"
                ),
            };
            keys.push(byte);
        }
        Ok(DetachKeys(keys))
    }

    /// No detaching (an exec's attach).
    pub fn none() -> DetachKeys {
        DetachKeys(Vec::new())
    }
}

/// Finds the detach sequence in what the user types. Bytes that could be
/// its beginning are held back until the next read tells.
struct Detacher {
    keys: Vec<u8>,
    matched: usize,
}

impl Detacher {
    /// What to send on from `input`, and whether the sequence was typed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes on.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// How to attach.
pub struct How {
    /// Send stdin to the container.
    pub stdin: bool,
    /// The container (or exec) has a terminal.
    pub tty: bool,
    pub keys: DetachKeys,
    /// Forward SIGINT and SIGTERM to the container (no terminal only).
    pub sig_proxy: bool,
}

/// Why an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The container's output ended: it exited.
    Exited,
    /// The user typed the detach keys; the container runs on.
    Detached,
}

/// Relays until the container's output ends (it exited) or the user
/// detaches. `exec_id` names an interactive exec to attach to instead of
/// the container's own process.
pub async fn attach(d: &Daemon, id: &str, how: How, exec_id: &str) -> Result<Ended> {
    connect(d, id, exec_id).await?.relay(d, id, how, exec_id).await
}

/// An attach whose connection to the container's shim is made.
pub struct Attached {
    tx: mpsc::Sender<api::AttachInput>,
    out: tonic::Streaming<api::AttachOutput>,
}

/// Connects to the container's (or exec's) shim; nothing is relayed yet.
pub async fn connect(d: &Daemon, id: &str, exec_id: &str) -> Result<Attached> {
    let (tx, rx) = mpsc::channel::<api::AttachInput>(16);
    let (rows, cols) = window().unwrap_or((0, 0));
    tx.send(api::AttachInput {
        id: id.into(),
        exec_id: exec_id.into(),
        rows,
        cols,
        ..Default::default()
    })
    .await?;
    let out = RuntimeClient::new(d.channel.clone())
        .attach(d.request(ReceiverStream::new(rx)))
        .await
        .map_err(status(format!("attaching to {id}")))?
        .into_inner();
    Ok(Attached { tx, out })
}

impl Attached {
    /// Relays until the container's output ends or the user detaches.
    pub async fn relay(self, d: &Daemon, id: &str, how: How, exec_id: &str) -> Result<Ended> {
        let Attached { tx, mut out } = self;
        // Raw mode only for a container terminal: it does the echo and line
        // editing then, and Ctrl-C reaches it as a byte.
        let _raw = (how.stdin && how.tty).then(RawMode::enter);
        let (detached_tx, mut detached) = mpsc::channel::<()>(1);
        if how.stdin {
            let txi = tx.clone();
            let mut detacher = Detacher {
                keys: how.keys.0.clone(),
                matched: 0,
            };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut input = std::io::stdin().lock();
                loop {
                    match input.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = txi.blocking_send(api::AttachInput {
                                close_stdin: true,
                                ..Default::default()
                            });
                            return;
                        }
                        Ok(n) => {
                            let (data, detach) = detacher.feed(&buf[..n]);
                            if !data.is_empty()
                                && txi
                                    .blocking_send(api::AttachInput {
                                        data,
                                        ..Default::default()
                                    })
                                    .is_err()
                            {
                                return;
                            }
                            if detach {
                                let _ = detached_tx.blocking_send(());
                                return;
                            }
                        }
                    }
                }
            });
        }
        if how.sig_proxy && !how.tty && exec_id.is_empty() {
            let (d, id) = (d.clone(), id.to_string());
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) =
                    (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => "INT",
                        _ = term.recv() => "TERM",
                    };
                    let _ = RuntimeClient::new(d.channel.clone())
                        .kill(d.request(api::KillRequest {
                            id: id.clone(),
                            signal: sig.into(),
                        }))
                        .await;
                }
            });
        }
        let txr = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = window()
                    && txr
                        .send(api::AttachInput {
                            rows,
                            cols,
                            ..Default::default()
                        })
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
        let mut stdout = std::io::stdout();
        loop {
            let m = tokio::select! {
                m = out.message() => m.map_err(|s| anyhow!("{}", s.message()))?,
                Some(()) = detached.recv() => {
                    drop(_raw);
                    eprintln!("\r\nread escape sequence");
                    return Ok(Ended::Detached);
                }
            };
            let Some(m) = m else {
                return Ok(Ended::Exited);
            };
            stdout.write_all(&m.data)?;
            stdout.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_spells_them() {
        assert_eq!(DetachKeys::parse("ctrl-p,ctrl-q").unwrap().0, vec![0x10, 0x11]);
        assert_eq!(DetachKeys::parse("ctrl-a,x").unwrap().0, vec![0x01, b'x']);
        assert_eq!(DetachKeys::parse("ctrl-@,ctrl-[").unwrap().0, vec![0, 27]);
        let err = DetachKeys::parse("ctrl-pq").unwrap_err().to_string();
        assert!(err.contains("ctrl-pq"), "{err}");
        assert!(DetachKeys::parse("ctrl-1").is_err());
    }

    #[test]
    fn the_sequence_is_found_across_reads_and_nothing_else_is_kept() {
        let mut d = Detacher {
            keys: vec![0x10, 0x11],
            matched: 0,
        };
        assert_eq!(d.feed(b"ab\x10"), (b"ab".to_vec(), false), "held back");
        assert_eq!(
            d.feed(b"c"),
            (b"\x10c".to_vec(), false),
            "not the sequence: sent on"
        );
        assert_eq!(
            d.feed(b"\x10\x10"),
            (b"\x10".to_vec(), false),
            "the second may start it"
        );
        assert_eq!(d.feed(b"\x11rest"), (Vec::new(), true));
        let mut none = Detacher {
            keys: Vec::new(),
            matched: 0,
        };
        assert_eq!(none.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
