//! A spare shim: started ahead of need, it waits for molded to name its
//! container, so making a container does not wait for a process to be
//! started, loaded and linked (2–3 ms on a busy 2-core node).
//!
//! `molde-shim spare --state DIR --title PAD` reads one line from stdin (to
//! its end: molded closes it after the line), the JSON of an
//! [`Assignment`], then goes on exactly as `molde-shim start`
//! with those arguments. End of input without a line (molded retired it,
//! or molded is gone) ends it. Its command line is rewritten in place to
//! the `start` one it stands for, so `ps` and scripts find a container's
//! shim as they always did; `--title` only reserves the room for that.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// What molded writes to a spare.
#[derive(Deserialize)]
pub(crate) struct Assignment {
    pub id: String,
    pub bundle: PathBuf,
    pub hold: bool,
}

/// Waits for the assignment; None when molded closed stdin without one.
pub(crate) fn wait() -> Result<Option<Assignment>> {
    // molded writes the line and closes the pipe: read to its end.
    let mut line = Vec::with_capacity(512);
    std::io::stdin()
        .lock()
        .read_to_end(&mut line)
        .context("reading the assignment")?;
    if line.is_empty() {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        bail!("the assignment ended before its newline");
    }
    serde_json::from_slice(&line)
        .map(Some)
        .context("reading the assignment")
}

/// Points stdin at /dev/null and stdout and stderr at the bundle's
/// `shim.log` (what molded gives a shim it starts itself).
pub(crate) fn take_stdio(a: &Assignment) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.bundle.join("shim.log"))
        .context("opening shim.log")?;
    let null = std::fs::File::open("/dev/null")?;
    for (from, to) in [(null.as_raw_fd(), 0), (log.as_raw_fd(), 1), (log.as_raw_fd(), 2)] {
        // SAFETY: dup2 onto the standard descriptors, which this process
        // owns; the originals are closed when `null` and `log` drop.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting the shim's stdio");
        }
    }
    Ok(())
}

/// Rewrites this process's command line (what /proc/PID/cmdline shows) to
/// `words`, within the room the original one took; cut short if longer.
pub(crate) fn retitle(words: &[&str]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces): arg_start and
    // arg_end are the 48th and 49th, the 46th and 47th after ")".
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (Some(start), Some(end)) = (
        f.get(45).and_then(|v| v.parse::<usize>().ok()),
        f.get(46).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        return;
    };
    if end <= start {
        return;
    }
    let mut text: Vec<u8> = words.join("\0").into_bytes();
    text.truncate(end - start - 1);
    text.resize(end - start, 0);
    // SAFETY: [arg_start, arg_end) is this process's own argument area on
    // its stack, writable, read by nothing else of this process after
    // start-up (the arguments were parsed before).
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), start as *mut u8, text.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_reads_as_molded_writes_it() {
        let a: Assignment =
            serde_json::from_str(r#"{"id":"k8s.io-c1","bundle":"/run/x/c1","hold":true}"#).unwrap();
        assert_eq!(a.id, "k8s.io-c1");
        assert_eq!(a.bundle, PathBuf::from("/run/x/c1"));
        assert!(a.hold);
    }
}
