//! COPY and ADD: files written into a snapshot mounted here, never through a container.

use super::*;

impl Job {
    pub(super) async fn copy_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        parent: &str,
        srcs: Vec<String>,
        dest: String,
        inline: Vec<(String, String)>,
    ) -> Result<Layer, Error> {
        let is_add = matches!(ins.command, Command::Add { .. });
        let git = self.git_source(df, ins, &srcs)?;
        if ins.flag("checksum").is_some()
            && !(is_add && srcs.iter().all(|s| is_url(s) || git.is_some()) && !srcs.is_empty())
        {
            return Err(at(df, ins, "--checksum is only for ADD of a URL"));
        }
        if ins.flag("keep-git-dir").is_some() && git.is_none() {
            return Err(at(df, ins, "--keep-git-dir is only for ADD of a git repository"));
        }
        let mut held = Held::default();
        let mut dest = dest;
        // Where the sources come from: the context, a stage's rootfs, the
        // heredocs or the downloads written for this step.
        let mut src_root = self.context.clone();
        let mut ignore = self.ignore.clone();
        let mut srcs = srcs;
        let mut chmod = ins.flag("chmod").map(str::to_string);
        let mut extract = is_add;
        let mut from_mounts = Vec::new();
        if let Some(g) = git {
            // The repository's files (or its SUBDIR's) go into the destination.
            let commit = self.git_commit(df, ins, &g).await?;
            let dir = self
                .scratch
                .join(format!("git-{}", uuid::Uuid::new_v4().simple()));
            held.dirs.push(dir.clone());
            let keep = ins.flag("keep-git-dir").is_some_and(|v| v != "false");
            crate::git::fetch(&g, &commit, &dir, keep)
                .await
                .map_err(|e| at(df, ins, format!("ADD {}: {e}", g.url)))?;
            src_root = dir;
            ignore = Ignore::default();
            srcs = vec![if g.subdir.is_empty() {
                ".".into()
            } else {
                g.subdir.clone()
            }];
            extract = false;
            if !dest.ends_with('/') {
                dest.push('/');
            }
        } else if !inline.is_empty() || srcs.iter().any(|s| is_url(s)) {
            if srcs.iter().any(|s| !is_url(s)) {
                return Err(at(df, ins, "URLs cannot be mixed with files from the context"));
            }
            let dir = self
                .scratch
                .join(format!("inline-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(e.to_string()))?;
            held.dirs.push(dir.clone());
            let mut names = Vec::new();
            for (name, body) in &inline {
                let f = dir.join(name);
                std::fs::write(&f, body).map_err(|e| Error::Internal(e.to_string()))?;
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| Error::Internal(e.to_string()))?;
                names.push(name.clone());
            }
            for u in &srcs {
                let (file, _) = self.download(df, ins, u).await?;
                let name = url_file_name(u);
                std::fs::copy(&file, dir.join(&name)).map_err(|e| Error::Internal(e.to_string()))?;
                names.push(name);
                // Downloads get 0600, and are never unpacked.
                chmod.get_or_insert_with(|| "600".into());
                extract = false;
            }
            src_root = dir;
            ignore = Ignore::default();
            srcs = names;
        } else if let Some(from) = ins.flag("from") {
            from_mounts = self.view(df, ins, from, &mut held).await?;
            ignore = Ignore::default();
        }
        let key = format!("build-{}", uuid::Uuid::new_v4().simple());
        let result = async {
            let mounts = self.prepare(&key, parent).await?;
            let dir = self.scratch.join(&key);
            let chown = ins.flag("chown").map(str::to_string);
            let original = ins.original.clone();
            let parents = ins.flag("parents").is_some_and(|v| v != "false");
            let exclude = Ignore::parse(&ins.flags_named("exclude").collect::<Vec<_>>().join("\n"));
            let copied = tokio::task::spawn_blocking(move || {
                crate::copy::into_snapshot(&crate::copy::CopyJob {
                    scratch: &dir,
                    mounts: &mounts,
                    from: &from_mounts,
                    context: &src_root,
                    ignore: &ignore,
                    srcs: &srcs,
                    dest: &dest,
                    chown: chown.as_deref(),
                    chmod: chmod.as_deref(),
                    exclude: &exclude,
                    parents,
                    extract,
                })
                .map_err(|e| format!("{original}: {e}"))
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
            copied.map_err(|e| at(df, ins, e))?;
            self.commit_layer(&key, parent).await
        }
        .await;
        if result.is_err() {
            self.remove_snapshot(&key).await;
        }
        self.release(held).await;
        result
    }
}
