//! molde's transfer service (molde.services.transfer.v1): the daemon pulls,
//! pushes, saves and loads images itself and streams progress, so clients stay
//! thin and a pull survives its client.
//!
//! It reaches the content store only through `molde_common::store::ContentStore`
//! (molde-content's own state in one process, content.v1/images.v1/leases.v1
//! from a process of its own: `remote.rs`), and the snapshotter through
//! snapshots.v1 and diff.v1.
//!
//! `registry.rs` talks to registries, `media.rs` reads what they send,
//! `fetch.rs` downloads blobs, `pull.rs` is the pull flow, `push.rs` the push,
//! `archive.rs` save and load.

pub mod archive;
pub mod estargz;
pub mod fetch;
pub mod media;
pub mod pull;
pub mod push;
pub mod registry;
pub mod remote;

use std::sync::Arc;

use molde_api::molde::services::transfer::v1 as api;
use molde_common::RequestContext;
use molde_common::errdefs::Error;
use molde_common::store::ContentStore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

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
    /// events.v1, where pulls and pushes are told.
    events: Option<molde_common::events::Publisher>,
}

impl TransferService {
    /// `store` is the content store images go into; `snapshotter` reaches the
    /// snapshots and diff services pulls unpack into.
    /// Layers are asked of the cluster's other nodes before the registry;
    /// with `resolve`, every pull resolves a tag in the cluster when the
    /// registry cannot be reached (as a request's `cluster_resolve` asks).
    /// Publishes /images/pull and /images/push events through `events`.
    pub fn with_events(mut self, events: molde_common::events::Publisher) -> Self {
        self.events = Some(events);
        self
    }

    pub fn with_peers(self, peers: Arc<dyn molde_common::store::PeerBlobs>, resolve: bool) -> Self {
        let mut puller = Arc::try_unwrap(self.puller).unwrap_or_else(|_| unreachable!("not shared yet"));
        puller.peers = Some(peers);
        puller.cluster_resolve = resolve;
        Self {
            puller: Arc::new(puller),
            events: self.events,
        }
    }

    pub fn new(store: Arc<dyn ContentStore>, snapshotter: Channel, config: TransferConfig) -> Self {
        Self {
            puller: Arc::new(pull::Puller {
                store,
                snapshotter,
                hosts: registry::Hosts {
                    dir: config.hosts_dir,
                },
                inflight: Default::default(),
                parallel: config.parallel,
                peers: None,
                cluster_resolve: false,
                clients: Default::default(),
            }),
            events: None,
        }
    }
}

type ProgressStream = ReceiverStream<std::result::Result<api::Progress, Status>>;

/// A blocking reader over the data chunks of an Import stream.
struct ImportReader {
    rx: std::sync::mpsc::Receiver<std::result::Result<bytes::Bytes, Status>>,
    cur: bytes::Bytes,
}

impl std::io::Read for ImportReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(Ok(b)) => self.cur = b,
                Ok(Err(s)) => return Err(std::io::Error::other(s.message().to_string())),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

#[tonic::async_trait]
impl api::transfer_server::Transfer for TransferService {
    type ExportStream = ReceiverStream<std::result::Result<api::ArchiveChunk, Status>>;

