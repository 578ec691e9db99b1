//! What the services count for molded's metrics endpoint (`[metrics]`):
//! plain atomic counters, so a service counts without knowing whether
//! anything reads them; molded's `metrics.rs` exports them under
//! Prometheus names. Each process counts what it did itself.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter that only goes up.
pub struct Count(AtomicU64);

impl Count {
    pub const fn new() -> Count {
        Count(AtomicU64::new(0))
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Count {
    fn default() -> Self {
        Count::new()
    }
}

/// Images pulled, and the time their pulls took (microseconds).
pub static PULLS: Count = Count::new();
pub static PULL_MICROS: Count = Count::new();
/// Blobs and bytes a pull fetched from the registry, and from cluster peers.
pub static REGISTRY_BLOBS: Count = Count::new();
pub static REGISTRY_BYTES: Count = Count::new();
pub static PEER_BLOBS: Count = Count::new();
pub static PEER_BYTES: Count = Count::new();
/// Images pushed, and the time their pushes took (microseconds).
pub static PUSHES: Count = Count::new();
pub static PUSH_MICROS: Count = Count::new();
/// Blobs a push uploaded (and their bytes), had the registry mount from
/// another repository, or found there already.
pub static PUSH_BLOBS_UPLOADED: Count = Count::new();
pub static PUSH_BYTES: Count = Count::new();
pub static PUSH_BLOBS_MOUNTED: Count = Count::new();
pub static PUSH_BLOBS_PRESENT: Count = Count::new();
/// Cluster download claims: taken by this node, or left to the peer that
/// held one.
pub static CLAIMS_TAKEN: Count = Count::new();
pub static CLAIMS_DEFERRED: Count = Count::new();
/// Layers unpacked into snapshots, and the time it took (microseconds).
pub static LAYERS_UNPACKED: Count = Count::new();
pub static UNPACK_MICROS: Count = Count::new();
/// Build steps run, and build steps taken from the cache.
pub static BUILD_STEPS_RUN: Count = Count::new();
pub static BUILD_STEPS_CACHED: Count = Count::new();
/// Garbage collections run, and the blobs they removed.
pub static GC_RUNS: Count = Count::new();
pub static GC_BLOBS_REMOVED: Count = Count::new();

#[cfg(test)]
mod tests {
    #[test]
    fn counts_add_up() {
        let c = super::Count::new();
        c.add(2);
        c.add(3);
        assert_eq!(c.get(), 5);
    }
}
