//! One accept loop for molded's TCP listeners (the CRI streaming server,
//! the cluster's peer listener): a bounded number of connections at once,
//! and no spinning when the process runs out of descriptors.
//!
//! At the limit the loop stops accepting (new connections wait in the
//! kernel's backlog) until a connection ends. When accept fails for want of
//! descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) the loop waits,
//! 5 ms doubling to 1 s, instead of retrying at once: a connection the
//! kernel has queued keeps accept ready, so retrying at once spins a core.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether an accept error means "out of descriptors or memory": worth a
/// pause, not a retry at once.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accepts on `listener` for as long as the task runs, `limit` connections
/// at most at once, each handed to `handle` on a task of its own. `what`
/// names the listener in the log.
pub async fn serve<H, F>(listener: TcpListener, limit: usize, what: &'static str, handle: H)
where
    H: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limit));
    let mut backoff = FIRST_BACKOFF;
    let mut warned_full = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        listener = what,
                        limit,
                        "connection limit reached; new connections wait"
                    );
                    warned_full = true;
                }
                match slots.clone().acquire_owned().await {
                    Ok(s) => s,
                    Err(_) => return,
                }
            }
        };
        match listener.accept().await {
            Ok((conn, from)) => {
                backoff = FIRST_BACKOFF;
                warned_full = false;
                let work = handle(conn, from);
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            Err(e) if exhausted(&e) => {
                if backoff == FIRST_BACKOFF {
                    tracing::warn!(listener = what, error = %e, "cannot accept connections; waiting");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // A connection that went away before it was accepted, and the like.
            Err(e) => {
                tracing::debug!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(FIRST_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn no_more_than_the_limit_are_served_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve(listener, 2, "test", move |mut conn, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                // Held until the client closes.
                let mut b = [0u8; 1];
                let _ = conn.read(&mut b).await;
            }
        }));
        let mut a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _c = TcpStream::connect(addr).await.unwrap();
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        // The third waits in the backlog...
        assert!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err()
        );
        // ...until one of the first two ends.
        a.write_all(b"x").await.unwrap();
        drop(a);
        rx.recv().await.unwrap();
    }

    #[test]
    fn descriptor_exhaustion_is_told_apart() {
        assert!(exhausted(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(exhausted(&std::io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!exhausted(&std::io::Error::from_raw_os_error(libc::ECONNABORTED)));
    }
}
