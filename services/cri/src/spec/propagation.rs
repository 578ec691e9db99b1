//! Mount propagation a container asks for must be one the host's mount
//! allows: a Bidirectional mount propagates nothing unless the host path is
//! on a shared mount, a HostToContainer one unless it is on a shared or
//! slave mount. containerd refuses such a request rather than run the
//! container without what it asked for; so does molde.

use std::path::Path;

use molde_common::errdefs::Error;

/// The mount point a path is on, and its propagation fields (`shared:N`,
/// `master:N`), from a mountinfo text.
fn mount_of<'a>(mountinfo: &'a str, path: &Path) -> Option<(&'a str, Vec<&'a str>)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, _) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let point = *f.get(4)?;
            Some((point, f.get(6..).map(|o| o.to_vec()).unwrap_or_default()))
        })
        .filter(|(point, _)| path.starts_with(point))
        // The last of the longest: mounts stacked on one point, topmost last.
        .fold(None, |best: Option<(&str, Vec<&str>)>, m| match &best {
            Some((p, _)) if p.len() > m.0.len() => best,
            _ => Some(m),
        })
}

/// Refuses `propagation` ("shared" for Bidirectional, "slave" for
/// HostToContainer) on `host_path` when its mount cannot carry it.
pub(super) fn check(host_path: &Path, propagation: &str) -> Result<(), Error> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::Internal(format!("reading /proc/self/mountinfo: {e}")))?;
    let path = host_path
        .canonicalize()
        .unwrap_or_else(|_| host_path.to_path_buf());
    check_in(&info, &path, propagation)
}

fn check_in(mountinfo: &str, path: &Path, propagation: &str) -> Result<(), Error> {
    let Some((point, fields)) = mount_of(mountinfo, path) else {
        return Ok(());
    };
    let shared = fields.iter().any(|f| f.starts_with("shared:"));
    let slave = fields.iter().any(|f| f.starts_with("master:"));
    let (ok, needs, mode) = match propagation {
        "shared" => (shared, "a shared mount", "Bidirectional"),
        _ => (shared || slave, "a shared or slave mount", "HostToContainer"),
    };
    if ok {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "mount {}: {mode} propagation needs {needs}, and {} is on {point}, which is neither \
         (mount --make-rshared {point} on the host)",
        path.display(),
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /var/lib/kubelet rw,relatime shared:12 - tmpfs tmpfs rw
31 22 0:41 / /mnt/slave rw,relatime master:3 - tmpfs tmpfs rw
32 30 0:42 / /var/lib/kubelet/private rw,relatime - tmpfs tmpfs rw";

    #[test]
    fn propagation_needs_a_mount_that_carries_it() {
        let p = |s: &str| Path::new(s).to_path_buf();
        assert!(check_in(INFO, &p("/var/lib/kubelet/pods/x"), "shared").is_ok());
        assert!(check_in(INFO, &p("/mnt/slave/x"), "slave").is_ok());
        let e = check_in(INFO, &p("/mnt/slave/x"), "shared")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Bidirectional") && e.contains("/mnt/slave"), "{e}");
        // The deepest mount decides: a private mount inside a shared one.
        let e = check_in(INFO, &p("/var/lib/kubelet/private/y"), "shared")
            .unwrap_err()
            .to_string();
        assert!(e.contains("on /var/lib/kubelet/private"), "{e}");
        assert!(check_in(INFO, &p("/srv/data"), "slave").is_err());
    }
}
