//! runtime.v1 `Exec`: a process in a running container through a short-lived `molde-shim exec`.

use super::*;

impl RuntimeService {
    pub(super) async fn exec_rpc(
        &self,
        req: Request<api::ExecRequest>,
    ) -> Result<Response<ReceiverStream<Result<api::RunEvent, Status>>>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        if r.args.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()).into());
        }
        let (c, o) = self.running(&ns, &r.id)?;
        if o.state == "paused" {
            return Err(Error::FailedPrecondition(format!(
                "container {:?} is paused: unpause it before exec",
                r.id
            ))
            .into());
        }
        // The container's own process, as stored in its spec.
        let base: oci_spec::runtime::Process = c
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice::<oci_spec::runtime::Spec>(&s.value).ok())
            .and_then(|s| s.process().clone())
            .unwrap_or_default();
        let bundle = self.bundle_dir(&ns, &r.id);
        let b = Bundle::new(&bundle);
        let mut process = molde_bundle::ExecProcess::from(&base);
        process.args = r.args.clone();
        process.env = molde_common::env::merge(&process.env, r.env.iter().cloned());
        // The container's user with its groups, or the one asked for.
        if !r.user.is_empty() {
            let who = crate::user::resolve(&r.user, &[], &[b.rootfs()])
                .map_err(|e| e.context(format!("container {}", r.id)))?;
            process.uid = Some(who.uid);
            process.gid = Some(who.gid);
            process.additional_gids = who.additional_gids;
        }
        if !r.workdir.is_empty() {
            process.cwd = Some(r.workdir.clone());
        }
        let exec_id = uuid::Uuid::new_v4().simple().to_string();
        let pfile = b
            .write_exec(&exec_id, &process)
            .map_err(|e| Error::Internal(format!("container {}: writing the exec: {e}", r.id)))?;
        let sock = b.exec_socket(&exec_id);
        let attached = r.interactive || r.tty;
        let mut cmd = tokio::process::Command::new(&self.shim);
        cmd.arg("exec")
            .args(["--id", &format!("{ns}-{}", r.id)])
            .arg("--bundle")
            .arg(&bundle)
            .arg("--state")
            .arg(self.state.join(".libcontainer"))
            .arg("--process")
            .arg(&pfile);
        if attached {
            cmd.arg("--attach").arg(&sock);
        }
        if r.tty {
            cmd.arg("--tty");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("starting {}", self.shim.display())))?;
        let (tx, rx) = mpsc::channel(64);
        if attached {
            // The client attaches (Attach with this exec id) once the shim listens.
            let mut waited = 0;
            while !sock.exists() && waited < 1000 && matches!(child.try_wait(), Ok(None)) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            if sock.exists() {
                send(&tx, Event::Started(api::Started { id: exec_id.clone() })).await;
            }
        }
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let a = tokio::spawn(pump(Box::new(out), 1, tx.clone()));
        let b = tokio::spawn(pump(Box::new(err), 2, tx.clone()));
        let limit = (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms));
        tokio::spawn(async move {
            // The exec'd process, not the container: its pid is in the shim's pid file.
            let kill = |why: &str| {
                let pid = molde_bundle::ExecFiles::of(&pfile).pid();
                match pid {
                    Some(p) => nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .or_log(&format!("killing an exec ({why})")),
                    None => tracing::warn!("an exec ended ({why}) before its process started"),
                }
            };
            let deadline = limit.map(|l| tokio::time::Instant::now() + l);
            let (mut timed_out, mut client_gone) = (false, false);
            let status = loop {
                tokio::select! {
                    s = child.wait() => break s,
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    }, if !timed_out => {
                        timed_out = true;
                        kill("its timeout");
                    }
                    // Nobody reads its output or status any more: a client that
                    // went away leaves no process behind.
                    _ = tx.closed(), if !client_gone => {
                        client_gone = true;
                        kill("its client went away");
                    }
                }
            }
            .ok()
            .and_then(|s| s.code())
            .unwrap_or(255);
            let _ = a.await;
            let _ = b.await;
            molde_bundle::ExecFiles::of(&pfile).remove();
            let _ = std::fs::remove_file(&sock);
            send(
                &tx,
                Event::Exited(api::Exited {
                    status,
                    oom_killed: false,
                    timed_out,
                }),
            )
            .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
