//! runtime.v1 `Attach`: relaying a client to the shim's attach socket.

use super::*;

impl RuntimeService {
    pub(super) async fn attach_rpc(
        &self,
        req: Request<tonic::Streaming<api::AttachInput>>,
    ) -> Result<Response<ReceiverStream<Result<api::AttachOutput, Status>>>, Status> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let ns = RequestContext::of(&req).map_err(Status::from)?.namespace;
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Error::InvalidArgument("attach needs a first message naming the container".into())
        })?;
        let id = self.resolve(&ns, &first.id)?;
        let b = Bundle::new(self.bundle_dir(&ns, &id));
        // A container held before its start (Start with attachable) takes
        // attach clients already.
        let held = b.created_pid().is_some() && b.init_pid().is_none() && b.shim_alive();
        if !held {
            self.running(&ns, &id)?;
        }
        let sock = if first.exec_id.is_empty() {
            Bundle::new(self.bundle_dir(&ns, &id)).attach_socket()
        } else if first.exec_id.len() == 32 && first.exec_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            Bundle::new(self.bundle_dir(&ns, &id)).exec_socket(&first.exec_id)
        } else {
            return Err(Error::InvalidArgument(format!(
                "exec id {:?} is not one this daemon gave out",
                first.exec_id
            ))
            .into());
        };
        let reach = molde_bundle::sock::reachable(&sock)
            .map_err(Error::io(format!("container {id}: its attach socket")))?;
        // The socket's file exists from the shim's bind, a moment before it
        // listens: a refusal then is retried, for at most two seconds.
        let mut tries = 0;
        let conn = loop {
            match tokio::net::UnixStream::connect(reach.path()).await {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(Error::Unavailable(format!(
                        "container {id}: its shim does not answer on {}: {e}",
                        sock.display()
                    ))
                    .into());
                }
            }
        };
        let (mut rd, mut wr) = conn.into_split();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .send(Ok(api::AttachOutput {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut msg = Some(first);
            while let Some(m) = msg.take() {
                let mut frame = Vec::new();
                if m.rows > 0 && m.cols > 0 {
                    frame.push(1u8);
                    frame.extend_from_slice(&(m.rows as u16).to_be_bytes());
                    frame.extend_from_slice(&(m.cols as u16).to_be_bytes());
                }
                if !m.data.is_empty() {
                    frame.push(0u8);
                    frame.extend_from_slice(&(m.data.len() as u32).to_be_bytes());
                    frame.extend_from_slice(&m.data);
                }
                if m.close_stdin {
                    frame.push(2u8);
                }
                if !frame.is_empty() && wr.write_all(&frame).await.is_err() {
                    break;
                }
                msg = inbound.message().await.ok().flatten();
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// Asks the shim to reopen the container's CRI log; returns once it did
    /// (the shim closes the connection when the new file is open).
    pub(crate) async fn reopen_log(&self, ns: &str, id: &str) -> Result<(), Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.running(ns, id)?;
        let sock = Bundle::new(self.bundle_dir(ns, id)).attach_socket();
        let reach = molde_bundle::sock::reachable(&sock)
            .map_err(Error::io(format!("container {id}: its attach socket")))?;
        let mut conn = tokio::net::UnixStream::connect(reach.path()).await.map_err(|e| {
            Error::Unavailable(format!(
                "container {id}: its shim does not answer on {}: {e}",
                sock.display()
            ))
        })?;
        let mut frame = Vec::new();
        molde_bundle::attach::Frame::ReopenLog.encode(&mut frame);
        conn.write_all(&frame).await.map_err(Error::io(format!(
            "container {id}: asking its shim to reopen the log"
        )))?;
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = vec![0u8; 8 << 10];
            while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        drained
            .map_err(|_| Error::DeadlineExceeded(format!("container {id}: its shim did not reopen the log")))
    }
}
