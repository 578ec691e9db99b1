//! Exec and attach for the streaming server, whatever the wire: the
//! client's streams as channels, the container through the runtime's gRPC
//! API (runtime.v1 Exec and Attach).

use k8s_cri::v1 as cri;
use molde_api::molde::services::runtime::v1 as rt;
use molde_api::molde::services::runtime::v1::run_event::Event;
use molde_api::molde::services::runtime::v1::runtime_client::RuntimeClient;
use tokio::sync::{mpsc, watch};

use molde_common::errdefs::Error;

use super::Pending;
use crate::{Cri, request};

/// What the client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn of(p: &Pending) -> Options {
        match p {
            Pending::Exec(r) => Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Pending::Attach(r) => Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            },
            Pending::PortForward(_) => Options {
                stdin: false,
                stdout: false,
                stderr: false,
                tty: false,
            },
        }
    }
}

/// The client's side, as channels.
pub struct Channels {
    /// Input; closed when the client closes its stdin.
    pub stdin: Option<mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<mpsc::Sender<Vec<u8>>>,
    pub stderr: Option<mpsc::Sender<Vec<u8>>>,
    /// Terminal sizes (rows, columns).
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    /// Turns true when the client's connection is gone.
    pub gone: watch::Receiver<bool>,
}

/// Terminal sizes from a resize stream: JSON objects `{"Width":W,"Height":H}`,
/// one after another, however the bytes are split.
pub fn resizes(mut data: mpsc::Receiver<Vec<u8>>) -> mpsc::Receiver<(u16, u16)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(d) = data.recv().await {
            buf.extend_from_slice(&d);
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
            let mut used = 0;
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        used = it.byte_offset();
                        if tx.send((s.height, s.width)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => return,
                    None => break,
                }
            }
            buf.drain(..used);
            if buf.len() > 4096 {
                return;
            }
        }
    });
    rx
}

/// Runs an exec or an attach; the exit code (0 for an attach that ended),
/// or why it could not run.
pub async fn run(cri: &Cri, p: Pending, ch: Channels) -> Result<i32, Error> {
    match p {
        Pending::Exec(r) => exec(cri, r, ch).await,
        Pending::Attach(r) => attach(cri, r, ch).await,
        Pending::PortForward(_) => Err(Error::InvalidArgument("not a remote command".into())),
    }
}

fn client_gone() -> Error {
    Error::Cancelled("the client went away".into())
}

async fn running(cri: &Cri, id: &str) -> Result<String, Error> {
    let rec = cri.container(id)?;
    let o = cri.observe(&rec.id).await?;
    if o.state != cri::ContainerState::ContainerRunning as i32 {
        return Err(Error::FailedPrecondition(format!(
            "container {} is not running",
            rec.id
        )));
    }
    Ok(rec.id)
}

async fn gone(g: &mut watch::Receiver<bool>) {
    while !*g.borrow() {
        if g.changed().await.is_err() {
            // The connection's watcher ended with it.
            return;
        }
    }
}

