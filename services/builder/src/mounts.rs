//! `RUN --mount=...`: what each mount asks for, and cleaning up the empty
//! files and directories the runtime creates in the rootfs to mount on
//! (they are not part of what the step made, so they stay out of its layer).

use molde_common::errdefs::Error;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use molde_api::containerd::types::Mount;

/// How RUNs that run at once share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// All use it at once.
    Shared,
    /// One at a time; the others wait.
    Locked,
    /// One uses it; the others get a fresh, throwaway directory.
    Private,
}

/// One `--mount` of a RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMount {
    /// A directory kept between builds under its id (the target by default).
    Cache {
        target: String,
        id: String,
        mode: u32,
        uid: u32,
        gid: u32,
        read_only: bool,
        sharing: Sharing,
        /// What a new cache directory starts with: `source` in this stage
        /// or image.
        from: Option<String>,
        source: String,
    },
    /// A path of the context, or of a stage or image (`from`); read-only
    /// unless `rw` (then writes are thrown away).
    Bind {
        target: String,
        source: String,
        from: Option<String>,
        rw: bool,
    },
    Tmpfs {
        target: String,
        /// `size=` in bytes, when given.
        size: Option<u64>,
    },
    /// An SSH agent socket the client forwards (`molde build --ssh ID`), at
    /// `target` with SSH_AUTH_SOCK naming it.
    Ssh {
        id: String,
        target: String,
        required: bool,
    },
    /// A secret the client sent, as a read-only file at `target` ("" for
    /// none) and/or in the environment variable `env`.
    Secret {
        id: String,
        target: String,
        env: Option<String>,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl RunMount {
    pub fn target(&self) -> &str {
        match self {
            RunMount::Ssh { target, .. } => target,
            RunMount::Cache { target, .. }
            | RunMount::Bind { target, .. }
            | RunMount::Tmpfs { target, .. }
            | RunMount::Secret { target, .. } => target,
        }
    }
}

/// Parses one `--mount` value; relative targets are taken from `cwd`.
pub fn parse(spec: &str, cwd: &str) -> Result<RunMount, Error> {
    let mut kind = "bind".to_string();
    let mut fields: Vec<(String, Option<String>)> = Vec::new();
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_string())),
            None => (part.trim().to_ascii_lowercase(), None),
        };
        if k == "type" {
            kind = v.unwrap_or_default();
        } else {
            fields.push((k, v));
        }
    }
    let get = |names: &[&str]| {
        fields
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone().unwrap_or_else(|| "true".into()))
    };
    let flag = |names: &[&str]| get(names).is_some_and(|v| v != "false");
    let num = |name: &str, default: u32, radix: u32| -> Result<u32, Error> {
        match get(&[name]) {
            None => Ok(default),
            Some(v) => u32::from_str_radix(&v, radix)
                .map_err(|_| Error::InvalidArgument(format!("--mount {spec}: {name}={v} is not a number"))),
        }
    };
    let allowed: &[&str] = match kind.as_str() {
        "cache" => &[
            "target",
            "dst",
            "destination",
            "id",
            "sharing",
            "mode",
            "uid",
            "gid",
            "ro",
            "readonly",
            "from",
            "source",
            "src",
        ],
        "bind" => &[
            "target",
            "dst",
            "destination",
            "source",
            "src",
            "from",
            "rw",
            "readwrite",
            "ro",
            "readonly",
        ],
        "tmpfs" => &["target", "dst", "destination", "size"],
        "secret" => &[
            "id",
            "target",
            "dst",
            "destination",
            "required",
            "mode",
            "uid",
            "gid",
            "env",
        ],
        "ssh" => &[
            "id",
            "target",
            "dst",
            "destination",
            "required",
            "mode",
            "uid",
            "gid",
        ],
        other => {
            return Err(Error::InvalidArgument(format!(
                "--mount {spec}: unknown type {other:?} (expected bind, cache, tmpfs, secret or ssh)"
            )));
        }
    };
    if let Some((k, _)) = fields.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(Error::InvalidArgument(format!(
            "--mount {spec}: {k:?} is not an option of type={kind}"
        )));
    }
    let absolute = |t: String| {
        if t.starts_with('/') {
            t
        } else {
            format!("{}/{t}", cwd.trim_end_matches('/'))
        }
    };
    let target = get(&["target", "dst", "destination"]).map(absolute);
    let need_target = || {
        target
            .clone()
            .ok_or_else(|| Error::InvalidArgument(format!("--mount {spec}: a target is required")))
    };
    Ok(match kind.as_str() {
        "cache" => {
            let target = need_target()?;
            let from = get(&["from"]);
            let source = get(&["source", "src"]).unwrap_or_else(|| "/".into());
            if from.is_none() && source != "/" {
                return Err(Error::InvalidArgument(format!(
                    "--mount {spec}: source= needs from= (a stage or image)"
                )));
            }
            let sharing = match get(&["sharing"]).as_deref() {
                None | Some("shared") => Sharing::Shared,
                Some("locked") => Sharing::Locked,
                Some("private") => Sharing::Private,
                Some(s) => {
                    return Err(Error::InvalidArgument(format!(
                        "--mount {spec}: sharing={s}: expected shared, private or locked"
                    )));
                }
            };
            RunMount::Cache {
                id: get(&["id"]).unwrap_or_else(|| target.clone()),
                target,
                mode: num("mode", 0o755, 8)?,
                uid: num("uid", 0, 10)?,
                gid: num("gid", 0, 10)?,
                read_only: flag(&["ro", "readonly"]),
                sharing,
                from,
                source,
            }
        }
        "bind" => RunMount::Bind {
            target: need_target()?,
            source: get(&["source", "src"]).unwrap_or_else(|| "/".into()),
            from: get(&["from"]),
            rw: flag(&["rw", "readwrite"]),
        },
        "tmpfs" => RunMount::Tmpfs {
            target: need_target()?,
            size: match get(&["size"]) {
                None => None,
                Some(v) => Some(molde_common::parse_size(&v).ok_or_else(|| {
                    Error::InvalidArgument(format!("--mount {spec}: size={v} is not a size"))
                })?),
            },
        },
        "secret" => {
            let env = get(&["env"]);
            let id = get(&["id"])
                .or_else(|| {
                    target
                        .as_ref()
                        .and_then(|t| t.rsplit('/').next().map(str::to_string))
                })
                .filter(|i| !i.is_empty())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("--mount {spec}: a secret needs an id or a target"))
                })?;
            // With env= alone the secret is no file.
            let file = match (&target, &env) {
                (Some(t), _) => t.clone(),
                (None, Some(_)) => String::new(),
                (None, None) => format!("/run/secrets/{id}"),
            };
            RunMount::Secret {
                target: file,
                env,
                id,
                required: flag(&["required"]),
                mode: num("mode", 0o400, 8)?,
                uid: num("uid", 0, 10)?,
                gid: num("gid", 0, 10)?,
            }
        }
        "ssh" => RunMount::Ssh {
            id: get(&["id"]).unwrap_or_else(|| "default".into()),
            target: target
                .clone()
                .unwrap_or_else(|| "/run/buildkit/ssh_agent.0".into()),
            required: flag(&["required"]),
        },
        _ => unreachable!("kinds are checked above"),
    })
}

