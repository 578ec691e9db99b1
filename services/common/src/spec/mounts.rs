//! The mounts every container gets besides the runtime spec's defaults
//! (`/proc`, `/dev`, `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys`,
//! `/sys/fs/cgroup`): its `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf` bound from files molde writes, and what
//! `--privileged` (a privileged pod) lifts.

use std::path::Path;

use oci_spec::runtime::{Mount, Spec};

/// A bind mount of `src` at `dst`.
pub fn bind(dst: &str, src: &Path, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dst.into());
    m.set_typ(Some("bind".into()));
    m.set_source(Some(src.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// The files under `/etc` a container's name and network live in, by their
/// names in the directory molde writes them to.
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Binds of [`ETC_FILES`] from `dir`, skipping any destination `taken`
/// (a mount the request makes there itself wins), read-only when the
/// container's root is.
pub fn etc_files(dir: &Path, readonly: bool, taken: impl Fn(&str) -> bool) -> Vec<Mount> {
    let mode = if readonly { "ro" } else { "rw" };
    ETC_FILES
        .iter()
        .map(|name| (format!("/etc/{name}"), dir.join(name)))
        .filter(|(dst, _)| !taken(dst))
        .map(|(dst, src)| bind(&dst, &src, &["rbind", "rprivate", mode]))
        .collect()
}

/// What a privileged container gets, as docker and containerd give it:
/// `/sys` and `/sys/fs/cgroup` writable, no masked or read-only paths.
pub fn unconfine(spec: &mut Spec) {
    if let Some(mounts) = spec.mounts_mut() {
        for m in mounts.iter_mut() {
            if m.destination() == Path::new("/sys") || m.destination() == Path::new("/sys/fs/cgroup") {
                let opts = m.options().clone().unwrap_or_default();
                m.set_options(Some(opts.into_iter().filter(|o| o != "ro").collect()));
            }
        }
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(spec: &Spec, dst: &str) -> Vec<String> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dst))
            .and_then(|m| m.options().clone())
            .unwrap()
    }

    #[test]
    fn etc_files_bind_from_the_directory_and_yield_to_the_request() {
        let m = etc_files(Path::new("/b/etc"), true, |d| d == "/etc/hosts");
        let got: Vec<(String, String)> = m
            .iter()
            .map(|m| {
                (
                    m.destination().display().to_string(),
                    m.source().as_ref().unwrap().display().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/etc/hostname".to_string(), "/b/etc/hostname".to_string()),
                ("/etc/resolv.conf".to_string(), "/b/etc/resolv.conf".to_string())
            ]
        );
        assert!(
            m.iter()
                .all(|m| m.options().as_ref().unwrap().contains(&"ro".into()))
        );
    }

    #[test]
    fn privileged_lifts_sys_and_the_masks() {
        let mut spec = Spec::default();
        assert!(options(&spec, "/sys").contains(&"ro".into()));
        assert!(
            !spec
                .linux()
                .as_ref()
                .unwrap()
                .masked_paths()
                .as_ref()
                .unwrap()
                .is_empty()
        );
        unconfine(&mut spec);
        assert!(!options(&spec, "/sys").contains(&"ro".into()));
        assert!(!options(&spec, "/sys/fs/cgroup").contains(&"ro".into()));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
        assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
    }
}
