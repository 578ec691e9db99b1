//! Users by name: a container that runs as `nginx` (its image's `User`, or
//! `runAsUsername`) runs as the uid and gid the image's /etc/passwd gives
//! that name, read from a read-only view of the image's top layer; the
//! rule is `molde_common::user`'s.

use molde_api::containerd::services::snapshots::v1::{
    RemoveSnapshotRequest, ViewSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_common::errdefs::{Error, OrLog};

use crate::{Cri, request};

impl Cri {
    /// Reads files of an image (by its top chain ID) through a read-only view.
    pub async fn read_image_files(&self, top: &str, files: &[&str]) -> Result<Vec<Option<String>>, Error> {
        if top.is_empty() {
            return Ok(files.iter().map(|_| None).collect());
        }
        // An image's layers never change: each image is read once.
        let cache_key = format!("{top} {}", files.join(" "));
        if let Some(hit) = self
            .user_files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
        {
            return Ok(hit.clone());
        }
        let key = format!("cri-user-{}", uuid::Uuid::new_v4().simple());
        let mut sn = SnapshotsClient::new(self.channels.snapshotter.clone());
        let mounts = sn
            .view(request(ViewSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: key.clone(),
                parent: top.to_string(),
                labels: Default::default(),
            }))
            .await
            .map_err(Error::upstream("viewing the image's files"))?
            .into_inner()
            .mounts;
        let dir = self.config.state.join("views").join(&key);
        let read = (|| -> Result<Vec<Option<String>>, Error> {
            std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
            molde_bundle::mount::mount_all(&molde_common::bundle_mounts(&mounts), &dir, true)
                .map_err(Error::io("mounting the image's files"))?;
            let out = files
                .iter()
                .map(|f| std::fs::read_to_string(dir.join(f.trim_start_matches('/'))).ok())
                .collect();
            rustix::mount::unmount(&dir, rustix::mount::UnmountFlags::DETACH)
                .or_log("unmounting an image view");
            Ok(out)
        })();
        std::fs::remove_dir(&dir).or_log("removing an image view's directory");
        sn.remove(request(RemoveSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key,
        }))
        .await
        .or_log("removing an image view");
        if let Ok(files) = &read {
            let mut cache = self.user_files.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: emptied when it holds 256 images.
            if cache.len() >= 256 {
                cache.clear();
            }
            cache.insert(cache_key, files.clone());
        }
        read
    }
}
