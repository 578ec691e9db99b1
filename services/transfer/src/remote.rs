//! The content store reached through content.v1, images.v1 and leases.v1: what
//! the transfer service uses when it runs in a process of its own
//! (`molded --service transfer --remote content=ADDR`).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use molde_api::client::{namespaced, read_blob, request, write_blob};
use molde_api::containerd::services::content::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse, content_client::ContentClient,
};
use molde_api::containerd::services::images::v1::{
    CreateImageRequest, GetImageRequest, Image, UpdateImageRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, Resource, leases_client::LeasesClient,
};
use molde_api::containerd::types::Descriptor as ApiDescriptor;
use molde_common::errdefs::{Error, Result};
use molde_common::store::{BlobInfo, BlobWriter, ByteStream, ContentStore, Held, ImageTarget};
use molde_common::{Algorithm, Digest, Hasher};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// The content service of another process.
#[derive(Clone)]
pub struct RemoteStore {
    content: Channel,
}

impl RemoteStore {
    pub fn new(content: Channel) -> Self {
        Self { content }
    }

    fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.content.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    async fn add_to_lease(&self, ns: &str, lease: &str, digest: &str) -> Result<()> {
        LeasesClient::new(self.content.clone())
            .add_resource(namespaced(
                ns,
                AddResourceRequest {
                    id: lease.to_string(),
                    resource: Some(Resource {
                        id: digest.to_string(),
                        r#type: "content".into(),
                    }),
                },
            ))
            .await
            .map_err(Error::upstream(format!("holding {digest} under lease {lease}")))?;
        Ok(())
    }
}

fn missing_is_none<T>(r: std::result::Result<T, tonic::Status>, what: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(Error::upstream(what)(s)),
    }
}

#[tonic::async_trait]
impl ContentStore for RemoteStore {
    async fn info(&self, ns: &str, digest: &str) -> Result<Option<BlobInfo>> {
        let r = self
            .content()
            .info(namespaced(
                ns,
                InfoRequest {
                    digest: digest.into(),
                },
            ))
            .await;
        Ok(missing_is_none(r, &format!("content {digest}"))?.map(|r| {
            let info = r.into_inner().info.unwrap_or_default();
            BlobInfo {
                size: info.size,
                labels: info.labels,
            }
        }))
    }

    async fn read(&self, ns: &str, digest: &str, max: usize) -> Result<Vec<u8>> {
        Ok(read_blob(&self.content, ns, digest, max).await?)
    }

    async fn read_stream(&self, ns: &str, digest: &str) -> Result<ByteStream> {
        let s = self
            .content()
            .read(namespaced(
                ns,
                ReadContentRequest {
                    digest: digest.into(),
                    offset: 0,
                    size: 0,
                },
            ))
            .await
            .map_err(Error::upstream(format!("reading {digest}")))?
            .into_inner();
        let what = digest.to_string();
        Ok(Box::pin(s.map(move |m| {
            m.map(|m| m.data)
                .map_err(Error::upstream(format!("reading {what}")))
        })))
    }

    async fn hold(&self, ns: &str, lease: &str, digest: &Digest, _size: i64) -> Result<Option<Held>> {
        let d = digest.to_string();
        if self.info(ns, &d).await?.is_none() {
            return Ok(None);
        }
        self.add_to_lease(ns, lease, &d).await?;
        Ok(Some(Held::Present))
    }

    async fn put(&self, ns: &str, lease: &str, digest: &Digest, data: Bytes) -> Result<()> {
        let d = digest.to_string();
        write_blob(&self.content, ns, Some(lease), &d, data, HashMap::new())
            .await
            .map_err(Error::upstream(format!("storing {d}")))?;
        // A blob the namespace had is held by the lease too.
        self.add_to_lease(ns, lease, &d).await
    }

