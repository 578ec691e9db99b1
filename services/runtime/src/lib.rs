//! molde's runtime service.
//!
//! `containers.rs` serves containerd's containers.v1: container records (spec,
//! image, runtime, rootfs snapshot, labels, extensions) kept in the metadata
//! store. Tasks and the per-container shims come next.

pub mod containers;

use std::sync::Arc;

use molde_api::containerd::services::containers::v1::containers_server::ContainersServer;
use molde_meta::Store;

/// The runtime service's gRPC servers.
pub struct Servers {
    pub containers: ContainersServer<containers::ContainersService>,
}

pub fn servers(store: Arc<dyn Store>) -> Servers {
    Servers {
        containers: ContainersServer::new(containers::ContainersService { store })
            .max_decoding_message_size(16 << 20),
    }
}
