//! containerd.services.containers.v1.Containers: container records.
//!
//! A record is stored as the protobuf `Container` itself under
//! `/v1/ns/<ns>/containers/<id>`, so specs, runtime options and extensions
//! round-trip byte for byte whatever their type.

use molde_common::errdefs::Error;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use molde_api::containerd::services::containers::v1 as api;
use molde_common::{RequestContext, now_nanos, timestamp};
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Store, Txn, TxnOutcome};
use prost::Message;
use tonic::{Request, Response, Status};

pub(crate) fn key(ns: &str, id: &str) -> String {
    molde_meta::keys::containers::key(ns, id)
}

fn prefix(ns: &str) -> String {
    molde_meta::keys::containers::prefix(ns)
}

fn meta(e: molde_meta::MetaError) -> Error {
    Error::Meta(e)
}

fn ns<T>(req: &Request<T>) -> Result<String, Error> {
    Ok(RequestContext::of(req).map_err(Status::from)?.namespace)
}

/// Container ids follow containerd's identifier rule: letters, digits, `.`,
/// `_` and `-`, starting with a letter or digit, at most 76 characters.
pub(crate) fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "container id {id:?}: use letters, digits, '.', '_' and '-' (at most 76), starting with a letter or digit"
        )))
    }
}

struct ContainerFields<'a>(&'a api::Container);

