//! runtime.v1 `Run`: start a container and stream what it prints until it exits (or return once it runs, with `-d`).

use super::*;

impl RuntimeService {
    pub(super) async fn run_rpc(
        &self,
        req: Request<api::RunRequest>,
    ) -> Result<Response<ReceiverStream<Result<api::RunEvent, Status>>>, Status> {
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let r = req.into_inner();
        if r.image.is_empty() && !r.rootfs_parent_set {
            return Err(Error::InvalidArgument("run needs an image".into()).into());
        }
        let (id, bundle) = self.start(&ns, &r).await?;
        // Report back once the shim started the container, or why it could not.
        let started = tokio::time::Instant::now();
        let b = Bundle::new(&bundle);
        loop {
            if let Some(pid) = b.init_pid() {
                self.started(&ns, &id, pid as u32);
                break;
            }
            if b.exit().is_some() {
                break;
            }
            if let Some(msg) = b.error() {
                if r.rm {
                    self.remove(&ns, &id).await;
                }
                return Err(Error::FailedPrecondition(format!("container {id}: {msg}")).into());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(Error::DeadlineExceeded(format!(
                    "container {id}: its shim did not start it within 60s"
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            send(&tx, Event::Started(api::Started { id: id.clone() })).await;
            if r.detach {
                return;
            }
            let result = me.follow(&bundle, &tx).await;
            me.exited(&ns, &id);
            if r.rm {
                me.remove(&ns, &id).await;
            }
            match result {
                Ok((status, oom_killed)) => {
                    tracing::info!(namespace = %ns, container = %id, status, oom_killed, "container exited");
                    send(
                        &tx,
                        Event::Exited(api::Exited {
                            status,
                            oom_killed,
                            timed_out: false,
                        }),
                    )
                    .await;
                }
                Err(s) => {
                    let _ = tx.send(Err(s.context(format!("container {id}")).into())).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
