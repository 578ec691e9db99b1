//! Cache keys. A step's key digests its parent's key, the instruction after
//! expansion and the build args it can see; a COPY or ADD also digests its
//! sources from the context: each path, its type, mode, owner, size, content
//! and link target — never a timestamp, so touching a file changes nothing
//! and editing one changes the keys of its COPY and what follows. Keys are
//! plain sha256 digests with no machine in them, so a cluster can share them.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ignore::{Ignore, glob};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}: the source is outside the build context")]
    Outside(String),
    #[error("{0}: no such file or directory in the build context")]
    NotFound(String),
    #[error(
        "{src}: a symbolic link to {target}, which leads outside the build context \
         (links in the context are followed inside it only)"
    )]
    LinkOutside { src: String, target: String },
    #[error("{0}: excluded by .dockerignore")]
    Ignored(String),
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
}

/// The key of a step: its parent's key, the expanded instruction, the build
/// args it sees (sorted by the caller or not: they are sorted here), and the
/// digest of its inputs, if any.
pub fn step_key(parent: &str, instruction: &str, args: &[(String, String)], inputs: Option<&str>) -> String {
    let mut args: Vec<&(String, String)> = args.iter().collect();
    args.sort();
    let mut h = Sha256::new();
    // Length-prefixed fields: no two different steps write the same bytes.
    for field in [parent, instruction] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update((args.len() as u64).to_be_bytes());
    for (k, v) in args {
        for f in [k, v] {
            h.update((f.len() as u64).to_be_bytes());
            h.update(f.as_bytes());
        }
    }
    let inputs = inputs.unwrap_or("");
    h.update((inputs.len() as u64).to_be_bytes());
    h.update(inputs.as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The context paths (relative, `/`-separated) that COPY/ADD sources name:
/// globs expanded, `..` that would leave the context refused, ignored paths
/// left out. A source that names nothing is an error.
pub fn resolve_sources(root: &Path, srcs: &[String], ignore: &Ignore) -> Result<Vec<String>, SourceError> {
    let mut out = Vec::new();
    for src in srcs {
        let mut parts: Vec<&str> = Vec::new();
        for c in Path::new(src).components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(SourceError::Outside(src.clone()));
                    }
                }
                Component::Normal(n) => parts.push(n.to_str().unwrap_or("")),
            }
        }
        // Expand globs component by component.
        let mut found: Vec<String> = vec![String::new()];
        for part in &parts {
            let mut next = Vec::new();
            for base in &found {
                let has_glob = part.contains(['*', '?', '[']);
                if !has_glob {
                    next.push(join(base, part));
                    continue;
                }
                let dir = root.join(base);
                let Ok(entries) = fs::read_dir(&dir) else { continue };
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob(part, n))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(base, n)));
            }
            found = next;
        }
        let before = out.len();
        let mut ignored = false;
        for rel in found {
            let Ok(md) = fs::symlink_metadata(root.join(&rel)) else {
                continue;
            };
            if md.file_type().is_symlink() {
                check_link(root, &rel)?;
            }
            if !rel.is_empty() && ignore.excluded(&rel) {
                ignored = true;
                continue;
            }
            out.push(rel);
        }
        if out.len() == before {
            return Err(if ignored {
                SourceError::Ignored(src.clone())
            } else {
                SourceError::NotFound(src.clone())
            });
        }
    }
    Ok(out)
}

/// A source that is a symbolic link is followed inside the context; one
/// whose target is not there because it points out of the context is
/// refused with that reason, not as a missing file.
fn check_link(root: &Path, rel: &str) -> Result<(), SourceError> {
    let inside = crate::scope::scoped(root, rel, true).map_err(|e| SourceError::Io {
        path: rel.to_string(),
        err: std::io::Error::other(e),
    })?;
    if fs::symlink_metadata(&inside).is_ok() {
        return Ok(());
    }
    let target = fs::read_link(root.join(rel)).unwrap_or_default();
    let from_root = Path::new(rel).parent().unwrap_or(Path::new("")).join(&target);
    if crate::scope::escapes(&from_root) {
        return Err(SourceError::LinkOutside {
            src: rel.to_string(),
            target: target.display().to_string(),
        });
    }
    Ok(())
}

fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