impl Fields for ContainerFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let c = self.0;
        match path.first()?.as_str() {
            "id" => Some(c.id.clone()),
            "image" => Some(c.image.clone()),
            "snapshotter" => Some(c.snapshotter.clone()),
            "runtime" if path.get(1).map(String::as_str) == Some("name") => {
                c.runtime.as_ref().map(|r| r.name.clone())
            }
            "labels" => label_field(&c.labels, path),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct ContainersService {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: molde_common::events::Publisher,
}

impl ContainersService {
    fn load(&self, ns: &str, id: &str) -> Result<(api::Container, u64), Error> {
        let e = self
            .store
            .get(&key(ns, id))
            .map_err(meta)?
            .ok_or_else(|| Error::NotFound(format!("container {id:?}")))?;
        let c = api::Container::decode(e.value.as_slice())
            .map_err(|err| Error::Internal(format!("corrupt record of container {id:?}: {err}")))?;
        Ok((c, e.mod_revision))
    }

    fn list_all(&self, ns: &str, filters: &[String]) -> Result<Vec<api::Container>, Error> {
        let filter = Filter::parse_all(filters).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut out = Vec::new();
        for e in self.store.range(&prefix(ns)).map_err(meta)? {
            let c = api::Container::decode(e.value.as_slice())
                .map_err(|err| Error::Internal(format!("corrupt record {}: {err}", e.key)))?;
            if filter.matches(&ContainerFields(&c)) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

fn validate_labels(c: &api::Container) -> Result<(), Error> {
    let labels: molde_common::labels::Labels = c.labels.clone().into_iter().collect();
    Ok(molde_common::labels::validate(&labels)?)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl api::containers_server::Containers for ContainersService {
    async fn get(
        &self,
        req: Request<api::GetContainerRequest>,
    ) -> Result<Response<api::GetContainerResponse>, Status> {
        let ns = ns(&req)?;
        let (c, _) = self.load(&ns, &req.get_ref().id)?;
        Ok(Response::new(api::GetContainerResponse { container: Some(c) }))
    }

    async fn list(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        let ns = ns(&req)?;
        let containers = self.list_all(&ns, &req.get_ref().filters)?;
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    type ListStreamStream = BoxStream<api::ListContainerMessage>;

    async fn list_stream(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = ns(&req)?;
        let items: Vec<_> = self
            .list_all(&ns, &req.get_ref().filters)?
            .into_iter()
            .map(|c| Ok(api::ListContainerMessage { container: Some(c) }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        let ns = ns(&req)?;
        let mut c = req
            .into_inner()
            .container
            .ok_or_else(|| Error::InvalidArgument("create needs a container".into()))?;
        check_id(&c.id)?;
        validate_labels(&c)?;
        if c.runtime.as_ref().is_none_or(|r| r.name.is_empty()) {
            return Err(
                Error::InvalidArgument(format!("container {:?}: runtime name is required", c.id)).into(),
            );
        }
        if c.spec.is_none() {
            return Err(Error::InvalidArgument(format!("container {:?}: spec is required", c.id)).into());
        }
        let now = timestamp(now_nanos());
        c.created_at = Some(now);
        c.updated_at = Some(now);
        let k = key(&ns, &c.id);
        let out = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(k.clone()))
                    .put(k, c.encode_to_vec()),
            )
            .map_err(meta)?;
        if out == TxnOutcome::CompareFailed {
            return Err(Error::AlreadyExists(format!("container {:?}", c.id)).into());
        }
        tracing::info!(namespace = %ns, container = %c.id, image = %c.image, "container created");
        self.events.publish(
            &ns,
            "/containers/create",
            "ContainerCreate",
            molde_api::containerd::events::ContainerCreate {
                id: c.id.clone(),
                image: c.image.clone(),
                runtime: c.runtime.as_ref().map(|r| {
                    molde_api::containerd::events::container_create::Runtime { name: r.name.clone() }
                }),
            },
        );
        Ok(Response::new(api::CreateContainerResponse { container: Some(c) }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateContainerRequest>,
    ) -> Result<Response<api::UpdateContainerResponse>, Status> {
        let ns = ns(&req)?;
        let r = req.into_inner();
        let new = r
            .container
            .ok_or_else(|| Error::InvalidArgument("update needs a container".into()))?;
        validate_labels(&new)?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let k = key(&ns, &new.id);
        loop {
            let (mut c, rev) = self.load(&ns, &new.id)?;
            if paths.is_empty() {
                c.labels = new.labels.clone();
                c.spec = new.spec.clone();
                c.snapshot_key = new.snapshot_key.clone();
                c.snapshotter = new.snapshotter.clone();
                c.image = new.image.clone();
                c.extensions = new.extensions.clone();
                if let Some(rt) = &new.runtime {
                    c.runtime = Some(rt.clone());
                }
            } else {
                for p in &paths {
                    match p.as_str() {
                        "labels" => c.labels = new.labels.clone(),
                        "spec" => c.spec = new.spec.clone(),
                        "image" => c.image = new.image.clone(),
                        "snapshotkey" | "snapshot_key" => c.snapshot_key = new.snapshot_key.clone(),
                        "snapshotter" => c.snapshotter = new.snapshotter.clone(),
                        "extensions" => c.extensions = new.extensions.clone(),
                        p if p.starts_with("labels.") => {
                            let k = &p["labels.".len()..];
                            match new.labels.get(k) {
                                Some(v) => c.labels.insert(k.to_string(), v.clone()),
                                None => c.labels.remove(k),
                            };
                        }
                        p if p.starts_with("extensions.") => {
                            let k = &p["extensions.".len()..];
                            match new.extensions.get(k) {
                                Some(v) => c.extensions.insert(k.to_string(), v.clone()),
                                None => c.extensions.remove(k),
                            };
                        }
                        other => {
                            return Err(Error::InvalidArgument(format!(
                                "cannot update field {other:?} of container {:?}",
                                new.id
                            ))
                            .into());
                        }
                    }
                }
            }
            c.updated_at = Some(timestamp(now_nanos()));
            let out = self
                .store
                .txn(
                    Txn::new()
                        .when(Compare::ModRevision(k.clone(), rev))
                        .put(k.clone(), c.encode_to_vec()),
                )
                .map_err(meta)?;
            if out != TxnOutcome::CompareFailed {
                return Ok(Response::new(api::UpdateContainerResponse { container: Some(c) }));
            }
        }
    }

    async fn delete(&self, req: Request<api::DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = ns(&req)?;
        let id = &req.get_ref().id;
        let (_, rev) = self.load(&ns, id)?;
        let k = key(&ns, id);
        self.store
            .txn(Txn::new().when(Compare::ModRevision(k.clone(), rev)).delete(k))
            .map_err(meta)?;
        tracing::info!(namespace = %ns, container = %id, "container deleted");
        self.events.publish(
            &ns,
            "/containers/delete",
            "ContainerDelete",
            molde_api::containerd::events::ContainerDelete { id: id.clone() },
        );
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::check_id;

    #[test]
    fn container_ids() {
        for ok in ["web", "a1", "my-app_2.x"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a/b", "a b", &"x".repeat(77)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
