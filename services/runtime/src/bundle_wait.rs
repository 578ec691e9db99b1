//! Waiting for what a shim records in its bundle (`created.pid`,
//! `init.pid`, `error`): inotify on the bundle's directory wakes the
//! waiter when a file lands there, so a create or a start costs no polling
//! interval. The shim writes each record by a rename, which inotify reports
//! as IN_MOVED_TO.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::fs::inotify;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// How long a wait sleeps without an event before it looks again anyway
/// (a shim that died records nothing; inotify itself could fail).
const RECHECK: Duration = Duration::from_millis(100);
/// The polling interval when inotify cannot be had.
const POLL: Duration = Duration::from_millis(2);

struct Watch(Option<AsyncFd<OwnedFd>>);

impl Watch {
    fn new(dir: &Path) -> std::io::Result<Watch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::CLOSE_WRITE | inotify::WatchFlags::CREATE,
        )?;
        // SAFETY: the OwnedFd is open and stays the same descriptor for as
        // long as the AsyncFd holds it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::other)?;
        Ok(Watch(Some(fd)))
    }

    /// Returns after something landed in the directory (the events read
    /// and dropped: the caller looks at the files themselves).
    async fn changed(&self) {
        let Some(fd) = &self.0 else { return };
        let Ok(mut ready) = fd.readable().await else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 1024];
        while let Ok(n) = rustix::io::read(fd.get_ref(), &mut buf) {
            if n == 0 {
                break;
            }
        }
        ready.clear_ready();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closing an inotify instance waits for the kernel's fsnotify grace
        // period (10-20 ms here): the waiter does not wait for it.
        if let Some(fd) = self.0.take().map(AsyncFd::into_inner) {
            let _ = std::thread::Builder::new()
                .name("inotify-close".into())
                .stack_size(64 << 10)
                .spawn(move || drop(fd));
        }
    }
}

/// Waits for the pid `record` reads from the bundle (`created.pid`,
/// `init.pid`), or the shim's `error`: Ok(pid), Err(its message), or None
/// once `limit` has passed.
pub(crate) async fn pid_or_error(
    b: &molde_bundle::Bundle,
    limit: Duration,
    record: impl Fn(&molde_bundle::Bundle) -> Option<i32>,
) -> Option<Result<i32, String>> {
    until(b.dir(), limit, || {
        record(b).map(Ok).or_else(|| b.error().map(Err))
    })
    .await
}

/// Calls `check` until it gives a value, waking on every file that lands in
/// `dir`; None once `limit` has passed.
pub(crate) async fn until<T>(dir: &Path, limit: Duration, check: impl FnMut() -> Option<T>) -> Option<T> {
    until_with(dir, limit, RECHECK, check).await
}

async fn until_with<T>(
    dir: &Path,
    limit: Duration,
    recheck: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    // Watched before the first look: a record written in between still wakes.
    let watch = Watch::new(dir)
        .inspect_err(|e| tracing::debug!("watching {}: {e}; polling instead", dir.display()))
        .ok();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        match &watch {
            Some(w) => {
                let _ = tokio::time::timeout((deadline - now).min(recheck), w.changed()).await;
            }
            None => tokio::time::sleep((deadline - now).min(POLL)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_record_renamed_into_the_directory_ends_the_wait_before_the_recheck() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let writer = tokio::spawn({
            let dir = dir.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                std::fs::write(dir.join(".tmp"), "42").unwrap();
                std::fs::rename(dir.join(".tmp"), dir.join("init.pid")).unwrap();
            }
        });
        // No recheck within the test's guard: only the directory's event
        // can end this wait.
        let hour = Duration::from_secs(3600);
        let wait = until_with(&dir, hour, hour, || {
            std::fs::read_to_string(dir.join("init.pid")).ok()
        });
        let got = tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the wait did not wake on the record");
        writer.await.unwrap();
        assert_eq!(got.as_deref(), Some("42"));
    }

    #[tokio::test]
    async fn a_record_that_never_comes_ends_the_wait_at_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let got = until(d.path(), Duration::from_millis(250), || None::<()>).await;
        assert!(got.is_none());
    }
}
