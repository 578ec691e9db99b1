//! What the runtime needs of an image: its config's process defaults and its
//! top chain ID (the rootfs parent), through the shared image model
//! (`molde_common::image::resolve`, for the host's platform).

use molde_common::errdefs::Error;
use tonic::transport::Channel;

/// The process defaults of an image config (Env, Entrypoint, Cmd, WorkingDir, User).
pub use oci_spec::image::Config as ProcessConfig;

pub struct Image {
    pub process: ProcessConfig,
    /// docker's Healthcheck, which the OCI config type does not keep.
    pub health: Option<molde_api::molde::services::runtime::v1::HealthConfig>,
    /// Chain ID of the top layer: the parent of the container's rootfs.
    pub top: String,
}

/// Resolves `name` to its config and top chain ID.
pub async fn resolve(ch: &Channel, ns: &str, name: &str) -> Result<Image, Error> {
    let r = molde_common::image::resolve(ch, ns, name, &molde_common::image::host_platform()).await?;
    Ok(Image {
        health: crate::run::image_health(&r.config_raw),
        process: r.config.config().clone().unwrap_or_default(),
        top: r.top_chain_id().unwrap_or_default().to_string(),
    })
}
