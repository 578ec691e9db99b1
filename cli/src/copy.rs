//! `molde cp CONTAINER:PATH DEST|-`, `molde export`, `molde diff`: a
//! container's files, read by molded as a tar (running or stopped).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};

/// The tar molded streams of `path` in the container (all of it when empty).
async fn fetch(d: &Daemon, id: &str, path: &str, mut out: impl Write) -> Result<()> {
    let mut s = RuntimeClient::new(d.channel.clone())
        .export(d.request(api::ExportRequest {
            id: id.into(),
            path: path.into(),
        }))
        .await
        .map_err(status(format!("reading {id}:{path}")))?
        .into_inner();
    while let Some(c) = s
        .message()
        .await
        .map_err(|s| anyhow!("reading {id}:{path}: {}", s.message()))?
    {
        out.write_all(&c.data)?;
    }
    out.flush()?;
    Ok(())
}

/// `molde export [-o FILE] CONTAINER`
pub async fn export(d: &Daemon, id: &str, output: Option<PathBuf>) -> Result<()> {
    match output {
        Some(p) => {
            let f = std::fs::File::create(&p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            fetch(d, id, "", std::io::BufWriter::new(f)).await
        }
        None => fetch(d, id, "", std::io::stdout().lock()).await,
    }
}

/// `molde cp SRC DEST`: SRC is CONTAINER:PATH; DEST a local path or `-`
/// (the tar itself). Owners, modes and times are kept, as `docker cp -a`.
pub async fn cp(d: &Daemon, src: &str, dest: &str) -> Result<()> {
    let Some((id, path)) = src
        .split_once(':')
        .filter(|(c, _)| !c.is_empty() && !c.contains('/'))
    else {
        if dest.contains(':') {
            anyhow::bail!(
                "copying into a container ({dest}) is not supported yet: molde cp copies out, CONTAINER:PATH DEST"
            );
        }
        anyhow::bail!("molde cp CONTAINER:PATH DEST|-: {src:?} names no container");
    };
    if path.is_empty() {
        anyhow::bail!("{src}: give the path in the container");
    }
    if dest == "-" {
        return fetch(d, id, path, std::io::stdout().lock()).await;
    }
    let mut tar = Vec::new();
    fetch(d, id, path, &mut tar).await?;
    let dest = Path::new(dest);
    // Into an existing directory under its own name, else as `dest`.
    let (dir, rename) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            anyhow::bail!("{}: no such directory", parent.display());
        }
        (parent.to_path_buf(), dest.file_name().map(|n| n.to_os_string()))
    };
    // Unpacked beside its destination first (tar's own guard keeps every
    // entry inside), then moved into place.
    let tmp = dir.join(format!(".molde-cp-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| anyhow!("{}: {e}", tmp.display()))?;
    let unpacked = (|| -> Result<()> {
        let mut archive = tar::Archive::new(tar.as_slice());
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
        archive.unpack(&tmp)?;
        let top = std::fs::read_dir(&tmp)?
            .next()
            .ok_or_else(|| anyhow!("{src}: nothing came"))??
            .file_name();
        let target = dir.join(rename.as_ref().unwrap_or(&top));
        place(&tmp.join(&top), &target)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    unpacked
}

/// Moves `from` to `to`; into an existing directory, entry by entry.
fn place(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() && !from.is_symlink() && to.is_dir() {
        for e in std::fs::read_dir(from)? {
            let e = e?;
            place(&e.path(), &to.join(e.file_name()))?;
        }
        return Ok(());
    }
    if to.is_dir() && !to.is_symlink() {
        anyhow::bail!("{}: a directory is there", to.display());
    }
    std::fs::rename(from, to).map_err(|e| anyhow!("{}: {e}", to.display()))
}

/// `molde diff CONTAINER`: A, C, D lines as docker prints them.
pub async fn diff(d: &Daemon, id: &str) -> Result<()> {
    let changes = RuntimeClient::new(d.channel.clone())
        .changes(d.request(api::ChangesRequest { id: id.into() }))
        .await
        .map_err(status(format!("changes of {id}")))?
        .into_inner()
        .changes;
    for c in changes {
        println!("{} {}", c.kind, c.path);
    }
    Ok(())
}
