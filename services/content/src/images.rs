//! containerd.services.images.v1.Images: image name → target descriptor.
//! An image is a garbage-collection root for everything its target references.

use std::sync::Arc;

use molde_api::containerd::services::images::v1 as api;
use molde_api::containerd::types::Descriptor;
use molde_meta::filter::{Fields, Filter, label_field};
use molde_meta::{Compare, Txn, TxnOutcome};
use tonic::{Request, Response, Status};

use crate::error::{ContentError, Result};
use crate::records::{self, DescriptorRecord, ImageRecord, Labels, timestamp};
use crate::state::Shared;
use molde_common::context::RequestContext;
use molde_common::digest::Digest;

#[derive(Clone)]
pub struct ImagesService {
    pub(crate) shared: Arc<Shared>,
}

struct ImageFields<'a>(&'a str, &'a ImageRecord);

impl Fields for ImageFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" => Some(self.0.to_string()),
            "target" => match path.get(1)?.as_str() {
                "digest" => Some(self.1.target.digest.clone()),
                "mediatype" | "media_type" => Some(self.1.target.media_type.clone()),
                _ => None,
            },
            "labels" => label_field(&self.1.labels, path),
            _ => None,
        }
    }
}

fn to_api(name: &str, r: &ImageRecord) -> api::Image {
    api::Image {
        name: name.to_string(),
        labels: r.labels.clone().into_iter().collect(),
        target: Some(Descriptor {
            media_type: r.target.media_type.clone(),
            digest: r.target.digest.clone(),
            size: r.target.size,
            annotations: r.target.annotations.clone().into_iter().collect(),
        }),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

fn target(d: Option<Descriptor>, name: &str) -> Result<DescriptorRecord> {
    let d = d.ok_or_else(|| ContentError::InvalidArgument(format!("image {name:?}: target is required")))?;
    Digest::parse_field(&d.digest, "image.target.digest")?;
    if d.media_type.is_empty() {
        return Err(ContentError::InvalidArgument(format!(
            "image {name:?}: target media type is required"
        )));
    }
    Ok(DescriptorRecord {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    })
}

fn check_name(name: &str) -> Result<()> {
    molde_common::reference::check_name(name)
}

impl ImagesService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn load(&self, ns: &str, name: &str) -> Result<(ImageRecord, u64)> {
        records::load(&*self.shared.store, &records::image_key(ns, name))?
            .ok_or_else(|| ContentError::NotFound(format!("image {name:?}")))
    }

    fn update(&self, ns: &str, img: api::Image, paths: Vec<String>) -> Result<api::Image> {
        check_name(&img.name)?;
        let key = records::image_key(ns, &img.name);
        let labels: Labels = img.labels.into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let new_target = img.target;
        loop {
            let (mut rec, rev) = self.load(ns, &img.name)?;
            if paths.is_empty() {
                rec.labels = labels.clone();
                rec.target = target(new_target.clone(), &img.name)?;
            } else {
                for p in &paths {
                    match p.as_str() {
                        "target" => rec.target = target(new_target.clone(), &img.name)?,
                        "labels" => rec.labels = labels.clone(),
                        p if p.starts_with("labels.") => {
                            molde_common::labels::apply_mask(&mut rec.labels, &labels, &[p.to_string()])?;
                        }
                        "annotations" => {}
                        other => {
                            return Err(ContentError::InvalidArgument(format!(
                                "cannot update field {other:?} of image {:?}",
                                img.name
                            )));
                        }
                    }
                }
            }
            rec.updated_at = records::now_nanos();
            let out = self.shared.store.txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .put(key.clone(), records::encode(&rec)),
            )?;
            if let TxnOutcome::Committed { .. } = out {
                return Ok(to_api(&img.name, &rec));
            }
        }
    }
}

