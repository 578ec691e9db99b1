//! A created container held until molded orders its start.
//!
//! containerd's task API creates a task (its process exists, stopped before
//! the user's program) and starts it later; the CRI does the same with
//! CreateContainer and StartContainer. With `--hold` the shim does all the
//! work of a start up to libcontainer's start signal, records the init's pid
//! in `created.pid`, and reads its order from the bundle's FIFO: start, or
//! give the container up. Meanwhile it watches the init, whose death (a
//! kill of the created task) ends the hold.

use std::time::Duration;

use anyhow::{Context, Result};
use molde_bundle::{Bundle, HOLD_ABANDON, HOLD_START};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::fs::{Mode, OFlags};

/// How a hold ended.
pub(crate) enum Held {
    Start,
    Abandon,
    /// The init died while held; its status, already reaped.
    Ended(WaitStatus),
}

pub(crate) fn hold(bundle: &Bundle, init: Pid) -> Result<Held> {
    let path = bundle.hold_fifo();
    match rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::from_raw_mode(0o600)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    // Read-write: the open does not wait for a writer, and a writer that
    // comes and goes never leaves an end-of-file behind.
    let fifo = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", path.display()))?;
    bundle.write_created_pid(init.as_raw())?;
    loop {
        let mut fds = [PollFd::new(&fifo, PollFlags::IN)];
        let timeout =
            rustix::event::Timespec::try_from(Duration::from_millis(200)).expect("a small duration");
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("waiting for molded's order"),
        }
        if fds[0].revents().contains(PollFlags::IN) {
            let mut order = [0u8; 1];
            if rustix::io::read(&fifo, &mut order)? == 1 {
                match order[0] {
                    HOLD_START => return Ok(Held::Start),
                    HOLD_ABANDON => return Ok(Held::Abandon),
                    _ => continue,
                }
            }
        }
        match waitpid(init, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(Held::Ended(s)),
            Ok(_) => {}
            Err(e) => return Err(e).context("watching the created container's init"),
        }
    }
}
