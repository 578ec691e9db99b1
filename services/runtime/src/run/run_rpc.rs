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
            return Err(Status::invalid_argument("run needs an image"));
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
                return Err(Status::failed_precondition(format!("container {id}: {msg}")));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(Status::deadline_exceeded(format!(
                    "container {id}: its shim did not start it within 60s"
                )));
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
                    send(&tx, Event::Exited(api::Exited { status, oom_killed })).await;
                }
                Err(s) => {
                    let _ = tx
                        .send(Err(Status::new(
                            s.code(),
                            format!("container {id}: {}", s.message()),
                        )))
                        .await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
