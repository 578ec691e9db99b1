//! The spare shim: one `molde-shim spare` kept started ahead of need, so
//! that making a container hands it its bundle instead of starting a
//! process (the exec, loading and linking of the shim: 2–3 ms of every
//! container's create on a busy node). Each spare handed out is replaced in
//! the background. A spare reads its assignment from a pipe that only
//! molded holds: when molded ends, so does its spare.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Room reserved on a spare's command line for the `start` one it takes on
/// (see molde-shim's `spare::retitle`): an ID and a bundle path fit.
const TITLE_ROOM: usize = 512;

pub(crate) struct Spares {
    shim: PathBuf,
    /// libcontainer's state root, the shim's `--state`.
    state: PathBuf,
    slot: Mutex<Option<Spare>>,
    filling: AtomicBool,
}

struct Spare {
    child: Child,
    stdin: ChildStdin,
}

impl Spares {
    pub(crate) fn new(shim: PathBuf, state: PathBuf) -> Arc<Spares> {
        Arc::new(Spares {
            shim,
            state,
            slot: Mutex::new(None),
            filling: AtomicBool::new(false),
        })
    }

    /// Hands container `id` (its bundle, whether to hold it created) to the
    /// spare; false when there is none ready, for the caller to start a
    /// shim itself. Either way another spare is made ready.
    pub(crate) fn assign(self: &Arc<Self>, id: &str, bundle: &Path, hold: bool) -> bool {
        let spare = self.slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.refill();
        let Some(mut spare) = spare else {
            return false;
        };
        if !matches!(spare.child.try_wait(), Ok(None)) {
            return false;
        }
        let line = serde_json::json!({ "id": id, "bundle": bundle, "hold": hold }).to_string() + "\n";
        if let Err(e) = spare.stdin.write_all(line.as_bytes()) {
            tracing::debug!("a spare shim took no assignment: {e}");
            let _ = spare.child.kill();
            let _ = spare.child.wait();
            return false;
        }
        drop(spare.stdin);
        let mut child = spare.child;
        // Reaped when it ends; it reports through the bundle's files.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        true
    }

    /// Makes a spare ready in the background, unless one is or is coming.
    pub(crate) fn refill(self: &Arc<Self>) {
        if self.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("spare-shim".into())
            .spawn(move || {
                if me.slot.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
                    match me.spawn() {
                        Ok(s) => *me.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s),
                        Err(e) => tracing::warn!("starting a spare shim: {e}"),
                    }
                }
                me.filling.store(false, Ordering::SeqCst);
            });
        if spawned.is_err() {
            self.filling.store(false, Ordering::SeqCst);
        }
    }

    fn spawn(&self) -> std::io::Result<Spare> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(&self.shim)
            .arg("spare")
            .arg("--state")
            .arg(&self.state)
            .arg("--title")
            .arg(" ".repeat(TITLE_ROOM))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, as every shim: signals meant for
            // molded do not reach it.
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("a piped stdin");
        Ok(Spare { child, stdin })
    }
}
