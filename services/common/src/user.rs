//! `user[:group]` against an image's /etc/passwd and /etc/group: the one
//! rule `molde run -u`, the image's `User`, CRI's `runAsUser` /
//! `runAsUsername` and the builder's `USER` follow, as runc and containerd
//! do:
//!
//! - a number is a uid (a gid after the colon), never a name: `1000` is the
//!   passwd entry with uid 1000, if any, and uid 1000 with gid 0 if none;
//! - a name must be in the image's file, else the request is refused;
//! - the supplementary groups are the process's own group first, then the
//!   groups that list the user as a member, then the extra ones asked for
//!   (`--group-add`, supplemental groups), each once, in that order.
//!
//! Only texts come in: reading the files (from layers, a view) is the
//! caller's, so every path resolves them in its own root.

use crate::errdefs::Error;

/// A user found in an image: uid, primary gid, name (empty when the uid has
/// no passwd entry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// The identity a container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first, then memberships, then extra groups.
    pub additional_gids: Vec<u32>,
}

fn fields(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().map(|l| l.split(':').collect::<Vec<_>>())
}

/// `user[:group]`; empty is root.
pub fn lookup(passwd: &str, group: &str, spec: &str) -> Result<User, Error> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(n) => fields(passwd).find(|f| f.len() >= 4 && f[2].parse() == Ok(n)),
        Err(_) => Some(
            fields(passwd)
                .find(|f| f.len() >= 4 && f[0] == u)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
                })?,
        ),
    };
    let mut user = match (&entry, u.parse::<u32>()) {
        (Some(f), _) => User {
            uid: f[2].parse().map_err(|_| {
                Error::FailedPrecondition(format!("user {u:?}: bad uid in the image's /etc/passwd"))
            })?,
            gid: f[3].parse().unwrap_or(0),
            name: f[0].to_string(),
        },
        (None, Ok(n)) => User {
            uid: n,
            ..User::default()
        },
        (None, Err(_)) => unreachable!("a name without an entry was refused above"),
    };
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        user.gid = group_id(group, g)?;
    }
    Ok(user)
}

/// A group by number, or by name in an /etc/group text.
pub fn group_id(group: &str, g: &str) -> Result<u32, Error> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    fields(group)
        .find(|f| f.len() >= 3 && f[0] == g)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| Error::InvalidArgument(format!("group {g:?} is not in the image's /etc/group")))
}

/// The groups of an /etc/group text that list `name` as a member.
pub fn member_of(group: &str, name: &str) -> Vec<u32> {
    if name.is_empty() {
        return Vec::new();
    }
    fields(group)
        .filter(|f| f.len() >= 4 && f[3].split(',').any(|m| m == name))
        .filter_map(|f| f[2].parse().ok())
        .collect()
}

/// The whole identity: the user, its groups and `extra` (names or numbers).
pub fn identity(passwd: &str, group: &str, spec: &str, extra: &[String]) -> Result<Identity, Error> {
    let user = lookup(passwd, group, spec)?;
    let mut gids = vec![user.gid];
    gids.extend(member_of(group, &user.name));
    for g in extra {
        gids.push(group_id(group, g)?);
    }
    Ok(Identity {
        uid: user.uid,
        gid: user.gid,
        additional_gids: dedup(gids),
    })
}

/// Each gid once, first place kept.
pub fn dedup(gids: Vec<u32>) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    gids.into_iter().filter(|g| seen.insert(*g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n\
                          1000:x:2000:2000::/:/bin/sh\nwww-data:x:33:34::/var/www:/bin/false\nbad:line\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nvideo:x:44:app\nstaff:x:50:app,bob\n";

    fn id(spec: &str, extra: &[&str]) -> Result<Identity, Error> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        identity(PASSWD, GROUP, spec, &extra)
    }

    #[test]
    fn names_and_numbers_resolve_as_runc_does() {
        assert_eq!(
            id("app", &[]).unwrap(),
            Identity {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 44, 50]
            }
        );
        // A number is a uid, even where a user is named by that number.
        assert_eq!(lookup(PASSWD, GROUP, "1000").unwrap().name, "app");
        assert_eq!(
            lookup(PASSWD, GROUP, "www-data").unwrap(),
            User {
                uid: 33,
                gid: 34,
                name: "www-data".into()
            }
        );
        assert_eq!(id("app:video", &[]).unwrap().gid, 44);
        assert_eq!(
            id("1000:5", &["video", "1234"]).unwrap().additional_gids,
            vec![5, 44, 50, 1234]
        );
        assert_eq!(
            id("4242", &[]).unwrap(),
            Identity {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        assert_eq!(id("4242:7", &[]).unwrap().gid, 7);
    }

    #[test]
    fn root_keeps_group_0_and_extras_follow() {
        assert_eq!(id("", &["10"]).unwrap().additional_gids, vec![0, 10]);
        assert_eq!(
            id("1000:1001", &["10", "1234"]).unwrap().additional_gids,
            vec![1001, 44, 50, 10, 1234]
        );
    }

    #[test]
    fn unknown_names_are_refused_naming_them() {
        for (spec, extra, word) in [
            ("nobody-here", &[][..], "nobody-here"),
            ("app:nogroup", &[], "nogroup"),
            ("app", &["nogroup"], "nogroup"),
        ] {
            let e = id(spec, extra).unwrap_err();
            assert_eq!(e.kind(), crate::errdefs::Kind::InvalidArgument);
            assert!(e.to_string().contains(word), "{e}");
        }
    }
}
