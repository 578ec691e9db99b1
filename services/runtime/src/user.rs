//! `-u user[:group]`: names resolved through the image's /etc/passwd and
//! /etc/group, read from the rootfs layers without mounting them, and never
//! outside them (symlinks resolve inside each layer).

use molde_common::errdefs::Error;
use std::io::Read;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, ResolveFlags};

pub use molde_common::user::Identity;

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

/// Resolves `spec` (`user[:group]`, names or numbers; empty is root) and
/// `extra` groups (`--group-add`) by the rule of `molde_common::user`,
/// against the image's /etc/passwd and /etc/group.
pub fn resolve(spec: &str, extra: &[String], layers: &[PathBuf]) -> Result<Identity, Error> {
    let passwd = read_in_layers(layers, "etc/passwd").unwrap_or_default();
    let group = read_in_layers(layers, "etc/group").unwrap_or_default();
    molde_common::user::identity(&passwd, &group, spec, extra)
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
    fn the_image_files_are_read_from_the_top_layer_that_has_them() {
        let l = layer();
        let bottom = layer();
        std::fs::write(bottom.path().join("etc/passwd"), "app:x:7:7::/:/bin/sh\n").unwrap();
        let who = resolve(
            "app",
            &["video".into()],
            &[l.path().to_path_buf(), bottom.path().to_path_buf()],
        )
        .unwrap();
        assert_eq!((who.uid, who.gid), (1000, 1000));
        assert_eq!(who.additional_gids, vec![1000, 44]);
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
