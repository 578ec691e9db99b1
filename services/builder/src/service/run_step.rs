//! RUN: the step's mounts set up as runtime volumes, its container run through runtime.v1 on a snapshot of its parent, its layer made from what it wrote.

use super::*;
use molde_common::errdefs::OrLog;

impl Job {
    /// Host-side sources for a RUN's mounts and script, as runtime volumes and
    /// tmpfs paths. Views and directories made here are recorded in `held`.
    pub(super) async fn run_mounts(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        run: &RunStep,
        held: &mut Held,
    ) -> Result<RunExtras, Error> {
        let dir = self
            .scratch
            .join(format!("run-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Internal(e.to_string()))?;
        held.dirs.push(dir.clone());
        let fail = |e: std::io::Error| Error::Internal(format!("preparing RUN mounts: {e}"));
        let (mut volumes, mut tmpfs, mut env) = (Vec::new(), Vec::new(), Vec::new());
        if let (Some(script), Some(target)) = (&run.script, run.argv.first()) {
            let file = dir.join("script");
            std::fs::write(&file, script).map_err(fail)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
            volumes.push(format!("{}:{target}:ro", file.display()));
        }
        for (i, m) in run.mounts.iter().enumerate() {
            match m {
                RunMount::Tmpfs { target, size } => tmpfs.push(match size {
                    Some(n) => format!("{target}:size={n}"),
                    None => target.clone(),
                }),
                RunMount::Cache {
                    target,
                    id,
                    mode,
                    uid,
                    gid,
                    read_only,
                    sharing,
                    from,
                    source,
                } => {
                    let name = Digest::of(Algorithm::Sha256, format!("{}/{id}", self.ns).as_bytes());
                    let mut host = self.svc.cache_mounts.join(&name.hex()[..32]);
                    let lock = {
                        let mut locks = CACHE_LOCKS
                            .lock()
                            .map_err(|_| Error::Internal("cache locks poisoned".into()))?;
                        locks.entry(host.clone()).or_default().clone()
                    };
                    match sharing {
                        Sharing::Shared => {}
                        Sharing::Locked => held.locks.push(lock.lock_owned().await),
                        Sharing::Private => match lock.try_lock_owned() {
                            Ok(g) => held.locks.push(g),
                            // In use: this RUN gets a directory of its own.
                            Err(_) => host = dir.join(format!("private-{i}")),
                        },
                    }
                    if !host.exists() {
                        if let Some(f) = from {
                            // A new cache starts as a copy of `source` there.
                            let mounts = self.view(df, ins, f, held).await?;
                            let at_dir = dir.join(format!("seed-{i}"));
                            std::fs::create_dir_all(&at_dir).map_err(fail)?;
                            crate::copy::mount(&mounts, &at_dir, true).map_err(|e| at(df, ins, e))?;
                            held.mounted.push(at_dir.clone());
                            let (source, to) = (source.clone(), host.clone());
                            tokio::task::spawn_blocking(move || {
                                crate::copy::copy_tree(&at_dir, &source, &to, &Ignore::default())
                            })
                            .await
                            .map_err(|e| Error::Internal(e.to_string()))?
                            .map_err(|e| at(df, ins, e))?;
                        } else {
                            std::fs::create_dir_all(&host).map_err(fail)?;
                            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(*mode))
                                .map_err(fail)?;
                            std::os::unix::fs::chown(&host, Some(*uid), Some(*gid)).map_err(fail)?;
                        }
                    }
                    let ro = if *read_only { ":ro" } else { "" };
                    volumes.push(format!("{}:{target}{ro}", host.display()));
                }
                RunMount::Secret {
                    id,
                    target,
                    env: var,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(data) = self.req.secrets.get(id) else {
                        if *required {
                            return Err(at(
                                df,
                                ins,
                                format!(
                                    "secret {id:?} is required but was not given (--secret id={id},src=FILE)"
                                ),
                            ));
                        }
                        continue;
                    };
                    if let Some(var) = var {
                        // In the RUN's environment only, never the image's.
                        env.push(format!("{var}={}", String::from_utf8_lossy(data)));
                    }
                    if target.is_empty() {
                        continue;
                    }
                    let file = dir.join(format!("secret-{i}"));
                    std::fs::write(&file, data).map_err(fail)?;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode)).map_err(fail)?;
                    std::os::unix::fs::chown(&file, Some(*uid), Some(*gid)).map_err(fail)?;
                    volumes.push(format!("{}:{target}:ro", file.display()));
                }
                RunMount::Ssh { id, target, required } => {
                    let Some(sock) = self.req.ssh.get(id) else {
                        if *required {
                            return Err(at(
                                df,
                                ins,
                                format!("SSH agent {id:?} is required but was not forwarded (--ssh {id})"),
                            ));
                        }
                        continue;
                    };
                    use std::os::unix::fs::FileTypeExt;
                    if !std::fs::metadata(sock).is_ok_and(|m| m.file_type().is_socket()) {
                        return Err(at(
                            df,
                            ins,
                            format!("--ssh {id}: {sock} is not a socket the daemon can reach"),
                        ));
                    }
                    volumes.push(format!("{sock}:{target}"));
                    env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                RunMount::Bind {
                    target,
                    source,
                    from,
                    rw,
                } => {
                    let root = match from {
                        None => self.context.clone(),
                        Some(f) => {
                            let mounts = self.view(df, ins, f, held).await?;
                            let at_dir = dir.join(format!("from-{i}"));
                            std::fs::create_dir_all(&at_dir).map_err(fail)?;
                            crate::copy::mount(&mounts, &at_dir, true).map_err(|e| at(df, ins, e))?;
                            held.mounted.push(at_dir.clone());
                            at_dir
                        }
                    };
                    let src = crate::scope::scoped(&root, source, true).map_err(|e| at(df, ins, e))?;
                    if std::fs::symlink_metadata(&src).is_err() {
                        return Err(at(df, ins, format!("--mount source {source:?} does not exist")));
                    }
                    // Writes to a rw bind land in a copy; the context is only
                    // shown as .dockerignore leaves it.
                    let shown = if *rw || (from.is_none() && !self.ignore.is_empty()) {
                        let copy = dir.join(format!("bind-{i}"));
                        let ignore = if from.is_none() {
                            self.ignore.clone()
                        } else {
                            Ignore::default()
                        };
                        let (root, source) = (root.clone(), source.clone());
                        let c = copy.clone();
                        tokio::task::spawn_blocking(move || {
                            crate::copy::copy_tree(&root, &source, &c, &ignore)
                        })
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))?
                        .map_err(|e| at(df, ins, e))?;
                        copy
                    } else {
                        src
                    };
                    let ro = if *rw { "" } else { ":ro" };
                    volumes.push(format!("{}:{target}{ro}", shown.display()));
                }
            }
        }
        Ok(RunExtras { volumes, tmpfs, env })
    }

    pub(super) async fn release(&self, held: Held) {
        for m in held.mounted.iter().rev() {
            rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH).or_log("unmounting a build mount");
        }
        for v in &held.views {
            self.remove_snapshot(v).await;
        }
        for d in &held.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    pub(super) async fn run_step(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        step: u32,
        parent: &str,
        mut run: RunStep,
    ) -> Result<Layer, Error> {
        let mut held = Held::default();
        let result = match self.run_mounts(df, ins, &run, &mut held).await {
            Ok(x) => {
                run.env.extend(x.env);
                self.run_container(df, ins, step, parent, run, x.volumes, x.tmpfs)
                    .await
            }
            Err(s) => Err(s),
        };
        self.release(held).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_container(
        &self,
        df: &Dockerfile,
        ins: &Instruction,
        step: u32,
        parent: &str,
        run: RunStep,
        volumes: Vec<String>,
        tmpfs: Vec<String>,
    ) -> Result<Layer, Error> {
        let id = format!("build-{}", uuid::Uuid::new_v4().simple());
        let mut rt = RuntimeClient::new(self.svc.runtime.clone());
        // Mount points the runtime makes that are not the step's work.
        let mut stubs: Vec<String> = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        stubs.extend(
            run.mounts
                .iter()
                .map(|m| m.target().to_string())
                .filter(|t| !t.is_empty()),
        );
        let events = rt
            .run(self.req(RunRequest {
                image: String::new(),
                name: id.clone(),
                entrypoint: run.argv,
                entrypoint_set: true,
                env: run.env,
                workdir: run.cwd,
                user: run.user,
                network: run.network.into(),
                rootfs_parent: parent.into(),
                rootfs_parent_set: true,
                workdir_for_user: true,
                volumes,
                tmpfs,
                ..Default::default()
            }))
            .await;
        let mut events = match events {
            Ok(r) => r.into_inner(),
            Err(s) => {
                // A container that could not start is not kept.
                rt.remove(self.req(RemoveRequest {
                    id: id.clone(),
                    force: true,
                    volumes: true,
                }))
                .await
                .or_log("removing a build step's container");
                return Err(at(df, ins, s.message()));
            }
        };
        let mut status = None;
        let mut output = Vec::new();
        while let Some(m) = events.message().await.map_err(|s| at(df, ins, s.message()))? {
            match m.event {
                Some(run_event::Event::Output(o)) => {
                    output.extend_from_slice(&o.data);
                    self.send(Event::Log(api::StepLog { step, data: o.data })).await;
                }
                Some(run_event::Event::Exited(x)) => status = Some(x.status),
                _ => {}
            }
        }
        let status = status.unwrap_or(255);
        if status != 0 {
            rt.remove(self.req(RemoveRequest {
                id: id.clone(),
                force: true,
                volumes: true,
            }))
            .await
            .or_log("removing a build step's container");
            let tail = String::from_utf8_lossy(&output);
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(at(
                df,
                ins,
                format!(
                    "{} failed with exit code {status}\n{}",
                    ins.original,
                    tail.join("\n")
                ),
            ));
        }
        // The container's rootfs snapshot (key = its id) is the step's layer.
        if let Ok(m) = SnapshotsClient::new(self.svc.snapshotter.clone())
            .mounts(
                self.req(molde_api::containerd::services::snapshots::v1::MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.clone(),
                }),
            )
            .await
        {
            crate::mounts::remove_stubs(&m.into_inner().mounts, &stubs);
        }
        let layer = self.commit_layer(&id, parent).await;
        // The container goes while the next steps run; the build waits for
        // it before it ends (`settle`).
        let req = self.req(RemoveRequest {
            id,
            force: true,
            volumes: true,
        });
        let handle = tokio::spawn(async move {
            rt.remove(req).await.or_log("removing a build step's container");
        });
        if let Ok(mut r) = self.removals.lock() {
            r.push(handle);
        }
        layer
    }

    /// Waits for the RUN containers still being removed.
    pub(super) async fn settle(&self) {
        let pending: Vec<_> = self
            .removals
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for h in pending {
            let _ = h.await;
        }
    }
}
