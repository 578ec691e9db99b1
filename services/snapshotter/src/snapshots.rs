//! containerd.services.snapshots.v1.Snapshots for the overlayfs and native
//! snapshotters.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use molde_api::containerd::services::leases::v1::{
    AddResourceRequest, Resource, leases_client::LeasesClient,
};
use molde_api::containerd::services::snapshots::v1 as api;
use molde_common::labels::{self, Labels};
use molde_common::{RequestContext, now_nanos, timestamp};
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::error::{Result, SnapshotError};
use crate::snapshotter::Snapshotter;
use crate::store::{self, Driver, Kind, SnapshotRecord};

fn kind_api(k: Kind) -> api::Kind {
    match k {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    }
}

fn info(name: &str, r: &SnapshotRecord) -> api::Info {
    api::Info {
        name: name.to_string(),
        parent: r.parent.clone(),
        kind: kind_api(r.kind) as i32,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
        labels: r.labels.clone().into_iter().collect(),
    }
}

struct InfoFields<'a>(&'a str, &'a SnapshotRecord);

impl Fields for InfoFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" => Some(self.0.to_string()),
            "parent" => Some(self.1.parent.clone()),
            "kind" => Some(
                match self.1.kind {
                    Kind::View => "view",
                    Kind::Active => "active",
                    Kind::Committed => "committed",
                }
                .into(),
            ),
            "labels" => label_field(&self.1.labels, path),
            _ => None,
        }
    }
}

/// The snapshots.v1 gRPC service.
#[derive(Clone)]
pub struct SnapshotsService {
    pub(crate) s: Arc<Snapshotter>,
    /// Reaches content.v1 and leases.v1, which say what holds snapshots.
    pub(crate) content: tonic::transport::Channel,
}

impl SnapshotsService {
    /// A commit made under a lease (`containerd-lease`) puts the new name in
    /// that lease *before* the snapshot exists, as containerd does: there is
    /// no moment at which a garbage collection could find the committed
    /// snapshot held by nothing.
    async fn lease_first(
        &self,
        ctx: &RequestContext,
        d: Driver,
        name: &str,
    ) -> std::result::Result<(), Status> {
        let Some(lease) = &ctx.lease else {
            return Ok(());
        };
        let req = molde_common::context::namespaced(
            &ctx.namespace,
            AddResourceRequest {
                id: lease.clone(),
                resource: Some(Resource {
                    id: name.to_string(),
                    r#type: format!("snapshots/{}", d.name()),
                }),
            },
        );
        LeasesClient::new(self.content.clone())
            .add_resource(req)
            .await
            .map_err(|e| Status::new(e.code(), format!("lease {lease:?}: {}", e.message())))?;
        Ok(())
    }
}

/// Runs blocking snapshot work (directory creation, copies) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("snapshot task failed: {e}")))?
        .map_err(Status::from)
}

