//! molde's snapshotter service: layered filesystems and the layers between them.
//!
//! `snapshotter.rs` is the core type, `Snapshotter`: records in the metadata
//! store and directories laid out by `store.rs`, for two snapshotters,
//! overlayfs (default) and native (full copies); `snapshots.rs` serves
//! containerd's snapshots.v1 on it and `gc.rs` collects what nothing holds. `diff.rs` serves diff.v1:
//! Apply extracts a layer (`apply.rs`, confined by `fsutil.rs`) straight into
//! the target snapshot's directory; Diff (`compare.rs`) turns the difference
//! between two mounts into a layer in the content store. Layer blobs are read
//! through `content.rs`.

pub mod apply;
mod compare;
pub mod content;
pub mod diff;
pub mod error;
mod fsutil;
pub mod gc;
pub mod snapshots;
pub mod snapshotter;
pub mod store;

use std::sync::Arc;

use molde_api::containerd::services::{
    diff::v1::diff_server::DiffServer, snapshots::v1::snapshots_server::SnapshotsServer,
};

pub use content::ContentAccess;
pub use snapshotter::Snapshotter;

pub struct Servers {
    pub snapshots: SnapshotsServer<snapshots::SnapshotsService>,
    pub diff: DiffServer<diff::DiffService>,
}

pub fn servers(s: Arc<Snapshotter>, content: ContentAccess) -> Servers {
    Servers {
        snapshots: SnapshotsServer::new(snapshots::SnapshotsService {
            s: s.clone(),
            content: content.channel(),
        }),
        diff: DiffServer::new(diff::DiffService::new(s, content)),
    }
}
