//! Users by name: a container that runs as `nginx` (its image's `User`, or
//! `runAsUsername`) runs as the uid and gid the image's /etc/passwd gives
//! that name, read from a read-only view of the image's top layer.

use molde_api::containerd::services::snapshots::v1::{
    RemoveSnapshotRequest, ViewSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_common::errdefs::{Error, OrLog};

use crate::{Cri, request};

/// `name`'s uid and primary gid in an `/etc/passwd` text.
pub fn lookup_passwd(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// `name`'s gid in an `/etc/group` text.
pub fn lookup_group(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

impl Cri {
    /// Reads files of an image (by its top chain ID) through a read-only view.
    pub async fn read_image_files(&self, top: &str, files: &[&str]) -> Result<Vec<Option<String>>, Error> {
        if top.is_empty() {
            return Ok(files.iter().map(|_| None).collect());
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
        read
    }

    /// The uid and gid of `user[:group]` (names or numbers) in an image.
    pub async fn resolve_user(&self, top: &str, user: &str) -> Result<(u32, u32), Error> {
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        let numeric_u = u.parse::<u32>().ok();
        let numeric_g = g.and_then(|g| g.parse::<u32>().ok());
        if let Some(uid) = numeric_u
            && (g.is_none() || numeric_g.is_some())
        {
            // Numbers need no lookup; a numeric user without a group is in group 0.
            return Ok((uid, numeric_g.unwrap_or(0)));
        }
        let files = self.read_image_files(top, &["/etc/passwd", "/etc/group"]).await?;
        let passwd = files[0].clone().unwrap_or_default();
        let group = files[1].clone().unwrap_or_default();
        let (uid, primary) = match numeric_u {
            Some(n) => (n, 0),
            None => lookup_passwd(&passwd, u).ok_or_else(|| {
                Error::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
            })?,
        };
        let gid = match g {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup_group(&group, g).ok_or_else(|| {
                    Error::InvalidArgument(format!("group {g:?} is not in the image's /etc/group"))
                })?,
            },
        };
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_in_passwd_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:34::/var/www:/bin/false\nbad:line\n";
        assert_eq!(lookup_passwd(passwd, "www-data"), Some((33, 34)));
        assert_eq!(lookup_passwd(passwd, "root"), Some((0, 0)));
        assert_eq!(lookup_passwd(passwd, "nobody"), None);
        assert_eq!(lookup_group("root:x:0:\nstaff:x:50:a,b\n", "staff"), Some(50));
        assert_eq!(lookup_group("", "staff"), None);
    }
}