#[tonic::async_trait]
impl api::images_server::Images for ImagesService {
    async fn get(
        &self,
        req: Request<api::GetImageRequest>,
    ) -> std::result::Result<Response<api::GetImageResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let name = &req.get_ref().name;
        let (rec, _) = self.load(&ctx.namespace, name)?;
        Ok(Response::new(api::GetImageResponse {
            image: Some(to_api(name, &rec)),
        }))
    }

    async fn list(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> std::result::Result<Response<api::ListImagesResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let filter = Filter::parse_all(&req.get_ref().filters).map_err(ContentError::from)?;
        let prefix = records::images_prefix(&ctx.namespace);
        let mut images = Vec::new();
        for e in self.shared.store.range(&prefix).map_err(ContentError::from)? {
            let name = &e.key[prefix.len()..];
            let rec: ImageRecord = records::decode(&e)?;
            if filter.matches(&ImageFields(name, &rec)) {
                images.push(to_api(name, &rec));
            }
        }
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn create(
        &self,
        req: Request<api::CreateImageRequest>,
    ) -> std::result::Result<Response<api::CreateImageResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let img = req
            .into_inner()
            .image
            .ok_or_else(|| ContentError::InvalidArgument("create needs an image".into()))?;
        check_name(&img.name)?;
        let labels: Labels = img.labels.into_iter().collect();
        molde_common::labels::validate(&labels)?;
        let now = records::now_nanos();
        let rec = ImageRecord {
            target: target(img.target, &img.name)?,
            labels,
            created_at: now,
            updated_at: now,
        };
        self.shared.ensure_namespace(&ctx.namespace)?;
        let key = records::image_key(&ctx.namespace, &img.name);
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
            return Err(ContentError::AlreadyExists(format!("image {:?}", img.name)).into());
        }
        tracing::info!(namespace = %ctx.namespace, image = %img.name, target = %rec.target.digest, "image created");
        if let Some(ev) = &self.shared.config.events {
            ev.publish(
                &ctx.namespace,
                "/images/create",
                "ImageCreate",
                molde_api::containerd::events::ImageCreate {
                    name: img.name.clone(),
                    labels: rec.labels.clone().into_iter().collect(),
                },
            );
        }
        Ok(Response::new(api::CreateImageResponse {
            image: Some(to_api(&img.name, &rec)),
        }))
    }

    async fn update(
        &self,
        req: Request<api::UpdateImageRequest>,
    ) -> std::result::Result<Response<api::UpdateImageResponse>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.into_inner();
        let img = r
            .image
            .ok_or_else(|| ContentError::InvalidArgument("update needs an image".into()))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let image = self.update(&ctx.namespace, img, paths)?;
        if let Some(ev) = &self.shared.config.events {
            ev.publish(
                &ctx.namespace,
                "/images/update",
                "ImageUpdate",
                molde_api::containerd::events::ImageUpdate {
                    name: image.name.clone(),
                    labels: image.labels.clone(),
                },
            );
        }
        Ok(Response::new(api::UpdateImageResponse { image: Some(image) }))
    }

    async fn delete(
        &self,
        req: Request<api::DeleteImageRequest>,
    ) -> std::result::Result<Response<()>, Status> {
        let ctx = RequestContext::of(&req)?;
        let r = req.get_ref();
        let key = records::image_key(&ctx.namespace, &r.name);
        let (_, rev) = self.load(&ctx.namespace, &r.name)?;
        self.shared
            .store
            .txn(
                Txn::new()
                    .when(Compare::ModRevision(key.clone(), rev))
                    .delete(key),
            )
            .map_err(ContentError::from)?;
        tracing::info!(namespace = %ctx.namespace, image = %r.name, "image deleted");
        if let Some(ev) = &self.shared.config.events {
            ev.publish(
                &ctx.namespace,
                "/images/delete",
                "ImageDelete",
                molde_api::containerd::events::ImageDelete {
                    name: r.name.clone(),
                    target: String::new(),
                },
            );
        }
        if r.sync {
            crate::gc::collect_blocking(self.shared.clone()).await?;
        } else {
            self.shared.schedule_gc();
        }
        Ok(Response::new(()))
    }
}
