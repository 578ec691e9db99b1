//! What molde's runtime, builder and shim share, written once and free of
//! tokio: today, mounting the mounts a snapshotter describes.

pub mod mount;
