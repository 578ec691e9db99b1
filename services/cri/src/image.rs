//! CRI's ImageService over transfer.v1 and images.v1, in the `k8s.io`
//! namespace (so `molde -n k8s.io images` and `ctr -n k8s.io images ls` show
//! what the kubelet pulled).
//!
//! An image's CRI id is its config digest, as containerd's: one image with
//! several names (tags, a digest reference) is one image with several repo
//! tags and repo digests. Names are normalized as docker reads them
//! (`busybox` is `docker.io/library/busybox:latest`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService as CriImageService;
use molde_api::containerd::services::images::v1::{
    DeleteImageRequest, ListImagesRequest, images_client::ImagesClient,
};
use molde_api::containerd::services::snapshots::v1::{
    ListSnapshotsRequest, UsageRequest, snapshots_client::SnapshotsClient,
};
use molde_api::molde::services::transfer::v1::{
    PullRequest, RegistryAuth, progress::Event, transfer_client::TransferClient,
};
use molde_common::errdefs::Error;
use molde_common::image::{host_platform, resolve_digest};
use tonic::{Request, Response, Status};

use crate::{Cri, NAMESPACE, request};

pub struct ImageService {
    pub cri: Arc<Cri>,
}

/// One image as CRI sees it: every name that points at one config.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub id: String,
    pub names: Vec<String>,
    /// `repo@digest` of the manifest each repository's name points at.
    pub repo_digests: Vec<String>,
    pub size: u64,
    /// The config's `User`.
    pub user: String,
    /// The top layer's chain ID: the parent of a container's rootfs.
    pub top: String,
    /// The config's process defaults.
    pub process: oci_spec::image::Config,
}

impl ImageInfo {
    pub fn repo_tags(&self) -> Vec<String> {
        self.names.iter().filter(|n| !n.contains('@')).cloned().collect()
    }

