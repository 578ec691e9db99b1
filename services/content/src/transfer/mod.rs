//! molde.services.transfer.v1: the daemon pulls (and pushes) images itself and
//! streams progress, so clients stay thin and a pull survives its client.
//!
//! `registry.rs` talks to registries, `media.rs` reads what they send,
//! `fetch.rs` stores blobs, `pull.rs` is the pull flow.

pub mod fetch;
pub mod media;
pub mod pull;
pub mod push;
pub mod registry;

use std::sync::Arc;

use molde_api::molde::services::transfer::v1 as api;
use molde_common::RequestContext;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::error::ContentError;
use crate::state::Shared;

/// Settings of the transfer service.
#[derive(Debug, Clone)]
pub struct TransferConfig {
    /// Per-registry settings (`<dir>/<host>/hosts.toml`).
    pub hosts_dir: std::path::PathBuf,
    /// Blobs fetched at once per pull.
    pub parallel: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            hosts_dir: "/etc/molde/certs.d".into(),
            parallel: 3,
        }
    }
}

#[derive(Clone)]
pub struct TransferService {
    puller: Arc<pull::Puller>,
}

impl TransferService {
    /// `snapshotter` reaches the snapshots and diff services pulls unpack into.
    pub fn new(shared: Arc<Shared>, snapshotter: Channel, config: TransferConfig) -> Self {
        Self {
            puller: Arc::new(pull::Puller {
                shared,
                snapshotter,
                hosts: registry::Hosts {
                    dir: config.hosts_dir,
                },
                inflight: Default::default(),
                parallel: config.parallel,
                clients: Default::default(),
            }),
        }
    }
}

type ProgressStream = ReceiverStream<std::result::Result<api::Progress, Status>>;

#[tonic::async_trait]
impl api::transfer_server::Transfer for TransferService {
    type PullStream = ProgressStream;

    async fn pull(
        &self,
        req: Request<api::PullRequest>,
    ) -> std::result::Result<Response<Self::PullStream>, Status> {
        let ns = RequestContext::of(&req).map_err(ContentError::from)?.namespace;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("pull needs a reference"));
        }
        let (tx, rx) = mpsc::channel(64);
        let puller = self.puller.clone();
        tokio::spawn(async move {
            let what = r.reference.clone();
            let started = std::time::Instant::now();
            if let Err(e) = puller.pull(&ns, r, &tx).await {
                tracing::warn!(namespace = %ns, reference = %what, error = %e, "pull failed");
                let st: Status = e.into();
                let _ = tx
                    .send(Err(Status::new(
                        st.code(),
                        format!("pulling {what}: {}", st.message()),
                    )))
                    .await;
            } else {
                tracing::debug!(reference = %what, millis = started.elapsed().as_millis() as u64, "pull finished");
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PushStream = ProgressStream;

    async fn push(
        &self,
        req: Request<api::PushRequest>,
    ) -> std::result::Result<Response<Self::PushStream>, Status> {
        let ns = RequestContext::of(&req).map_err(ContentError::from)?.namespace;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("push needs an image name"));
        }
        let (tx, rx) = mpsc::channel(64);
        let puller = self.puller.clone();
        tokio::spawn(async move {
            let what = if r.destination.is_empty() {
                r.reference.clone()
            } else {
                r.destination.clone()
            };
            if let Err(e) = puller.push(&ns, r, &tx).await {
                tracing::warn!(namespace = %ns, reference = %what, error = %e, "push failed");
                let st: Status = e.into();
                let _ = tx
                    .send(Err(Status::new(
                        st.code(),
                        format!("pushing {what}: {}", st.message()),
                    )))
                    .await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
