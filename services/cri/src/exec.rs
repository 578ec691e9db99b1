//! ExecSync: a command run to completion in a running container, through
//! runtime.v1 Exec, its output returned whole (capped as the kubelet caps
//! it). A timeout kills the exec'd process only, never the container.

use k8s_cri::v1 as cri;
use molde_api::molde::services::runtime::v1 as rt;
use molde_api::molde::services::runtime::v1::run_event::Event;
use molde_api::molde::services::runtime::v1::runtime_client::RuntimeClient;
use molde_common::errdefs::Error;

use crate::{Cri, request};

/// The most output ExecSync returns, both streams together: the answer
/// must fit the kubelet's 16 MiB message limit, with room for the message's
/// own framing and exit code. Output past it is dropped, as the kubelet
/// drops what exceeds its cap.
pub const MAX_OUTPUT: usize = (16 << 20) - (4 << 10);

impl Cri {
    /// The record of a running container; FailedPrecondition when it is not running.
    pub async fn running_container(&self, id: &str) -> Result<crate::store::ContainerRecord, Error> {
        let rec = self.container(id)?;
        if self.observe(&rec.id).await?.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(rec)
    }

    pub async fn exec_sync(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, Error> {
        if req.cmd.is_empty() {
            return Err(Error::InvalidArgument("ExecSync needs a command".into()));
        }
        let rec = self.running_container(&req.container_id).await?;
        let mut stream = RuntimeClient::new(self.channels.runtime.clone())
            .exec(request(rt::ExecRequest {
                id: rec.id.clone(),
                args: req.cmd.clone(),
                timeout_ms: (req.timeout.max(0) as u64) * 1000,
                ..Default::default()
            }))
            .await
            .map_err(Error::upstream(format!("exec in container {}", rec.id)))?
            .into_inner();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut exit = None;
        while let Some(ev) = stream
            .message()
            .await
            .map_err(Error::upstream(format!("exec in container {}", rec.id)))?
        {
            match ev.event {
                Some(Event::Output(o)) => {
                    let room = MAX_OUTPUT.saturating_sub(stdout.len() + stderr.len());
                    let buf = if o.stream == 2 { &mut stderr } else { &mut stdout };
                    buf.extend_from_slice(&o.data[..o.data.len().min(room)]);
                }
                Some(Event::Exited(e)) => exit = Some(e),
                _ => {}
            }
        }
        let exit =
            exit.ok_or_else(|| Error::Unavailable(format!("exec in container {}: no exit status", rec.id)))?;
        if exit.timed_out {
            return Err(Error::DeadlineExceeded(format!(
                "command {:?} timed out after {}s",
                req.cmd, req.timeout
            )));
        }
        Ok(cri::ExecSyncResponse {
            stdout,
            stderr,
            exit_code: exit.status,
        })
    }
}
