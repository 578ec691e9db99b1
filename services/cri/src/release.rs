//! When a stopped pod's network is released.
//!
//! StopPodSandbox leaves the release (CNI DEL, then the namespace's pin) to
//! the background (see `sandbox.rs`). A release is tens of milliseconds of
//! plugin processes, IPAM and iptables, and it shares the plugins' locks
//! (host-local's, the kernel's link lock) with the ADD of a pod being made:
//! run at once, it slows the next RunPodSandbox by most of its own length.
//! So a release waits for a quiet moment — no RunPodSandbox under way nor
//! ended within `QUIET` — but never longer than `MAX_WAIT` after its stop;
//! releases run one at a time, their plugins under SCHED_IDLE; and a pod
//! with host ports, which needs every stopped pod's port rules gone, has
//! them all run at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long no pod may have been made before a release runs.
pub const QUIET: Duration = Duration::from_millis(500);
/// The longest a release waits for quiet after its pod stopped.
pub const MAX_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(10);

pub struct Releases {
    /// Releases owed (waiting or running).
    owed: tokio::sync::watch::Sender<usize>,
    /// RunPodSandbox calls under way, and when the last one ended.
    making: AtomicUsize,
    last_made: Mutex<Instant>,
    /// Pods with host ports waiting for every release.
    hurry: AtomicUsize,
    one_at_a_time: tokio::sync::Semaphore,
}

impl Default for Releases {
    fn default() -> Self {
        Releases {
            owed: tokio::sync::watch::Sender::new(0),
            making: AtomicUsize::new(0),
            last_made: Mutex::new(Instant::now()),
            hurry: AtomicUsize::new(0),
            one_at_a_time: tokio::sync::Semaphore::new(1),
        }
    }
}

/// A RunPodSandbox under way, while it lives.
pub struct Making<'a>(&'a Releases);

impl Drop for Making<'_> {
    fn drop(&mut self) {
        *self.0.last_made.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.making.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A release's turn: held while it runs.
pub struct Turn<'a> {
    releases: &'a Releases,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.releases.owed.send_modify(|n| *n -= 1);
    }
}

impl Releases {
    /// Marks a RunPodSandbox under way.
    pub fn making(&self) -> Making<'_> {
        self.making.fetch_add(1, Ordering::SeqCst);
        Making(self)
    }

    /// Counts one release owed; call `turn` to run it.
    pub fn owe(&self) {
        self.owed.send_modify(|n| *n += 1);
    }

    /// Waits for a quiet moment (or `MAX_WAIT` after `stopped`, or a pod
    /// in a hurry), then for the releases before it.
    pub async fn turn(&self, stopped: Instant) -> Turn<'_> {
        while stopped.elapsed() < MAX_WAIT && self.hurry.load(Ordering::SeqCst) == 0 && !self.quiet() {
            tokio::time::sleep(POLL).await;
        }
        let permit = self.one_at_a_time.acquire().await.expect("never closed");
        Turn {
            releases: self,
            _permit: permit,
        }
    }

    fn quiet(&self) -> bool {
        self.making.load(Ordering::SeqCst) == 0
            && self.last_made.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= QUIET
    }

    /// Has every owed release run now, and waits until they have.
    pub async fn all_done(&self) {
        self.hurry.fetch_add(1, Ordering::SeqCst);
        let mut rx = self.owed.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
        self.hurry.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_release_waits_for_quiet_but_not_past_its_bound() {
        let r = Releases::default();
        // A pod being made: the release waits, at most MAX_WAIT.
        let making = r.making();
        r.owe();
        let stopped = Instant::now();
        let begun = Instant::now();
        drop(r.turn(stopped).await);
        assert!(begun.elapsed() >= MAX_WAIT - POLL, "{:?}", begun.elapsed());
        drop(making);
        // Quiet once QUIET has passed since the last pod was made.
        r.owe();
        let begun = Instant::now();
        drop(r.turn(Instant::now()).await);
        assert!(begun.elapsed() < MAX_WAIT);
        assert_eq!(*r.owed.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pod_in_a_hurry_has_the_releases_run_now() {
        let r = std::sync::Arc::new(Releases::default());
        let _making = r.making();
        r.owe();
        let r2 = r.clone();
        let release = tokio::spawn(async move {
            let at = Instant::now();
            drop(r2.turn(Instant::now()).await);
            at.elapsed()
        });
        r.all_done().await;
        assert!(release.await.unwrap() < MAX_WAIT);
    }
}