    fn to_cri(&self) -> cri::Image {
        let (uid, username) = user_of(&self.user);
        cri::Image {
            id: self.id.clone(),
            repo_tags: self.repo_tags(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            uid: uid.map(|value| cri::Int64Value { value }),
            username,
            spec: Some(cri::ImageSpec {
                image: self.id.clone(),
                ..Default::default()
            }),
            pinned: false,
        }
    }
}

/// The config's user as CRI reports it: a uid when it starts with a number, a name otherwise.
fn user_of(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    if u.is_empty() {
        return (Some(0), String::new());
    }
    match u.parse::<i64>() {
        Ok(n) => (Some(n), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

fn repo_of(name: &str) -> &str {
    if let Some((r, _)) = name.split_once('@') {
        return r;
    }
    match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => r,
        _ => name,
    }
}

/// Every image in the namespace, grouped by config digest.
pub async fn images(cri: &Cri) -> Result<Vec<ImageInfo>, Error> {
    let records = ImagesClient::new(cri.channels.content.clone())
        .list(request(ListImagesRequest::default()))
        .await
        .map_err(Error::upstream("listing images"))?
        .into_inner()
        .images;
    let mut by_id: BTreeMap<String, ImageInfo> = BTreeMap::new();
    // What a manifest digest resolves to never changes: resolved once, kept
    // while some image names it.
    let mut resolved = std::mem::take(&mut *cri.resolved_images.lock().unwrap_or_else(|p| p.into_inner()));
    resolved.retain(|digest, _| {
        records
            .iter()
            .any(|r| r.target.as_ref().is_some_and(|t| t.digest == *digest))
    });
    for img in records {
        let target = img.target.unwrap_or_default();
        let info = match resolved.get(&target.digest) {
            Some(i) => i.clone(),
            None => {
                let r = match resolve_digest(
                    &cri.channels.content,
                    NAMESPACE,
                    &img.name,
                    &target.digest,
                    &host_platform(),
                )
                .await
                {
                    Ok(r) => r,
                    // An image pulled for another platform, or incomplete: not one CRI can run.
                    Err(s) => {
                        tracing::debug!(image = %img.name, error = %s.message(), "image skipped");
                        continue;
                    }
                };
                let size =
                    r.layers.iter().map(|l| l.descriptor.size()).sum::<u64>() + r.manifest.config().size();
                let process = r.config.config().clone().unwrap_or_default();
                let i = ImageInfo {
                    id: r.config_digest.clone(),
                    size,
                    user: process.user().clone().unwrap_or_default(),
                    top: r.top_chain_id().unwrap_or_default().to_string(),
                    process,
                    ..Default::default()
                };
                resolved.insert(target.digest.clone(), i.clone());
                i
            }
        };
        let entry = by_id.entry(info.id.clone()).or_insert_with(|| info.clone());
        entry.names.push(img.name.clone());
        let rd = format!("{}@{}", repo_of(&img.name), target.digest);
        if !entry.repo_digests.contains(&rd) {
            entry.repo_digests.push(rd);
        }
    }
    let mut cache = cri.resolved_images.lock().unwrap_or_else(|p| p.into_inner());
    if cache.is_empty() {
        *cache = resolved;
    }
    Ok(by_id.into_values().collect())
}

/// The image `spec` names: an id (or a unique id prefix), a name, or a digest reference.
pub async fn find(cri: &Cri, spec: &str) -> Result<Option<ImageInfo>, Error> {
    if spec.is_empty() {
        return Err(Error::InvalidArgument("no image given".into()));
    }
    let all = images(cri).await?;
    let name = molde_common::reference::normalize(spec);
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    let by_id: Vec<&ImageInfo> = all
        .iter()
        .filter(|i| {
            hex.len() >= 4
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
                && i.id.trim_start_matches("sha256:").starts_with(hex)
        })
        .collect();
    if by_id.len() == 1 {
        return Ok(Some(by_id[0].clone()));
    }
    Ok(all
        .into_iter()
        .find(|i| i.names.iter().any(|n| *n == name || n == spec) || i.repo_digests.contains(&name)))
}

fn registry_auth(a: Option<cri::AuthConfig>) -> Result<Option<RegistryAuth>, Error> {
    let Some(a) = a else { return Ok(None) };
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Some(RegistryAuth {
            username: a.username,
            password: a.password,
        }));
    }
    if !a.auth.is_empty() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|e| Error::InvalidArgument(format!("auth: not base64: {e}")))?;
        let text = String::from_utf8(raw).map_err(|_| Error::InvalidArgument("auth: not text".into()))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| Error::InvalidArgument("auth: expected base64 of user:password".into()))?;
        return Ok(Some(RegistryAuth {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    // An identity token is a refresh token for the registry's token service;
    // a registry token is a bearer token. Both go where a password would.
    let token = if a.identity_token.is_empty() {
        a.registry_token
    } else {
        a.identity_token
    };
    if token.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        username: "<token>".into(),
        password: token,
    }))
}

