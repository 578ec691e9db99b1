//! `-u user[:group]`: names resolved through the image's /etc/passwd and
//! /etc/group, read from the rootfs layers without mounting them, and never
//! outside them (symlinks resolve inside each layer).

use molde_common::errdefs::Error;
use std::io::Read;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The identity a container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads `rel` from the topmost layer (first in `layers`) that has it.
fn read_in_layers(layers: &[PathBuf], rel: &str) -> Option<String> {
    for l in layers {
        let Ok(root) = rustix::fs::open(
            l,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if let Ok(fd) = rustix::fs::openat2(
            &root,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            let mut s = String::new();
            std::fs::File::from(fd)
                .take(4 << 20)
                .read_to_string(&mut s)
                .ok()?;
            return Some(s);
        }
    }
    None
}

/// Resolves `spec` (`user`, `uid`, `user:group`, `uid:gid`; empty means
/// root) and `extra` groups (`--group-add`, names or numbers). The
/// supplementary groups are the process's own group, the groups the image's
/// /etc/group lists the user in, and the extra ones, as docker and
/// containerd set them.
pub fn resolve(spec: &str, extra: &[String], layers: &[PathBuf]) -> Result<Identity, Error> {
    let mut who = resolve_user(spec, layers)?;
    let groups = if extra.is_empty() {
        String::new()
    } else {
        read_in_layers(layers, "etc/group").unwrap_or_default()
    };
    let mut gids = vec![who.gid];
    gids.append(&mut who.additional_gids);
    for g in extra {
        gids.push(group_id(g, &groups)?);
    }
    let mut seen = std::collections::HashSet::new();
    gids.retain(|g| seen.insert(*g));
    who.additional_gids = gids;
    Ok(who)
}

fn group_id(g: &str, groups: &str) -> Result<u32, Error> {
    match g.parse::<u32>() {
        Ok(n) => Ok(n),
        Err(_) => groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == g)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| Error::InvalidArgument(format!("group {g:?} is not in the image's /etc/group"))),
    }
}

fn resolve_user(spec: &str, layers: &[PathBuf]) -> Result<Identity, Error> {
    if spec.is_empty() {
        return Ok(Identity::default());
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_layers(layers, "etc/passwd").unwrap_or_default();
    let groups = read_in_layers(layers, "etc/group").unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let (uid, primary, name) = match (user.parse::<u32>(), &entry) {
        (_, Some(f)) => (
            f[2].parse().map_err(|_| {
                Error::FailedPrecondition(format!("user {user:?}: bad uid in the image's /etc/passwd"))
            })?,
            f[3].parse().unwrap_or(0),
            f[0].to_string(),
        ),
        (Ok(uid), None) => (uid, 0, String::new()),
        (Err(_), None) => {
            return Err(Error::InvalidArgument(format!(
                "user {user:?} is not in the image's /etc/passwd"
            )));
        }
    };
    let gid = match group {
        None => primary,
        Some(g) => group_id(g, &groups)?,
    };
    let additional_gids = if name.is_empty() {
        Vec::new()
    } else {
        groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect()
    };
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nvideo:x:44:app\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn names_and_numbers_resolve() {
        let l = layer();
        let layers = vec![l.path().to_path_buf()];
        assert_eq!(
            resolve("app", &[], &layers).unwrap(),
            Identity {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 44]
            }
        );
        assert_eq!(resolve("app:video", &[], &layers).unwrap().gid, 44);
        assert_eq!(
            resolve("1000:5", &["video".into(), "1234".into()], &layers).unwrap(),
            Identity {
                uid: 1000,
                gid: 5,
                additional_gids: vec![5, 44, 1234]
            }
        );
        assert_eq!(resolve("4242", &[], &layers).unwrap().uid, 4242);
        assert!(resolve("nobody-here", &[], &layers).is_err());
        assert!(resolve("app:nogroup", &[], &layers).is_err());
        assert!(resolve("app", &["nogroup".into()], &layers).is_err());
        // Root keeps group 0 among its groups.
        assert_eq!(
            resolve("", &["10".into()], &layers).unwrap().additional_gids,
            vec![0, 10]
        );
    }

    #[test]
    fn a_symlinked_passwd_stays_inside_the_layer() {
        let l = layer();
        std::fs::remove_file(l.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", l.path().join("etc/passwd")).unwrap();
        // /etc/passwd resolves to the layer's own etc/passwd: itself, a loop, so nothing is read.
        assert!(resolve("root", &[], &[l.path().to_path_buf()]).is_err());
    }
}