    async fn writer(
        &self,
        ns: &str,
        lease: &str,
        reference: &str,
        size: i64,
        expected: Option<&Digest>,
    ) -> Result<Box<dyn BlobWriter>> {
        let (tx, rx) = mpsc::channel(4);
        let stat = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.to_string(),
            total: size,
            expected: expected.map(Digest::to_string).unwrap_or_default(),
            ..Default::default()
        };
        let _ = tx.send(stat).await;
        let opened = self
            .content()
            .write(request(ns, Some(lease), ReceiverStream::new(rx)))
            .await;
        let writer = |state| RemoteWriter {
            store: self.clone(),
            ns: ns.to_string(),
            lease: lease.to_string(),
            reference: reference.to_string(),
            size,
            expected: expected.cloned(),
            state,
            offset: 0,
            hasher: Algorithm::Sha256.hasher(),
        };
        let mut resp = match opened {
            Ok(r) => r.into_inner(),
            // The namespace has it: nothing to write.
            Err(s) if s.code() == Code::AlreadyExists && expected.is_some() => {
                return Ok(Box::new(writer(State::Present)));
            }
            Err(s) => return Err(Error::upstream(format!("opening ingest {reference}"))(s)),
        };
        let first = match resp.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Err(Error::Unavailable(format!(
                    "ingest {reference}: the stream closed"
                )));
            }
            Err(s) if s.code() == Code::AlreadyExists && expected.is_some() => {
                return Ok(Box::new(writer(State::Present)));
            }
            Err(s) => return Err(Error::upstream(format!("opening ingest {reference}"))(s)),
        };
        let mut w = writer(State::Open {
            tx,
            resp: Box::new(resp),
        });
        w.offset = first.offset.max(0) as u64;
        if w.offset > 0 && expected.is_none() {
            // The digest of what an earlier writer wrote is unknown here: start over.
            w.reset().await?;
        }
        Ok(Box::new(w))
    }

    async fn set_labels(&self, ns: &str, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(namespaced(
                ns,
                UpdateRequest {
                    info: Some(Info {
                        digest: digest.into(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                },
            ))
            .await
            .map_err(Error::upstream(format!("labelling {digest}")))?;
        Ok(())
    }

    async fn image(&self, ns: &str, name: &str) -> Result<Option<ImageTarget>> {
        let r = ImagesClient::new(self.content.clone())
            .get(namespaced(ns, GetImageRequest { name: name.into() }))
            .await;
        Ok(missing_is_none(r, &format!("image {name}"))?.map(|r| {
            let t = r.into_inner().image.and_then(|i| i.target).unwrap_or_default();
            ImageTarget {
                media_type: t.media_type,
                digest: t.digest,
                size: t.size,
            }
        }))
    }

    async fn put_image(&self, ns: &str, name: &str, target: ImageTarget) -> Result<()> {
        let image = Image {
            name: name.to_string(),
            target: Some(ApiDescriptor {
                media_type: target.media_type,
                digest: target.digest,
                size: target.size,
                annotations: Default::default(),
            }),
            ..Default::default()
        };
        let mut images = ImagesClient::new(self.content.clone());
        let failed = |s| Error::upstream(format!("recording image {name}"))(s);
        // Update, or create; a concurrent pull may create it in between.
        for _ in 0..3 {
            let updated = images
                .update(namespaced(
                    ns,
                    UpdateImageRequest {
                        image: Some(image.clone()),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".into()],
                        }),
                    },
                ))
                .await;
            match updated {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(failed(s)),
            }
            match images
                .create(namespaced(
                    ns,
                    CreateImageRequest {
                        image: Some(image.clone()),
                    },
                ))
                .await
            {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::AlreadyExists => continue,
                Err(s) => return Err(failed(s)),
            }
        }
        Err(Error::Unavailable(format!(
            "recording image {name}: it kept changing under concurrent writers"
        )))
    }

    async fn create_lease(&self, ns: &str, prefix: &str, ttl: Duration) -> Result<String> {
        let expire = (chrono::Utc::now() + ttl).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        LeasesClient::new(self.content.clone())
            .create(namespaced(
                ns,
                CreateRequest {
                    id: id.clone(),
                    labels: [(molde_common::labels::GC_EXPIRE.to_string(), expire)].into(),
                },
            ))
            .await
            .map_err(Error::upstream("creating a lease"))?;
        Ok(id)
    }

    async fn delete_lease(&self, ns: &str, id: &str) -> Result<()> {
        LeasesClient::new(self.content.clone())
            .delete(namespaced(
                ns,
                DeleteRequest {
                    id: id.to_string(),
                    sync: false,
                },
            ))
            .await
            .map_err(Error::upstream(format!("deleting lease {id}")))?;
        Ok(())
    }
}

