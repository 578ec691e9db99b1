//! Volumes: directories molded keeps for containers' data, docker's `local`
//! driver. Volume NAME is `<volumes>/NAME/_data`, and what docker keeps of
//! it (driver, labels, creation time, anonymous or not) is its
//! `<volumes>/NAME/volume.json`, written when it is created (a volume
//! made by a run's `-v NAME:/path` is created then). Which containers use a
//! volume is read from their records, so it is never out of date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use molde_common::errdefs::Error;
use serde::{Deserialize, Serialize};

pub const DRIVER: &str = "local";

/// A volume as `molde volume inspect` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// Made for an image's VOLUME or a `-v /path` without a name: removed
    /// with its container by `rm -v` (and `run --rm`).
    #[serde(default)]
    pub anonymous: bool,
}

/// docker's rule for volume names: a letter or digit, then letters, digits
/// and `_.-`.
pub fn check_name(name: &str) -> Result<(), Error> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "volume name {name:?}: use letters, digits and _.- (starting with a letter or digit)"
        )))
    }
}

/// The volumes under one directory.
#[derive(Debug, Clone)]
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn new(root: impl Into<PathBuf>) -> Volumes {
        Volumes { root: root.into() }
    }

    /// Where the volume's data is.
    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.root.join(name).join("volume.json")
    }

    /// Creates the volume, or returns it as it is when it exists (as
    /// docker's `volume create` of an existing name does). Returns whether
    /// it was made now.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(Volume, bool), Error> {
        check_name(name)?;
        if let Some(v) = self.get(name)? {
            return Ok((v, false));
        }
        let v = Volume {
            name: name.to_string(),
            driver: DRIVER.into(),
            labels,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            anonymous,
        };
        let data = self.data(name);
        std::fs::create_dir_all(&data).map_err(Error::io(format!("creating volume {name}")))?;
        // Root's only, as docker keeps /var/lib/docker/volumes; what is in
        // _data is the containers' to decide.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.root.join(name), std::fs::Permissions::from_mode(0o700))
            .map_err(Error::io(format!("creating volume {name}")))?;
        let json = serde_json::to_vec_pretty(&v).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = self.meta(name).with_extension("json.tmp");
        std::fs::write(&tmp, &json)
            .and_then(|()| std::fs::rename(&tmp, self.meta(name)))
            .map_err(Error::io(format!("writing volume {name}'s record")))?;
        Ok((v, true))
    }

    /// The volume named `name`, if there is one. A directory with data but
    /// no record (made before records were kept) is a volume too.
    pub fn get(&self, name: &str) -> Result<Option<Volume>, Error> {
        check_name(name)?;
        match std::fs::read(self.meta(name)) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    key: self.meta(name).display().to_string(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !self.data(name).is_dir() {
                    return Ok(None);
                }
                let created_at = std::fs::metadata(self.data(name))
                    .and_then(|m| m.created().or_else(|_| m.modified()))
                    .map(|t| {
                        chrono::DateTime::<chrono::Utc>::from(t)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    })
                    .unwrap_or_default();
                Ok(Some(Volume {
                    name: name.to_string(),
                    driver: DRIVER.into(),
                    labels: BTreeMap::new(),
                    created_at,
                    anonymous: false,
                }))
            }
            Err(e) => Err(Error::io(format!("reading volume {name}'s record"))(e)),
        }
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>, Error> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing volumes")(e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_name(&name).is_err() {
                continue;
            }
            if let Some(v) = self.get(&name)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the volume and its data; NotFound when there is none.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        if self.get(name)?.is_none() {
            return Err(Error::NotFound(format!("volume {name:?}")));
        }
        std::fs::remove_dir_all(self.root.join(name)).map_err(Error::io(format!("removing volume {name}")))
    }

    /// Bytes the volume's data takes (what `system df` reports).
    pub fn size(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data(name))
    }
}

/// Copies what the image has at a volume's mount point into the empty
/// volume, as docker does on a volume's first use: owners, modes and
/// links kept. `from` is the directory (opened safely by the caller, so it
/// is followed); below it nothing is followed (links are copied as links).
pub fn populate(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(from)?;
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut copied = 0;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let m = std::fs::symlink_metadata(&src)?;
        let t = m.file_type();
        if t.is_dir() {
            std::fs::create_dir(&dst)?;
            copied += populate(&src, &dst)?;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if t.is_file() {
            std::fs::copy(&src, &dst)?;
            copied += 1;
        } else {
            continue; // devices, sockets and FIFOs are not data
        }
        std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()))?;
        if !t.is_symlink() {
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_once_listed_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let v = Volumes::new(d.path());
        let labels: BTreeMap<String, String> = [("team".to_string(), "db".to_string())].into();
        let (made, new) = v.create("data", labels.clone(), false).unwrap();
        assert!(new);
        assert_eq!(made.labels, labels);
        let (again, new) = v.create("data", BTreeMap::new(), false).unwrap();
        assert!(!new);
        assert_eq!(again, made, "an existing volume is returned as it is");
        std::fs::create_dir_all(d.path().join("old/_data")).unwrap();
        let names: Vec<String> = v.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["data", "old"], "a volume without a record is listed too");
        assert!(v.create("-bad", BTreeMap::new(), false).is_err());
        assert!(v.create("a/b", BTreeMap::new(), false).is_err());
        v.remove("data").unwrap();
        assert!(v.remove("data").unwrap_err().is_not_found());
    }

    #[test]
    fn population_keeps_owners_modes_and_links() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("image/var/lib/app");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("sub/f"), "x").unwrap();
        std::fs::set_permissions(from.join("sub/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::lchown(from.join("sub/f"), Some(1000), Some(1001)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", from.join("link")).unwrap();
        let to = d.path().join("vol");
        std::fs::create_dir(&to).unwrap();
        assert_eq!(populate(&from, &to).unwrap(), 1);
        let m = std::fs::metadata(to.join("sub/f")).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o640));
        assert_eq!(
            std::fs::read_link(to.join("link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(populate(&d.path().join("nothing"), &to).unwrap_or(0), 0);
    }
}