/// Pulls `image` into `k8s.io`; returns its id.
pub async fn pull(cri: &Cri, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, Error> {
    if image.is_empty() {
        return Err(Error::InvalidArgument("PullImage needs an image".into()));
    }
    let reference = molde_common::reference::normalize(image);
    let mut stream = TransferClient::new(cri.channels.transfer.clone())
        .pull(request(PullRequest {
            reference: reference.clone(),
            auth: registry_auth(auth)?,
            ..Default::default()
        }))
        .await
        .map_err(Error::upstream(format!("pulling {image}")))?
        .into_inner();
    let mut done = None;
    while let Some(p) = stream
        .message()
        .await
        .map_err(Error::upstream(format!("pulling {image}")))?
    {
        if let Some(Event::Done(d)) = p.event {
            done = Some(d);
        }
    }
    let done =
        done.ok_or_else(|| Error::Unavailable(format!("pulling {image}: the pull ended without a result")))?;
    let target = done.target.unwrap_or_default();
    let r = resolve_digest(
        &cri.channels.content,
        NAMESPACE,
        &reference,
        &target.digest,
        &host_platform(),
    )
    .await
    .map_err(Error::upstream(format!("pulled {image}")))?;
    tracing::info!(image = %reference, id = %r.config_digest, "CRI image pulled");
    Ok(r.config_digest)
}

#[tonic::async_trait]
impl CriImageService for ImageService {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(f) => find(&self.cri, &f).await?.into_iter().collect(),
            None => images(&self.cri).await?,
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(ImageInfo::to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = req.into_inner();
        let spec = r.image.map(|i| i.image).unwrap_or_default();
        let found = find(&self.cri, &spec).await?;
        let mut info = HashMap::new();
        if r.verbose
            && let Some(i) = &found
        {
            let v = serde_json::json!({
                "id": i.id,
                "names": i.names,
                "size": i.size,
                "chainID": i.top,
                "config": i.process,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: found.as_ref().map(ImageInfo::to_cri),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = req.into_inner();
        let image = r.image.map(|i| i.image).unwrap_or_default();
        let image_ref = pull(&self.cri, &image, r.auth).await?;
        Ok(Response::new(cri::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let spec = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        // Removing an image that is not here is done already.
        let Some(img) = find(&self.cri, &spec).await? else {
            return Ok(Response::new(cri::RemoveImageResponse {}));
        };
        let mut images = ImagesClient::new(self.cri.channels.content.clone());
        for name in &img.names {
            match images
                .delete(request(DeleteImageRequest {
                    name: name.clone(),
                    sync: false,
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(Error::upstream(format!("removing {name}"))(s).into()),
            }
        }
        tracing::info!(id = %img.id, names = ?img.names, "CRI image removed");
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let fs = image_fs_usage(&self.cri).await?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: Vec::new(),
        }))
    }
}

/// The snapshotter's usage by the namespace's committed snapshots (the
/// unpacked images), and where it keeps them.
pub async fn image_fs_usage(cri: &Cri) -> Result<cri::FilesystemUsage, Error> {
    let mut sn = SnapshotsClient::new(cri.channels.snapshotter.clone());
    let mut stream = sn
        .list(request(ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: Vec::new(),
        }))
        .await
        .map_err(Error::upstream("listing snapshots"))?
        .into_inner();
    let mut committed = Vec::new();
    while let Some(batch) = stream
        .message()
        .await
        .map_err(Error::upstream("listing snapshots"))?
    {
        for i in batch.info {
            // Kind 3 is committed (containerd's snapshot kinds).
            if i.kind == 3 {
                committed.push(i.name);
            }
        }
    }
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for key in committed {
        if let Ok(u) = sn
            .usage(request(UsageRequest {
                snapshotter: "overlayfs".into(),
                key,
            }))
            .await
        {
            let u = u.into_inner();
            bytes += u.size.max(0) as u64;
            inodes += u.inodes.max(0) as u64;
        }
    }
    Ok(cri::FilesystemUsage {
        timestamp: crate::now_nanos(),
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: cri.snapshot_root().await,
        }),
        used_bytes: Some(cri::UInt64Value { value: bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_uids_or_names() {
        assert_eq!(user_of(""), (Some(0), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("nobody"), (None, "nobody".into()));
        assert_eq!(user_of("www-data:www-data"), (None, "www-data".into()));
    }

    #[test]
    fn repositories_of_names() {
        assert_eq!(
            repo_of("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox"
        );
        assert_eq!(repo_of("127.0.0.1:5000/app@sha256:ab"), "127.0.0.1:5000/app");
        assert_eq!(repo_of("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
    }

    #[test]
    fn auth_from_every_field() {
        use base64::Engine;
        let a = registry_auth(Some(cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        assert!(
            registry_auth(Some(cri::AuthConfig {
                auth: "!!".into(),
                ..Default::default()
            }))
            .is_err()
        );
        assert!(registry_auth(Some(cri::AuthConfig::default())).unwrap().is_none());
    }
}
