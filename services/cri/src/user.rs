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
}

/// A user in an image: its uid, primary gid and name (empty when unnamed).
pub type Who = (u32, u32, String);

/// `user[:group]` (names or numbers) against an image's passwd and group texts.
pub fn resolve_in(passwd: &str, group: &str, user: &str) -> Result<Who, Error> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary, name) = match u.parse::<u32>() {
        Ok(n) => {
            let entry = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2] == n.to_string()).then(|| (f[3].parse().unwrap_or(0), f[0].to_string()))
            });
            let (gid, name) = entry.unwrap_or((0, String::new()));
            (n, gid, name)
        }
        Err(_) => {
            let (uid, gid) = lookup_passwd(passwd, u).ok_or_else(|| {
                Error::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
            })?;
            (uid, gid, u.to_string())
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_group(group, g).ok_or_else(|| {
                Error::InvalidArgument(format!("group {g:?} is not in the image's /etc/group"))
            })?,
        },
    };
    Ok((uid, gid, name))
}

/// The groups of an image's /etc/group that list `name` as a member.
pub fn member_of(group: &str, name: &str) -> Vec<u32> {
    if name.is_empty() {
        return Vec::new();
    }
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == name)).then(|| f[2].parse().ok())?
        })
        .collect()
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

    #[test]
    fn users_resolve_with_groups_and_memberships() {
        let passwd = "root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n";
        let group = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nwheel:x:10:bob\n";
        assert_eq!(
            resolve_in(passwd, group, "alice").unwrap(),
            (1000, 1000, "alice".into())
        );
        assert_eq!(
            resolve_in(passwd, group, "1000").unwrap(),
            (1000, 1000, "alice".into())
        );
        assert_eq!(resolve_in(passwd, group, "alice:staff").unwrap().1, 50);
        assert_eq!(
            resolve_in(passwd, group, "4242:7").unwrap(),
            (4242, 7, String::new())
        );
        assert!(resolve_in(passwd, group, "mallory").is_err());
        assert!(resolve_in(passwd, group, "alice:nogroup").is_err());
        assert_eq!(member_of(group, "alice"), [50]);
        assert!(member_of(group, "").is_empty());
    }
}