/// Digests what `paths` (from `resolve_sources`) hold: every file and
/// directory under them not excluded, in a stable order.
pub fn digest_sources(root: &Path, paths: &[String], ignore: &Ignore) -> Result<String, SourceError> {
    let mut h = Sha256::new();
    for p in paths {
        h.update(b"source\0");
        h.update(p.as_bytes());
        h.update(b"\0");
        walk(root, p, ignore, &mut h)?;
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

fn walk(root: &Path, rel: &str, ignore: &Ignore, h: &mut Sha256) -> Result<(), SourceError> {
    let path: PathBuf = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let io = |err| SourceError::Io {
        path: rel.to_string(),
        err,
    };
    let md = fs::symlink_metadata(&path).map_err(io)?;
    h.update(rel.as_bytes());
    h.update(b"\0");
    h.update(md.mode().to_be_bytes());
    h.update(md.uid().to_be_bytes());
    h.update(md.gid().to_be_bytes());
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(&path).map_err(io)?;
        h.update(b"L");
        h.update(target.as_os_str().as_encoded_bytes());
    } else if ft.is_file() {
        h.update(b"F");
        h.update(md.len().to_be_bytes());
        let mut f = fs::File::open(&path).map_err(io)?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if ft.is_dir() {
        h.update(b"D");
        let mut names: Vec<String> = fs::read_dir(&path)
            .map_err(io)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let child = join(rel, &n);
            if ignore.excluded(&child) {
                continue;
            }
            walk(root, &child, ignore, h)?;
        }
        h.update(b"d");
    } else {
        // Devices, fifos, sockets: their kind and number.
        h.update(b"S");
        h.update(md.rdev().to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn context() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("src/deep")).unwrap();
        fs::write(r.join("src/main.rs"), "fn main() {}\n").unwrap();
        fs::write(r.join("src/deep/lib.rs"), "// lib\n").unwrap();
        fs::write(r.join("a.txt"), "a").unwrap();
        fs::write(r.join("b.txt"), "b").unwrap();
        fs::write(r.join("notes.md"), "n").unwrap();
        fs::write(r.join("secret.key"), "k").unwrap();
        std::os::unix::fs::symlink("a.txt", r.join("link")).unwrap();
        d
    }

    fn key(root: &Path, srcs: &[&str], ignore: &Ignore) -> String {
        let srcs: Vec<String> = srcs.iter().map(|s| s.to_string()).collect();
        let paths = resolve_sources(root, &srcs, ignore).unwrap();
        digest_sources(root, &paths, ignore).unwrap()
    }

    #[test]
    fn sources_resolve_with_globs_and_stay_inside() {
        let d = context();
        let none = Ignore::default();
        let r = |s: &[&str]| {
            resolve_sources(
                d.path(),
                &s.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                &none,
            )
        };
        assert_eq!(r(&["*.txt"]).unwrap(), vec!["a.txt", "b.txt"]);
        assert_eq!(r(&["./src/../a.txt", "/b.txt"]).unwrap(), vec!["a.txt", "b.txt"]);
        assert_eq!(r(&["src/*/lib.rs"]).unwrap(), vec!["src/deep/lib.rs"]);
        assert_eq!(r(&["."]).unwrap(), vec![""]);
        let e = r(&["../outside"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "../outside: the source is outside the build context"
        );
        assert!(matches!(
            r(&["src/../../etc/passwd"]),
            Err(SourceError::Outside(_))
        ));
        assert_eq!(
            r(&["missing.txt"]).unwrap_err().to_string(),
            "missing.txt: no such file or directory in the build context"
        );
        assert!(matches!(r(&["*.none"]), Err(SourceError::NotFound(_))));
        let ig = Ignore::parse("secret.key\n");
        let e = resolve_sources(d.path(), &["secret.key".to_string()], &ig).unwrap_err();
        assert!(matches!(e, SourceError::Ignored(_)), "{e}");
    }

    #[test]
    fn content_mode_and_links_count_but_mtimes_do_not() {
        let d = context();
        let root = d.path();
        let ig = Ignore::parse("*.md\n");
        let k0 = key(root, &["."], &ig);
        assert_eq!(key(root, &["."], &ig), k0, "stable");

        // Only the modification time changes: same key.
        let f = fs::File::options()
            .write(true)
            .open(root.join("src/main.rs"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345))
            .unwrap();
        drop(f);
        assert_eq!(key(root, &["."], &ig), k0, "touching a file changes nothing");

        // An ignored file's content does not count.
        fs::write(root.join("notes.md"), "changed").unwrap();
        assert_eq!(key(root, &["."], &ig), k0);

        fs::write(root.join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
        let k1 = key(root, &["."], &ig);
        assert_ne!(k1, k0, "content counts");
        let k_a = key(root, &["a.txt"], &ig);
        assert_eq!(
            key(root, &["a.txt"], &ig),
            k_a,
            "a COPY of other files keeps its key"
        );

        fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(key(root, &["a.txt"], &ig), k_a, "mode counts");

        let k2 = key(root, &["."], &ig);
        fs::remove_file(root.join("link")).unwrap();
        std::os::unix::fs::symlink("b.txt", root.join("link")).unwrap();
        assert_ne!(key(root, &["."], &ig), k2, "a link's target counts");
    }

    #[test]
    fn step_keys_chain() {
        let a = step_key("", "FROM busybox@sha256:00", &[], None);
        let b = step_key(&a, "RUN make", &[("MODE".into(), "1".into())], None);
        assert_ne!(b, step_key(&a, "RUN make", &[("MODE".into(), "2".into())], None));
        assert_ne!(
            b,
            step_key("other", "RUN make", &[("MODE".into(), "1".into())], None)
        );
        assert_eq!(
            step_key(
                &a,
                "RUN make",
                &[("X".into(), "1".into()), ("Y".into(), "2".into())],
                None
            ),
            step_key(
                &a,
                "RUN make",
                &[("Y".into(), "2".into()), ("X".into(), "1".into())],
                None
            ),
            "args in any order"
        );
        assert_ne!(
            step_key(&a, "COPY . /", &[], Some("sha256:1")),
            step_key(&a, "COPY . /", &[], Some("sha256:2"))
        );
        // Field boundaries matter: ("ab", "c") is not ("a", "bc").
        assert_ne!(step_key("ab", "c", &[], None), step_key("a", "bc", &[], None));
        assert!(b.starts_with("sha256:") && b.len() == 71);
    }
}
