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
        if r.create_only {
            let id = self.create(&ns, &r).await?;
            let (tx, rx) = mpsc::channel(1);
            send(&tx, Event::Started(api::Started { id })).await;
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let (id, bundle) = self.start(&ns, &r).await?;
        // Report back once the shim started the container, or why it could not.
        if let Err(e) = self.await_started(&ns, &id).await {
            if r.rm {
                let record = self.record(&ns, &id).ok();
                self.remove(&ns, &id).await;
                if let Some(c) = record {
                    self.remove_anonymous_volumes(&c);
                }
            }
            return Err(super::start_failed(e));
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
                let record = me.record(&ns, &id).ok();
                me.remove(&ns, &id).await;
                // docker's --rm takes the anonymous volumes along.
                if let Some(c) = record {
                    me.remove_anonymous_volumes(&c);
                }
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
