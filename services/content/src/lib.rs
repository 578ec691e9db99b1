//! molde's content service.
//!
//! Owns blobs by digest on local disk (`blobs.rs`), resumable ingests through the
//! Write stream (`ingest.rs`), and the metadata that makes content visible per
//! namespace: content labels (`content.rs`), images (`images.rs`), leases
//! (`leases.rs`) and namespaces (`namespaces.rs`). Garbage collection (`gc.rs`)
//! removes what no image, lease or gc label holds.
//!
//! Wire protocol: containerd's content.v1, images.v1, leases.v1 and
//! namespaces.v1, plus molde's gc.v1.

pub mod blobs;
pub mod content;
pub mod error;
pub mod gc;
pub mod images;
mod ingest;
pub mod leases;
pub mod namespaces;
pub mod records;
mod state;
pub mod store;

use std::sync::Arc;

use molde_api::containerd::services::{
    content::v1::content_server::ContentServer, images::v1::images_server::ImagesServer,
    leases::v1::leases_server::LeasesServer, namespaces::v1::namespaces_server::NamespacesServer,
};
use molde_api::molde::services::gc::v1::gc_server::GcServer;

pub use error::ContentError;
pub use state::{ContentConfig, Shared};
pub use store::LocalStore;

/// Largest gRPC message the content service accepts (Write chunks).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The content service's gRPC servers, ready to add to a router.
pub struct Servers {
    pub content: ContentServer<content::ContentService>,
    pub images: ImagesServer<images::ImagesService>,
    pub leases: LeasesServer<leases::LeasesService>,
    pub namespaces: NamespacesServer<namespaces::NamespacesService>,
    pub gc: GcServer<gc::GcService>,
}

/// Builds every server of the content service over one shared state.
pub fn servers(shared: Arc<Shared>) -> Servers {
    Servers {
        content: ContentServer::new(content::ContentService::new(shared.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        images: ImagesServer::new(images::ImagesService::new(shared.clone())),
        leases: LeasesServer::new(leases::LeasesService::new(shared.clone())),
        namespaces: NamespacesServer::new(namespaces::NamespacesService::new(shared.clone())),
        gc: GcServer::new(gc::GcService::new(shared)),
    }
}