fn ns<T>(req: &Request<T>) -> std::result::Result<String, Status> {
    Ok(RequestContext::of(req).map_err(SnapshotError::from)?.namespace)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl api::snapshots_server::Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<api::PrepareSnapshotRequest>,
    ) -> std::result::Result<Response<api::PrepareSnapshotResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let s = self.s.clone();
        let mounts = blocking(move || {
            s.create(
                &ns,
                d,
                &r.key,
                &r.parent,
                Kind::Active,
                r.labels.into_iter().collect(),
            )
        })
        .await?;
        Ok(Response::new(api::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<api::ViewSnapshotRequest>,
    ) -> std::result::Result<Response<api::ViewSnapshotResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let s = self.s.clone();
        let mounts = blocking(move || {
            s.create(
                &ns,
                d,
                &r.key,
                &r.parent,
                Kind::View,
                r.labels.into_iter().collect(),
            )
        })
        .await?;
        Ok(Response::new(api::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<api::MountsRequest>,
    ) -> std::result::Result<Response<api::MountsResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let (rec, _) = self.s.get(&ns, d, &r.key)?;
        if rec.kind == Kind::Committed {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {:?} is committed: it has no mounts",
                r.key
            ))
            .into());
        }
        Ok(Response::new(api::MountsResponse {
            mounts: self.s.mounts_of(&ns, d, &rec)?,
        }))
    }

    async fn commit(
        &self,
        req: Request<api::CommitSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req).map_err(SnapshotError::from)?;
        let ns = ctx.namespace.clone();
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        self.lease_first(&ctx, d, &r.name).await?;
        let s = self.s.clone();
        blocking(move || s.commit(&ns, d, &r.name, &r.key, r.labels.into_iter().collect())).await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<api::RemoveSnapshotRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let s = self.s.clone();
        blocking(move || s.remove(&ns, d, &r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<api::StatSnapshotRequest>,
    ) -> std::result::Result<Response<api::StatSnapshotResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let (rec, _) = self.s.get(&ns, d, &r.key)?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info(&r.key, &rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateSnapshotRequest>,
    ) -> std::result::Result<Response<api::UpdateSnapshotResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let new = r
            .info
            .ok_or_else(|| SnapshotError::InvalidArgument("update needs info".into()))?;
        let new_labels: Labels = new.labels.into_iter().collect();
        labels::validate(&new_labels).map_err(SnapshotError::from)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        for p in &paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(SnapshotError::InvalidArgument(format!(
                    "cannot update field {p:?} of snapshot {:?}",
                    new.name
                ))
                .into());
            }
        }
        let k = store::key(&ns, d, &new.name);
        loop {
            let (mut rec, rev) = self.s.get(&ns, d, &new.name)?;
            if paths.is_empty() {
                rec.labels = new_labels.clone();
            } else {
                labels::apply_mask(&mut rec.labels, &new_labels, &paths).map_err(SnapshotError::from)?;
            }
            rec.updated_at = now_nanos();
            let out = self
                .s
                .store
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(k.clone(), rev))
                        .put(k.clone(), store::encode(&rec)),
                )
                .map_err(SnapshotError::from)?;
            if let TxnOutcome::Committed { .. } = out {
                return Ok(Response::new(api::UpdateSnapshotResponse {
                    info: Some(info(&new.name, &rec)),
                }));
            }
        }
    }

    type ListStream = BoxStream<api::ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<api::ListSnapshotsRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let filter = Filter::parse_all(&r.filters).map_err(SnapshotError::from)?;
        let prefix = store::prefix(&ns, d);
        let mut infos = Vec::new();
        for e in self.s.store.range(&prefix).map_err(SnapshotError::from)? {
            let name = &e.key[prefix.len()..];
            let rec = store::decode(&e)?;
            if filter.matches(&InfoFields(name, &rec)) {
                infos.push(info(name, &rec));
            }
        }
        let batches: Vec<_> = infos
            .chunks(100)
            .map(|c| Ok(api::ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<api::UsageRequest>,
    ) -> std::result::Result<Response<api::UsageResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let d = Driver::parse(&r.snapshotter)?;
        let (rec, _) = self.s.get(&ns, d, &r.key)?;
        let fs = self.s.dirs(d).fs(&rec.id);
        let (size, inodes) = blocking(move || Ok(disk_usage(&fs))).await?;
        Ok(Response::new(api::UsageResponse { size, inodes }))
    }

    async fn cleanup(&self, req: Request<api::CleanupRequest>) -> std::result::Result<Response<()>, Status> {
        let d = Driver::parse(&req.get_ref().snapshotter)?;
        crate::gc::collect(&self.s, &self.content, d).await?;
        Ok(Response::new(()))
    }
}

/// Bytes (in 512-byte blocks, as du counts) and inodes under `dir`, counting hardlinks once.
fn disk_usage(dir: &std::path::Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut size = 0i64;
    let mut inodes = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((md.dev(), md.ino())) {
            inodes += 1;
            size += md.blocks() as i64 * 512;
        }
        if md.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    (size, inodes)
}