enum State {
    Open {
        tx: mpsc::Sender<WriteContentRequest>,
        resp: Box<tonic::Streaming<WriteContentResponse>>,
    },
    /// The namespace had the blob when the writer opened.
    Present,
}

/// An ingest of the remote store: one Write stream, a message per chunk.
struct RemoteWriter {
    store: RemoteStore,
    ns: String,
    lease: String,
    reference: String,
    size: i64,
    expected: Option<Digest>,
    state: State,
    offset: u64,
    /// What was written, for a commit without an expected digest that finds
    /// the blob already there.
    hasher: Hasher,
}

impl RemoteWriter {
    async fn send(&mut self, msg: WriteContentRequest) -> Result<WriteContentResponse> {
        let State::Open { tx, resp } = &mut self.state else {
            return Ok(WriteContentResponse::default());
        };
        let closed = || Error::Unavailable("the content service closed the write stream".into());
        tx.send(msg).await.map_err(|_| closed())?;
        match resp.message().await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(closed()),
            Err(s) => Err(Error::upstream(format!("ingest {}", self.reference))(s)),
        }
    }
}

#[tonic::async_trait]
impl BlobWriter for RemoteWriter {
    fn offset(&self) -> u64 {
        match self.state {
            State::Present => self.size.max(0) as u64,
            State::Open { .. } => self.offset,
        }
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        let n = data.len() as u64;
        self.hasher.update(&data);
        let m = self
            .send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: self.offset as i64,
                data,
                ..Default::default()
            })
            .await?;
        self.offset = if matches!(self.state, State::Open { .. }) {
            m.offset.max(0) as u64
        } else {
            self.offset + n
        };
        Ok(())
    }

    async fn reset(&mut self) -> Result<()> {
        self.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            offset: 0,
            ..Default::default()
        })
        .await?;
        self.offset = 0;
        self.hasher = Algorithm::Sha256.hasher();
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<Digest> {
        let digest = match &self.expected {
            Some(d) => d.clone(),
            None => self.hasher.current(),
        };
        let r = self
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset: self.offset as i64,
                total: self.size,
                expected: self.expected.as_ref().map(Digest::to_string).unwrap_or_default(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(m) if !m.digest.is_empty() => {
                Ok(Digest::parse_field(&m.digest, "committed digest").map_err(Error::from)?)
            }
            Ok(_) => {
                self.store
                    .add_to_lease(&self.ns, &self.lease, &digest.to_string())
                    .await?;
                Ok(digest)
            }
            Err(e) if e.is_already_exists() => {
                self.store
                    .add_to_lease(&self.ns, &self.lease, &digest.to_string())
                    .await?;
                Ok(digest)
            }
            Err(Error::Remote {
                code: Code::FailedPrecondition,
                message,
            }) => Err(Error::FailedPrecondition(message)),
            Err(e) => Err(e),
        }
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let reference = self.reference.clone();
        let (store, ns) = (self.store.clone(), self.ns.clone());
        // Closing the stream ends the session; its writer lock goes a moment later.
        drop(self);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = store
                .content()
                .abort(namespaced(
                    &ns,
                    molde_api::containerd::services::content::v1::AbortRequest {
                        r#ref: reference.clone(),
                    },
                ))
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == Code::Unavailable && attempt < 20 => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => return Err(Error::upstream(format!("aborting ingest {reference}"))(s)),
            }
        }
    }
}
