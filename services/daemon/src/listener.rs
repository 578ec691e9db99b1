//! The daemon's unix socket: one live molded per socket, mode 0660.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;

/// Keeps a second daemon off the socket while alive; removes the socket file when dropped.
pub struct SocketGuard {
    path: PathBuf,
    _lock: Flock<File>,
}

/// Binds `path`. Refuses when another live molded serves it; removes a stale
/// socket file left by a daemon that died.
pub fn bind(path: &Path) -> anyhow::Result<(UnixListener, SocketGuard)> {
    if let Some(dir) = path.parent() {
        // Others may reach the socket (its own mode decides), not list beside it.
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o711)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let lock_path = path.with_extension("sock.lock");
    let lock_file = std::os::unix::fs::OpenOptionsExt::mode(
        File::options().create(true).truncate(false).write(true),
        0o600,
    )
    .open(&lock_path)
    .with_context(|| format!("opening {}", lock_path.display()))?;
    let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, errno)) => bail!(
            "another molded is serving {} (lock {} is held: {errno}); stop it first or choose another --address",
            path.display(),
            lock_path.display()
        ),
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another process is listening on {}; stop it first or choose another --address",
                path.display()
            );
        }
        fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    Ok((
        listener,
        SocketGuard {
            path: path.to_path_buf(),
            _lock: lock,
        },
    ))
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Gives the socket at `path` to group `gid` (its mode is 0660 already), so
/// that group's members can use it as root can.
pub fn share_with_group(path: &Path, gid: u32) -> anyhow::Result<()> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        .with_context(|| format!("giving {} to group {gid} ([grpc] gid)", path.display()))
}
