//! containerd.services.namespaces.v1.Namespaces. Namespaces are created on first
//! use by any write; a namespace can only be deleted once it holds nothing.

use std::sync::Arc;

use molde_api::containerd::services::namespaces::v1 as api;
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::error::{ContentError, Result};
use crate::records::{self, Labels, NamespaceRecord};
use crate::state::Shared;
use molde_common::context::validate_namespace;

#[derive(Clone)]
pub struct NamespacesService {
    pub(crate) shared: Arc<Shared>,
}

struct NsFields<'a>(&'a str, &'a NamespaceRecord);

impl Fields for NsFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" => Some(self.0.to_string()),
            "labels" => label_field(&self.1.labels, path),
            _ => None,
        }
    }
}

fn to_api(name: &str, r: &NamespaceRecord) -> api::Namespace {
    api::Namespace {
        name: name.to_string(),
        labels: r.labels.clone().into_iter().collect(),
    }
}

impl NamespacesService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn load(&self, name: &str) -> Result<(NamespaceRecord, u64)> {
        records::load(&*self.shared.store, &records::namespace_key(name))?
            .ok_or_else(|| ContentError::NotFound(format!("namespace {name:?}")))
    }
}

#[tonic::async_trait]
impl api::namespaces_server::Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<api::GetNamespaceRequest>,
    ) -> std::result::Result<Response<api::GetNamespaceResponse>, Status> {
        let name = &req.get_ref().name;
        let (rec, _) = self.load(name)?;
        Ok(Response::new(api::GetNamespaceResponse {
            namespace: Some(to_api(name, &rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<api::ListNamespacesRequest>,
    ) -> std::result::Result<Response<api::ListNamespacesResponse>, Status> {
        let filter = Filter::parse_all(&[&req.get_ref().filter]).map_err(ContentError::from)?;
        let mut namespaces = Vec::new();
        for e in self
            .shared
            .store
            .range(records::NAMESPACES_PREFIX)
            .map_err(ContentError::from)?
        {
            let name = &e.key[records::NAMESPACES_PREFIX.len()..];
            let rec: NamespaceRecord = records::decode(&e)?;
            if filter.matches(&NsFields(name, &rec)) {
                namespaces.push(to_api(name, &rec));
            }
        }
        Ok(Response::new(api::ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<api::CreateNamespaceRequest>,
    ) -> std::result::Result<Response<api::CreateNamespaceResponse>, Status> {
        let ns = req
            .into_inner()
            .namespace
            .ok_or_else(|| ContentError::InvalidArgument("create needs a namespace".into()))?;
        validate_namespace(&ns.name)?;
        let labels: Labels = ns.labels.into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let rec = NamespaceRecord { labels };
        let key = records::namespace_key(&ns.name);
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
            return Err(ContentError::AlreadyExists(format!("namespace {:?}", ns.name)).into());
        }
        Ok(Response::new(api::CreateNamespaceResponse {
            namespace: Some(to_api(&ns.name, &rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateNamespaceRequest>,
    ) -> std::result::Result<Response<api::UpdateNamespaceResponse>, Status> {
        let r = req.into_inner();
        let ns = r
            .namespace
            .ok_or_else(|| ContentError::InvalidArgument("update needs a namespace".into()))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let labels: Labels = ns.labels.into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let key = records::namespace_key(&ns.name);
        loop {
            let (mut rec, rev) = self.load(&ns.name)?;
            if paths.is_empty() {
                rec.labels = labels.clone();
            } else {
                for p in &paths {
                    if p != "labels" && !p.starts_with("labels.") {
                        return Err(ContentError::InvalidArgument(format!(
                            "cannot update field {p:?} of namespace {:?}",
                            ns.name
                        ))
                        .into());
                    }
                }
                molde_common::labels::apply_mask(&mut rec.labels, &labels, &paths)?;
            }
            let out = self
                .shared
                .store
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(key.clone(), rev))
                        .put(key.clone(), records::encode(&rec)),
                )
                .map_err(ContentError::from)?;
            if let TxnOutcome::Committed { .. } = out {
                return Ok(Response::new(api::UpdateNamespaceResponse {
                    namespace: Some(to_api(&ns.name, &rec)),
                }));
            }
        }
    }

    async fn delete(
        &self,
        req: Request<api::DeleteNamespaceRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let name = &req.get_ref().name;
        let (_, rev) = self.load(name)?;
        if !self
            .shared
            .store
            .range(&records::ns_prefix(name))
            .map_err(ContentError::from)?
            .is_empty()
        {
            return Err(ContentError::FailedPrecondition(format!(
                "namespace {name:?} must be empty to be deleted: it still holds content, images or leases"
            ))
            .into());
        }
        let key = records::namespace_key(name);
        self.shared
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .delete(key),
            )
            .map_err(ContentError::from)?;
        Ok(Response::new(()))
    }
}