/// The upper (writable) directory and the lower directories of an active
/// snapshot's mount.
fn layers(mounts: &[Mount]) -> Option<(PathBuf, Vec<PathBuf>)> {
    let m = mounts.first()?;
    match m.r#type.as_str() {
        "bind" | "rbind" => Some((PathBuf::from(&m.source), Vec::new())),
        "overlay" => {
            let opt = |name: &str| {
                m.options
                    .iter()
                    .find_map(|o| o.strip_prefix(name).map(str::to_string))
            };
            let upper = PathBuf::from(opt("upperdir=")?);
            let lower = opt("lowerdir=")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default();
            Some((upper, lower))
        }
        _ => None,
    }
}

/// Removes from the snapshot's upper directory the mount points the
/// runtime created for `targets`: an empty file or directory at the target
/// and the empty directories above it, where no lower layer has them.
pub fn remove_stubs(mounts: &[Mount], targets: &[String]) {
    let Some((upper, lower)) = layers(mounts) else {
        return;
    };
    let in_lower = |rel: &Path| lower.iter().any(|l| fs::symlink_metadata(l.join(rel)).is_ok());
    for t in targets {
        let mut rel = PathBuf::from(t.trim_start_matches('/'));
        while !rel.as_os_str().is_empty() {
            if in_lower(&rel) {
                break;
            }
            let p = upper.join(&rel);
            let Ok(md) = fs::symlink_metadata(&p) else {
                break;
            };
            let removed = if md.is_dir() {
                fs::remove_dir(&p).is_ok()
            } else {
                md.is_file() && md.size() == 0 && fs::remove_file(&p).is_ok()
            };
            if !removed {
                break;
            }
            rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        assert_eq!(
            parse("type=cache,target=/root/.cache", "/").unwrap(),
            RunMount::Cache {
                target: "/root/.cache".into(),
                id: "/root/.cache".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                read_only: false,
                sharing: Sharing::Shared,
                from: None,
                source: "/".into()
            }
        );
        assert_eq!(
            parse("target=src,source=app", "/work").unwrap(),
            RunMount::Bind {
                target: "/work/src".into(),
                source: "app".into(),
                from: None,
                rw: false
            }
        );
        assert_eq!(
            parse("type=secret,id=tok", "/").unwrap().target(),
            "/run/secrets/tok"
        );
        assert_eq!(
            parse("type=tmpfs,dst=/t,size=1m", "/").unwrap(),
            RunMount::Tmpfs {
                target: "/t".into(),
                size: Some(1 << 20)
            }
        );
        assert!(
            parse("type=cache", "/")
                .unwrap_err()
                .to_string()
                .contains("target is required")
        );
        assert!(
            parse("type=nfs,target=/x", "/")
                .unwrap_err()
                .to_string()
                .contains("unknown type")
        );
        assert!(
            parse("type=tmpfs,target=/x,uid=3", "/")
                .unwrap_err()
                .to_string()
                .contains("\"uid\"")
        );
        assert_eq!(
            parse("type=ssh", "/").unwrap(),
            RunMount::Ssh {
                id: "default".into(),
                target: "/run/buildkit/ssh_agent.0".into(),
                required: false
            }
        );
        assert_eq!(parse("type=secret,id=t,env=TOKEN", "/").unwrap().target(), "");
        assert!(
            parse("type=cache,target=/c,source=/x", "/")
                .unwrap_err()
                .to_string()
                .contains("needs from=")
        );
        assert!(
            parse("type=cache,target=/c,mode=9z", "/")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }

    #[test]
    fn stubs_go_but_content_stays() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        fs::create_dir_all(upper.join("run/secrets")).unwrap();
        fs::write(upper.join("run/secrets/tok"), "").unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::write(upper.join("etc/motd"), "hi").unwrap();
        fs::create_dir_all(upper.join("cache/keep")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        let mounts = vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lower.display()),
            ],
        }];
        remove_stubs(
            &mounts,
            &["/run/secrets/tok".into(), "/etc/hosts".into(), "/cache".into()],
        );
        assert!(!upper.join("run").exists());
        assert!(!upper.join("etc/hosts").exists());
        assert!(upper.join("etc/motd").exists());
        // Not empty: something the step made, kept.
        assert!(upper.join("cache/keep").exists());
    }
}
