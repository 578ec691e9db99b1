//! Attaching the terminal to a container: `molde run -it`, `molde attach`.
//! Stdin goes to the container (raw mode when it is a terminal), its output to
//! stdout, and terminal resizes (SIGWINCH) follow.

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

/// Relays until the container's output ends (it exited).
/// `exec_id` names an interactive exec to attach to instead of the
/// container's own process.
pub async fn attach(d: &Daemon, id: &str, stdin: bool, exec_id: &str) -> Result<()> {
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
    let mut out = RuntimeClient::new(d.channel.clone())
        .attach(d.request(ReceiverStream::new(rx)))
        .await
        .map_err(status(format!("attaching to {id}")))?
        .into_inner();
    let _raw = if stdin { Some(RawMode::enter()) } else { None };
    if stdin {
        let txi = tx.clone();
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
                        if txi
                            .blocking_send(api::AttachInput {
                                data: buf[..n].to_vec(),
                                ..Default::default()
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
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
    while let Some(m) = out.message().await.map_err(|s| anyhow!("{}", s.message()))? {
        stdout.write_all(&m.data)?;
        stdout.flush()?;
    }
    Ok(())
}
