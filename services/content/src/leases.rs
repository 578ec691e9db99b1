//! containerd.services.leases.v1.Leases: leases hold resources (content, ingests,
//! snapshots) back from garbage collection while they live.

use std::sync::Arc;

use molde_api::containerd::services::leases::v1 as api;
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::error::{ContentError, Result};
use crate::records::{self, Labels, LeaseRecord, timestamp};
use crate::state::Shared;
use molde_common::context::RequestContext;
use molde_common::digest::Digest;

#[derive(Clone)]
pub struct LeasesService {
    pub(crate) shared: Arc<Shared>,
}

struct LeaseFields<'a>(&'a str, &'a LeaseRecord);

impl Fields for LeaseFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "id" => Some(self.0.to_string()),
            "labels" => label_field(&self.1.labels, path),
            _ => None,
        }
    }
}

fn to_api(id: &str, r: &LeaseRecord) -> api::Lease {
    api::Lease {
        id: id.to_string(),
        created_at: Some(timestamp(r.created_at)),
        labels: r.labels.clone().into_iter().collect(),
    }
}

/// A lease id: non-empty, no '/', printable.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 256 || id.contains('/') || id.chars().any(char::is_control) {
        return Err(ContentError::InvalidArgument(format!(
            "lease id {id:?}: must be 1-256 printable characters without '/'"
        )));
    }
    Ok(())
}

fn check_resource(r: &api::Resource) -> Result<(String, String)> {
    match r.r#type.as_str() {
        "content" => {
            Digest::parse_field(&r.id, "resource.id")?;
        }
        "ingests" => {}
        t if t.starts_with("snapshots/") => {}
        t => {
            return Err(ContentError::InvalidArgument(format!(
                "lease resource type {t:?}: expected content, ingests or snapshots/<snapshotter>"
            )));
        }
    }
    if r.id.is_empty() {
        return Err(ContentError::InvalidArgument(
            "lease resource id is required".into(),
        ));
    }
    Ok((r.r#type.clone(), r.id.clone()))
}

fn generate_id() -> String {
    // Time first so ids sort by creation, random after so they never collide.
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &rand[..12])
}

impl LeasesService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn load(&self, ns: &str, id: &str) -> Result<(LeaseRecord, u64)> {
        records::load(&*self.shared.store, &records::lease_key(ns, id))?
            .ok_or_else(|| ContentError::NotFound(format!("lease {id:?}")))
    }
}

#[tonic::async_trait]
impl api::leases_server::Leases for LeasesService {
    async fn create(
        &self,
        req: Request<api::CreateRequest>,
    ) -> std::result::Result<Response<api::CreateResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let id = if r.id.is_empty() { generate_id() } else { r.id };
        check_id(&id)?;
        let labels: Labels = r.labels.into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let rec = LeaseRecord {
            created_at: records::now_nanos(),
            labels,
            resources: Default::default(),
        };
        self.shared.ensure_namespace(&ctx.namespace)?;
        let key = records::lease_key(&ctx.namespace, &id);
        let out = self
            .shared
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(key.clone()))
                    .put(key, records::encode(&rec)),
            )
            .map_err(ContentError::from)?;
        if out == TxnOutcome::CompareFailed {
            return Err(ContentError::AlreadyExists(format!("lease {id:?}")).into());
        }
        tracing::debug!(namespace = %ctx.namespace, lease = %id, "lease created");
        Ok(Response::new(api::CreateResponse {
            lease: Some(to_api(&id, &rec)),
        }))
    }

    async fn delete(&self, req: Request<api::DeleteRequest>) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.get_ref();
        let key = records::lease_key(&ctx.namespace, &r.id);
        let (_, rev) = self.load(&ctx.namespace, &r.id)?;
        self.shared
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .delete(key),
            )
            .map_err(ContentError::from)?;
        tracing::debug!(namespace = %ctx.namespace, lease = %r.id, "lease deleted");
        if r.sync {
            crate::gc::collect_blocking(self.shared.clone()).await?;
        } else {
            self.shared.schedule_gc();
        }
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<api::ListRequest>,
    ) -> std::result::Result<Response<api::ListResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(ContentError::from)?;
        let prefix = records::leases_prefix(&ctx.namespace);
        let mut leases = Vec::new();
        for e in self.shared.store.range(&prefix).map_err(ContentError::from)? {
            let id = &e.key[prefix.len()..];
            let rec: LeaseRecord = records::decode(&e)?;
            if filter.matches(&LeaseFields(id, &rec)) {
                leases.push(to_api(id, &rec));
            }
        }
        Ok(Response::new(api::ListResponse { leases }))
    }

    async fn add_resource(
        &self,
        req: Request<api::AddResourceRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let res = check_resource(
            &r.resource
                .ok_or_else(|| ContentError::InvalidArgument("resource is required".into()))?,
        )?;
        self.shared.modify_lease(&ctx.namespace, &r.id, |l| {
            l.resources.insert(res.clone());
        })?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<api::DeleteResourceRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let res = r
            .resource
            .ok_or_else(|| ContentError::InvalidArgument("resource is required".into()))?;
        let key = (res.r#type, res.id);
        self.shared.modify_lease(&ctx.namespace, &r.id, |l| {
            l.resources.remove(&key);
        })?;
        self.shared.schedule_gc();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<api::ListResourcesRequest>,
    ) -> std::result::Result<Response<api::ListResourcesResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let (rec, _) = self.load(&ctx.namespace, &req.get_ref().id)?;
        let resources = rec
            .resources
            .into_iter()
            .map(|(t, id)| api::Resource { id, r#type: t })
            .collect();
        Ok(Response::new(api::ListResourcesResponse { resources }))
    }
}
