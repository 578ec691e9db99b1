//! `molde cp CONTAINER:PATH DEST|-`, `molde cp SRC|- CONTAINER:PATH`,
//! `molde export`, `molde diff`: a container's files, read and written by
//! molded as tars (running or stopped).

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
        if let Some((id, path)) = dest
            .split_once(':')
            .filter(|(c, _)| !c.is_empty() && !c.contains('/'))
        {
            return copy_in(d, src, id, path).await;
        }
        anyhow::bail!(
            "molde cp CONTAINER:PATH DEST|- or molde cp SRC|- CONTAINER:PATH: neither names a container"
        );
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

/// `molde cp SRC|- CONTAINER:PATH`: a local file or directory (owners,
/// modes, times and links kept), or a tar from stdin, written by molded
/// into the container, running or stopped.
async fn copy_in(d: &Daemon, src: &str, id: &str, path: &str) -> Result<()> {
    if path.is_empty() {
        anyhow::bail!("{id}:{path}: give the path in the container");
    }
    let archive = src == "-";
    let (tx, rx) = tokio::sync::mpsc::channel::<api::CopyInRequest>(4);
    let first = api::CopyInRequest {
        id: id.into(),
        path: path.into(),
        archive,
        data: Vec::new(),
    };
    tx.send(first)
        .await
        .map_err(|_| anyhow!("copying: the stream closed"))?;
    let src_path = std::path::PathBuf::from(src);
    if !archive && std::fs::symlink_metadata(&src_path).is_err() {
        anyhow::bail!("{src}: no such file or directory");
    }
    // The tar is made on a thread and sent as it is made.
    let producer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut w = molde_common::chunks::ChunkSender::new(tx, 256 << 10, "molded ended the copy", |data| {
            api::CopyInRequest {
                data,
                ..Default::default()
            }
        });
        if archive {
            std::io::copy(&mut std::io::stdin().lock(), &mut w)?;
        } else {
            let name = src_path
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_os_string()))
                .unwrap_or_else(|| "root".into());
            let mut b = tar::Builder::new(&mut w);
            b.follow_symlinks(false);
            let meta = std::fs::symlink_metadata(&src_path)?;
            if meta.is_dir() {
                b.append_dir_all(&name, &src_path)?;
            } else {
                b.append_path_with_name(&src_path, &name)?;
            }
            b.finish()?;
        }
        w.flush()?;
        Ok(())
    });
    let r = RuntimeClient::new(d.channel.clone())
        .copy_in(d.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await;
    producer.await??;
    r.map_err(status(format!("copying {src} to {id}:{path}")))?;
    Ok(())
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
