//! Attaching to a container: `<bundle>/attach.sock` takes clients (molded,
//! relaying `molde run -it` or `molde attach`); an interactive exec serves
//! `<bundle>/exec/<id>.sock` the same way. Each client gets the
//! container's output as raw bytes and sends frames back
//! (`molde_bundle::attach::Frame`: stdin, a terminal resize, close stdin).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use molde_bundle::attach::Frame;

/// Where attached clients' input goes and who receives output.
#[derive(Clone, Default)]
pub struct Attach {
    clients: Arc<Mutex<Vec<UnixStream>>>,
    /// The container's stdin: its pipe's write end, or the pty master.
    input: Arc<Mutex<Option<File>>>,
    /// The pty master, for resizes.
    master: Arc<Mutex<Option<OwnedFd>>>,
    /// Reopens the container's log file, when it has one that rotates.
    reopen: Arc<Mutex<Option<ReopenFn>>>,
    /// Close stdin when the first client leaves (the CRI's `stdin_once`).
    stdin_once: Arc<std::sync::atomic::AtomicBool>,
    /// The last size a client asked for: a terminal that comes later (an
    /// exec's) starts with it.
    size: Arc<Mutex<Option<(u16, u16)>>>,
}

type ReopenFn = Box<dyn Fn() -> std::io::Result<()> + Send>;

impl Attach {
    pub fn new(input: Option<File>, master: Option<OwnedFd>) -> Attach {
        Attach {
            clients: Default::default(),
            input: Arc::new(Mutex::new(input)),
            master: Arc::new(Mutex::new(master)),
            reopen: Default::default(),
            stdin_once: Default::default(),
            size: Default::default(),
        }
    }

    /// Closes the container's stdin once its first attach client leaves.
    pub fn close_stdin_after_first_client(&self) {
        self.stdin_once.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// What a `ReopenLog` frame does.
    pub fn on_reopen(&self, f: impl Fn() -> std::io::Result<()> + Send + 'static) {
        *self.reopen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Sends output to every attached client, dropping those that went away.
    pub fn broadcast(&self, data: &[u8]) {
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        c.retain_mut(|s| s.write_all(data).is_ok());
    }

    /// Ends every client's output stream (the container exited).
    pub fn close(&self) {
        let mut c = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for s in c.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Gives attach clients a terminal that came after them (an exec's).
    pub fn set_terminal(&self, master: OwnedFd) -> std::io::Result<()> {
        let input = File::from(master.try_clone()?);
        *self.input.lock().unwrap_or_else(|p| p.into_inner()) = Some(input);
        if let Some((rows, cols)) = *self.size.lock().unwrap_or_else(|p| p.into_inner()) {
            resize(&master, rows, cols);
        }
        *self.master.lock().unwrap_or_else(|p| p.into_inner()) = Some(master);
        Ok(())
    }

    /// Waits up to `limit` for a first client; false if none came.
    pub fn wait_client(&self, limit: std::time::Duration) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if !self.clients.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    }

    /// Accepts clients on the socket at `path` on a thread of its own.
    pub fn serve(&self, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(molde_bundle::sock::reachable(path)?.path())?;
        let me = self.clone();
        std::thread::Builder::new().stack_size(64 << 10).spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(out) = conn.try_clone() {
                    me.clients.lock().unwrap_or_else(|p| p.into_inner()).push(out);
                }
                let me = me.clone();
                let _ = std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || me.read_client(conn));
            }
        })?;
        Ok(())
    }

    fn read_client(&self, mut conn: UnixStream) {
        // A frame the codec refuses ends this client, as its going away does.
        while let Ok(Some(frame)) = Frame::read(&mut conn) {
            match frame {
                Frame::Stdin(data) => {
                    if let Some(f) = self.input.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                        let _ = f.write_all(&data);
                    }
                }
                Frame::Resize { rows, cols } => {
                    let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
                    *self.size.lock().unwrap_or_else(|p| p.into_inner()) = Some((rows, cols));
                    if let Some(m) = master.as_ref() {
                        resize(m, rows, cols);
                    }
                }
                Frame::ReopenLog => {
                    if let Some(f) = self.reopen.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                        && let Err(e) = f()
                    {
                        eprintln!("molde-shim: reopening the container log: {e}");
                    }
                    // The connection's end tells the client the new file is open.
                    let _ = conn.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Frame::CloseStdin => self.close_stdin(),
            }
        }
        if self.stdin_once.load(std::sync::atomic::Ordering::Relaxed) {
            self.close_stdin();
        }
    }

    fn close_stdin(&self) {
        // Closing our end of a pipe gives the container EOF; a pty gets ^D.
        let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
        if self.master.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            if let Some(f) = input.as_mut() {
                let _ = f.write_all(&[4]);
            }
        } else {
            *input = None;
        }
    }
}

/// Sets a terminal's size.
fn resize(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize the call borrows; the fd is the pty master we own.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

/// Receives the pty master libcontainer sends over the console socket.
pub fn receive_master(listener: &UnixListener) -> anyhow::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(fd) = fds.first()
        {
            // SAFETY: SCM_RIGHTS gave this process a new descriptor that nothing else owns.
            return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(*fd) });
        }
    }
    anyhow::bail!("the console socket carried no terminal")
}
