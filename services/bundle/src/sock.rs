//! Unix socket paths of any length. A socket's path must fit in `sun_path`
//! (108 bytes) to bind or connect, and a bundle's sockets
//! (`<state>/runtime/<ns>/<64-hex id>/exec/<id>.sock`) may not. A long one is
//! reached through its directory, held open: `/proc/<pid>/fd/<fd>/<name>`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Paths at least this long are reached through their directory.
const LONG: usize = 100;

/// A path a socket can be bound or connected at; keep it until done.
pub struct Reachable {
    _dir: Option<File>,
    path: PathBuf,
}

impl Reachable {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub fn reachable(path: &Path) -> std::io::Result<Reachable> {
    if path.as_os_str().len() < LONG {
        return Ok(Reachable {
            _dir: None,
            path: path.to_path_buf(),
        });
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("socket path {}", path.display()),
        ));
    };
    let dir = File::open(parent)?;
    let short = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), dir.as_raw_fd())).join(name);
    Ok(Reachable {
        _dir: Some(dir),
        path: short,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_deep_in_a_tree_binds_and_connects() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x".repeat(60)).join("y".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("attach.sock");
        assert!(
            std::os::unix::net::UnixListener::bind(&path).is_err(),
            "too long for sun_path"
        );
        let r = reachable(&path).unwrap();
        let l = std::os::unix::net::UnixListener::bind(r.path()).unwrap();
        assert!(path.exists());
        let c = reachable(&path).unwrap();
        std::os::unix::net::UnixStream::connect(c.path()).unwrap();
        drop(l);
    }
}