async fn exec(cri: &Cri, r: cri::ExecRequest, mut ch: Channels) -> Result<i32, Error> {
    let id = running(cri, &r.container_id).await?;
    let attached = r.tty || ch.stdin.is_some();
    let mut events = RuntimeClient::new(cri.channels.runtime.clone())
        .exec(request(rt::ExecRequest {
            id: id.clone(),
            args: r.cmd.clone(),
            interactive: ch.stdin.is_some(),
            tty: r.tty,
            ..Default::default()
        }))
        .await
        .map_err(Error::upstream(format!("exec in container {id}")))?
        .into_inner();
    let mut relay: Option<tokio::task::JoinHandle<()>> = None;
    let mut gone_rx = ch.gone.clone();
    loop {
        let ev = tokio::select! {
            ev = events.message() => ev.map_err(Error::upstream(format!("exec in container {id}")))?,
            // Dropping the exec's stream kills its process.
            _ = gone(&mut gone_rx) => return Err(client_gone()),
        };
        let Some(ev) = ev else {
            return Err(Error::Unavailable(format!(
                "exec in container {id}: no exit status"
            )));
        };
        match ev.event {
            Some(Event::Started(s)) if attached => {
                // Input goes through the attach; output too with a terminal,
                // else it comes as the exec's own output events, stdout and
                // stderr apart.
                let to_attach = Channels {
                    stdin: ch.stdin.take(),
                    stdout: if r.tty { ch.stdout.take() } else { None },
                    stderr: None,
                    resize: ch.resize.take(),
                    gone: gone_rx.clone(),
                };
                relay = Some(relay_attach(cri, id.clone(), s.id, to_attach).await?);
            }
            Some(Event::Output(o)) => {
                let sink = if o.stream == 2 { &ch.stderr } else { &ch.stdout };
                if let Some(s) = sink
                    && s.send(o.data).await.is_err()
                {
                    return Err(client_gone());
                }
            }
            Some(Event::Exited(e)) => {
                if let Some(t) = relay {
                    // The rest of the output, already on its way.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
                }
                return Ok(e.status);
            }
            _ => {}
        }
    }
}

/// Relays a client to an attach socket (the container's, or an exec's when
/// `exec_id` is set) until the output ends.
async fn relay_attach(
    cri: &Cri,
    id: String,
    exec_id: String,
    ch: Channels,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let (in_tx, in_rx) = mpsc::channel::<rt::AttachInput>(16);
    in_tx
        .send(rt::AttachInput {
            id: id.clone(),
            exec_id,
            ..Default::default()
        })
        .await
        .map_err(|_| Error::Internal("attach: its input closed".into()))?;
    let mut output = RuntimeClient::new(cri.channels.runtime.clone())
        .attach(request(tokio_stream::wrappers::ReceiverStream::new(in_rx)))
        .await
        .map_err(Error::upstream(format!("attach to container {id}")))?
        .into_inner();
    let Channels {
        stdin,
        stdout,
        stderr,
        resize,
        ..
    } = ch;
    tokio::spawn(async move {
        let (mut stdin, mut resize) = (stdin, resize);
        loop {
            tokio::select! {
                d = async { stdin.as_mut().expect("guarded").recv().await }, if stdin.is_some() => {
                    let msg = match d {
                        Some(data) => rt::AttachInput { data, ..Default::default() },
                        None => {
                            stdin = None;
                            rt::AttachInput { close_stdin: true, ..Default::default() }
                        }
                    };
                    if in_tx.send(msg).await.is_err() {
                        return;
                    }
                }
                s = async { resize.as_mut().expect("guarded").recv().await }, if resize.is_some() => {
                    match s {
                        Some((rows, cols)) => {
                            let msg = rt::AttachInput { rows: rows.into(), cols: cols.into(), ..Default::default() };
                            if in_tx.send(msg).await.is_err() {
                                return;
                            }
                        }
                        None => resize = None,
                    }
                }
                // Keeps the attach open while output flows.
                _ = in_tx.closed() => return,
                else => {
                    in_tx.closed().await;
                    return;
                }
            }
        }
    });
    // The container's output (stdout and stderr as one: the shim relays
    // them together) goes to the client's stdout, else its stderr.
    let sink = stdout.or(stderr);
    Ok(tokio::spawn(async move {
        while let Ok(Some(o)) = output.message().await {
            if let Some(s) = &sink
                && s.send(o.data).await.is_err()
            {
                return;
            }
        }
    }))
}

async fn attach(cri: &Cri, r: cri::AttachRequest, ch: Channels) -> Result<i32, Error> {
    let id = running(cri, &r.container_id).await?;
    let mut gone_rx = ch.gone.clone();
    let relay = relay_attach(cri, id, String::new(), ch).await?;
    tokio::select! {
        _ = relay => Ok(0),
        _ = gone(&mut gone_rx) => Err(client_gone()),
    }
}
