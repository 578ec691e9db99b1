//! What a step reads besides its parent, digested for its cache key: context files, `--from` sources, bind mounts, ADD URLs and git repositories.

use super::*;

impl Job {
    /// The top layer of the stage or image a `--from` names.
    pub(super) async fn source_top(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        from: &str,
    ) -> Result<String, Error> {
        Ok(match df.stage(from).and_then(|s| self.built(s.index)) {
            Some(b) => b.top,
            None => {
                self.base(from, false)
                    .await
                    .map_err(|e| at(df, ins, e.message()))?
                    .top
            }
        })
    }

    /// A read-only view of the rootfs of the stage or image `from` names
    /// (removed with `held`).
    pub(super) async fn view(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        from: &str,
        held: &mut Held,
    ) -> Result<Vec<Mount>, Error> {
        let top = self.source_top(df, ins, from).await?;
        let key = format!("build-view-{}", uuid::Uuid::new_v4().simple());
        let mounts = SnapshotsClient::new(self.svc.snapshotter.clone())
            .view(self.req(ViewSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: top,
                labels: Default::default(),
            }))
            .await?
            .into_inner()
            .mounts;
        held.views.push(key);
        Ok(mounts)
    }

    /// The digest of context paths, as the cache sees them.
    pub(super) async fn context_digest(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        srcs: Vec<String>,
    ) -> Result<String, Error> {
        let (context, ignore) = (self.context.clone(), self.ignore.clone());
        tokio::task::spawn_blocking(move || {
            let paths = cache::resolve_sources(&context, &srcs, &ignore)?;
            cache::digest_sources(&context, &paths, &ignore)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| at(df, ins, e))
    }

    /// What a step reads besides its parent: the digest of its context
    /// sources or downloads, the top layer of the stage or image it copies
    /// from, and what its bind mounts show.
    pub(super) async fn inputs(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        what: &Step,
        mounts: &[RunMount],
    ) -> Result<Option<String>, Error> {
        match what {
            Step::Metadata => Ok(None),
            Step::Run { .. } => {
                let mut parts = Vec::new();
                for m in mounts {
                    if let RunMount::Bind { source, from, .. } = m {
                        parts.push(match from {
                            Some(f) => format!("bind {source} from {}", self.source_top(df, ins, f).await?),
                            None => format!(
                                "bind {source} {}",
                                self.context_digest(df, ins, vec![source.clone()]).await?
                            ),
                        });
                    }
                }
                Ok((!parts.is_empty()).then(|| parts.join("|")))
            }
            Step::Copy { srcs, .. } => {
                if let Some(from) = ins.flag("from") {
                    return Ok(Some(format!("from {}", self.source_top(df, ins, from).await?)));
                }
                if srcs.is_empty() {
                    return Ok(None);
                }
                if let Some(g) = self.git_source(df, ins, srcs)? {
                    let commit = self.git_commit(df, ins, &g).await?;
                    return Ok(Some(format!(
                        "git {} {commit} {} keep={:?}",
                        g.url,
                        g.subdir,
                        ins.flag("keep-git-dir")
                    )));
                }
                if srcs.iter().any(|s| is_url(s)) {
                    let mut parts = Vec::new();
                    for u in srcs {
                        let (_, digest) = self.download(df, ins, u).await?;
                        parts.push(format!("{u} {digest}"));
                    }
                    return Ok(Some(parts.join("|")));
                }
                Ok(Some(self.context_digest(df, ins, srcs.clone()).await?))
            }
        }
    }

    /// The repository an ADD names, if it names one (then as its only source).
    pub(super) fn git_source(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        srcs: &[String],
    ) -> Result<Option<crate::git::Source>, Error> {
        if !matches!(ins.command, Command::Add { .. }) {
            return Ok(None);
        }
        let gits: Vec<_> = srcs.iter().filter_map(|s| crate::git::parse(s)).collect();
        match (gits.len(), srcs.len()) {
            (0, _) => Ok(None),
            (1, 1) => Ok(gits.into_iter().next()),
            _ => Err(at(df, ins, "ADD of a git repository takes it as its only source")),
        }
    }

    /// The commit a repository's ref names, looked up once per build and
    /// checked against `--checksum` when given.
    pub(super) async fn git_commit(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        g: &crate::git::Source,
    ) -> Result<String, Error> {
        let key = format!("{}#{}", g.url, g.reference);
        if let Some(c) = self.commits.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let commit = crate::git::resolve(g)
            .await
            .map_err(|e| at(df, ins, format!("ADD {}: {e}", g.url)))?;
        if let Some(want) = ins.flag("checksum")
            && !commit.starts_with(want)
        {
            return Err(at(
                df,
                ins,
                format!(
                    "ADD {}: checksum mismatch: --checksum={want}, the ref is at {commit}",
                    g.url
                ),
            ));
        }
        if let Ok(mut m) = self.commits.lock() {
            m.insert(key, commit.clone());
        }
        Ok(commit)
    }

    /// Fetches an ADD URL once per build (bounded in time), checking
    /// `--checksum` when given. Returns the file and its digest.
    pub(super) async fn download(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        url: &str,
    ) -> Result<(PathBuf, String), Error> {
        if let Some(d) = self.downloads.lock().ok().and_then(|m| m.get(url).cloned()) {
            return Ok(d);
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .connect_timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| at(df, ins, format!("ADD {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(at(
                df,
                ins,
                format!("ADD {url}: the server answered {}", resp.status()),
            ));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| at(df, ins, format!("ADD {url}: {e}")))?;
        let digest = Digest::of(Algorithm::Sha256, &body).to_string();
        if let Some(want) = ins.flag("checksum")
            && want != digest
        {
            return Err(at(
                df,
                ins,
                format!("ADD {url}: checksum mismatch: --checksum={want}, the download is {digest}"),
            ));
        }
        let dir = self.scratch.join("downloads");
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(e.to_string()))?;
        let file = dir.join(digest.trim_start_matches("sha256:"));
        std::fs::write(&file, &body).map_err(|e| Error::Internal(e.to_string()))?;
        if let Ok(mut m) = self.downloads.lock() {
            m.insert(url.to_string(), (file.clone(), digest.clone()));
        }
        Ok((file, digest))
    }
}