    async fn export(
        &self,
        req: Request<api::ExportRequest>,
    ) -> std::result::Result<Response<Self::ExportStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Error::from)?.namespace;
        let names = req.into_inner().names;
        if names.is_empty() {
            return Err(Status::invalid_argument("export needs at least one image name"));
        }
        let (tx, rx) = mpsc::channel(8);
        let puller = self.puller.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let mut w =
                molde_common::chunks::ChunkSender::new(tx.clone(), 1 << 20, "the client went away", |data| {
                    Ok(api::ArchiveChunk { data: data.into() })
                });
            let r = puller
                .export(&handle, &ns, &names, &mut w)
                .and_then(|_| std::io::Write::flush(&mut w).map_err(Error::io("sending the archive")));
            if let Err(e) = r {
                let st: Status = e.into();
                let _ = tx.blocking_send(Err(Status::new(
                    st.code(),
                    format!("saving {}: {}", names.join(", "), st.message()),
                )));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn import(
        &self,
        req: Request<tonic::Streaming<api::ImportRequest>>,
    ) -> std::result::Result<Response<api::ImportResponse>, Status> {
        let ns = RequestContext::of(&req).map_err(Error::from)?.namespace;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.unwrap_or_default();
        let unpack = !first.skip_unpack;
        let snapshotter = if first.snapshotter.is_empty() {
            "overlayfs".to_string()
        } else {
            first.snapshotter.clone()
        };
        let (dtx, drx) = std::sync::mpsc::sync_channel(8);
        let _ = dtx.send(Ok(first.data));
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if dtx.send(Ok(m.data)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = dtx.send(Err(s));
                        return;
                    }
                }
            }
        });
        let (ptx, mut prx) = mpsc::channel(64);
        tokio::spawn(async move { while prx.recv().await.is_some() {} });
        let reader = Box::new(ImportReader {
            rx: drx,
            cur: bytes::Bytes::new(),
        });
        let names = self
            .puller
            .import(&ns, reader, unpack, &snapshotter, &ptx)
            .await
            .map_err(|e| {
                let st: Status = e.into();
                Status::new(st.code(), format!("loading the archive: {}", st.message()))
            })?;
        Ok(Response::new(api::ImportResponse { names }))
    }

    async fn login(
        &self,
        req: Request<api::LoginRequest>,
    ) -> std::result::Result<Response<api::LoginResponse>, Status> {
        let r = req.into_inner();
        if r.registry.is_empty() {
            return Err(Status::invalid_argument("login needs a registry"));
        }
        self.puller.login(&r.registry, r.auth.as_ref()).await?;
        Ok(Response::new(api::LoginResponse {}))
    }

    type PullStream = ProgressStream;

    async fn pull(
        &self,
        req: Request<api::PullRequest>,
    ) -> std::result::Result<Response<Self::PullStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Error::from)?.namespace;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("pull needs a reference"));
        }
        let (tx, rx) = mpsc::channel(64);
        let puller = self.puller.clone();
        let events = self.events.clone();
        let span = tracing::info_span!(target: molde_api::trace::TARGET, "pull", reference = %r.reference, namespace = %ns);
        tokio::spawn(async move {
            let what = r.reference.clone();
            let started = std::time::Instant::now();
            let result = puller.pull(&ns, r, &tx).await;
            if let (Ok(()), Some(ev)) = (&result, &events) {
                publish_transfer(ev, &ns, "/images/pull", &what);
            }
            if let Err(e) = result {
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
        }
        .instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type PushStream = ProgressStream;

    async fn push(
        &self,
        req: Request<api::PushRequest>,
    ) -> std::result::Result<Response<Self::PushStream>, Status> {
        let ns = RequestContext::of(&req).map_err(Error::from)?.namespace;
        let r = req.into_inner();
        if r.reference.is_empty() {
            return Err(Status::invalid_argument("push needs an image name"));
        }
        let (tx, rx) = mpsc::channel(64);
        let puller = self.puller.clone();
        let events = self.events.clone();
        let span = tracing::info_span!(target: molde_api::trace::TARGET, "push", reference = %r.reference, namespace = %ns);
        tokio::spawn(
            async move {
                let what = if r.destination.is_empty() {
                    r.reference.clone()
                } else {
                    r.destination.clone()
                };
                let result = puller.push(&ns, r, &tx).await;
                if let (Ok(()), Some(ev)) = (&result, &events) {
                    publish_transfer(ev, &ns, "/images/push", &what);
                }
                if let Err(e) = result {
                    tracing::warn!(namespace = %ns, reference = %what, error = %e, "push failed");
                    let st: Status = e.into();
                    let _ = tx
                        .send(Err(Status::new(
                            st.code(),
                            format!("pushing {what}: {}", st.message()),
                        )))
                        .await;
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// An /images/pull or /images/push event: the image's name.
fn publish_transfer(ev: &molde_common::events::Publisher, ns: &str, topic: &str, name: &str) {
    ev.publish_as(
        ns,
        topic,
        "molde.services.transfer.v1.ImageTransferred",
        api::ImageTransferred {
            name: name.to_string(),
        },
    );
}
