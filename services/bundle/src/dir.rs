//! A container's bundle directory, `<state>/runtime/<ns>/<id>/`: every file
//! molded's runtime and the shim pass to each other, named and typed once.
//!
//! ```text
//! config.json     the OCI spec                         runtime → shim
//! mounts.json     the rootfs mounts (see `mount`)      runtime → shim
//! stdio.json      a containerd client's FIFOs          runtime → shim
//! interactive     keep stdin open for attach clients   runtime → shim
//!                 ("once": close it when the first one leaves)
//! created.pid     the held container's init (--hold)   shim → runtime
//! hold.fifo       start or abandon a held container    runtime → shim
//! shim.pid        the shim's pid                       shim → runtime
//! init.pid        the container's init; written last   shim → runtime
//! attach.sock     attach clients (see `attach`)        shim ↔ runtime
//! log.json        docker's json-file log               shim → runtime
//! exit.json       how the container ended              shim → runtime
//! error           why the container did not start      shim → runtime
//! exit.published  /tasks/exit was sent, once           runtime
//! network.json    the CNI result                       runtime
//! exec/<id>.json       an exec's process                runtime → shim exec
//! exec/<id>.sock       an attached exec's socket        shim exec ↔ runtime
//! exec/<id>.task.json  a containerd client's exec       runtime
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Annotation on a container's spec: its working directory, when missing,
/// is created owned by the process's user (a build's RUN), not root.
/// A holding shim's orders (see [`Bundle::order_held`]): start the
/// container, or give it up (its init is killed, the shim records the exit).
pub const HOLD_START: u8 = b's';
/// tasks.v1 Create's `stdin` for a container whose stdin comes from attach
/// clients (molde's CRI asks for this), and for one whose stdin closes when
/// its first attach client leaves.
pub const STDIN_ATTACH: &str = "molde-attach://";
pub const STDIN_ATTACH_ONCE: &str = "molde-attach-once://";
pub const HOLD_ABANDON: u8 = b'x';

pub const WORKDIR_OWNER: &str = "io.molde.workdir-owner";

/// How a container ended, as its shim records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, or 128 + the signal that ended it.
    pub status: i32,
    #[serde(default)]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339, nanoseconds.
    #[serde(default)]
    pub exited_at: String,
}

/// FIFO paths a containerd client (ctr) gives for the task's stdio; empty for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stdio {
    #[serde(default)]
    pub stdin: String,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    /// A CRI log file the shim writes both streams to, in the kubelet's
    /// format, instead of FIFOs (a `cri-log://` stdout in tasks.v1 Create).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cri_log: String,
}

/// The process an exec runs in the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecProcess {
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

impl From<&oci_spec::runtime::Process> for ExecProcess {
    fn from(p: &oci_spec::runtime::Process) -> Self {
        ExecProcess {
            args: p.args().clone().unwrap_or_default(),
            env: p.env().clone().unwrap_or_default(),
            cwd: Some(p.cwd().display().to_string()),
            uid: Some(p.user().uid()),
            gid: Some(p.user().gid()),
            additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        }
    }
}

/// An exec a containerd client (ctr task exec) created, waiting for its Start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskExec {
    pub process: ExecProcess,
    #[serde(flatten)]
    pub stdio: Stdio,
}

/// One record of `log.json` (docker's json-file format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub time: String,
}

/// The files of one exec, named after its process file (`exec/<id>.json`,
/// what `molde-shim exec --process` is given): `<id>.pid` (the exec'd
/// process's host pid, for a timeout's kill) and `<id>.process.json` (the
/// OCI process the shim hands libcontainer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFiles {
    process: PathBuf,
}

impl ExecFiles {
    pub fn of(process: impl Into<PathBuf>) -> ExecFiles {
        ExecFiles {
            process: process.into(),
        }
    }

    pub fn process(&self) -> &Path {
        &self.process
    }

    pub fn runtime_process(&self) -> PathBuf {
        self.process.with_extension("process.json")
    }

    pub fn write_pid(&self, pid: i32) -> io::Result<()> {
        fs::write(self.process.with_extension("pid"), pid.to_string())
    }

    pub fn pid(&self) -> Option<i32> {
        read_pid(&self.process.with_extension("pid"))
    }

    /// Every file of the exec, once it ended.
    pub fn remove(&self) {
        for p in [
            self.process.with_extension("pid"),
            self.runtime_process(),
            self.process.clone(),
        ] {
            let _ = fs::remove_file(p);
        }
    }
}

/// A bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    dir: PathBuf,
}

fn read_pid(p: &Path) -> Option<i32> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Writes `data` to `path` whole or not at all: readers poll for these files.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

/// docker's json-file log options: rotate `log.json` at `max_size` bytes
/// (0: never), keeping `max_file` files in all (the current one counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    pub max_size: u64,
    pub max_file: u32,
}

impl LogOptions {
    /// Renames the rotated files one up (dropping the oldest past
    /// `max_file`) and the current one to `log.json.1`; with one file
    /// kept, the current one is emptied instead.
    pub fn rotate(&self, b: &Bundle) -> io::Result<()> {
        let keep = self.max_file.max(1);
        if keep == 1 {
            return fs::File::create(b.log()).map(|_| ());
        }
        let _ = fs::remove_file(b.rotated_log(keep - 1));
        for n in (1..keep - 1).rev() {
            if b.rotated_log(n).exists() {
                fs::rename(b.rotated_log(n), b.rotated_log(n + 1))?;
            }
        }
        fs::rename(b.log(), b.rotated_log(1))
    }
}

/// A container's health (`health.json`), as docker's inspect shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// starting, healthy, unhealthy
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "FailingStreak")]
    pub failing_streak: u32,
    /// The last few checks.
    #[serde(rename = "Log", default)]
    pub log: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "Start")]
    pub start: String,
    #[serde(rename = "End")]
    pub end: String,
    #[serde(rename = "ExitCode")]
    pub exit_code: i32,
    #[serde(rename = "Output")]
    pub output: String,
}

impl Bundle {
    pub fn new(dir: impl Into<PathBuf>) -> Bundle {
        Bundle { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The stored OCI spec.
    pub fn spec(&self) -> io::Result<oci_spec::runtime::Spec> {
        oci_spec::runtime::Spec::load(self.config())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("log.json")
    }

    pub fn attach_socket(&self) -> PathBuf {
        self.dir.join("attach.sock")
    }

    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    pub fn network(&self) -> PathBuf {
        self.dir.join("network.json")
    }

    /// The container's CNI attachment, if it has one.
    pub fn network_record(&self) -> io::Result<Option<crate::NetworkRecord>> {
        match fs::read(self.network()) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("network.json: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_network_record(&self, r: &crate::NetworkRecord) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        write_atomic(&self.network(), &serde_json::to_vec(r)?)
    }

    /// Marks the attachment torn down: the record stays, under another name,
    /// for inspection, and is never torn down again.
    pub fn release_network_record(&self) -> io::Result<()> {
        fs::rename(self.network(), self.network().with_extension("json.released"))
    }

    /// The log's records from byte `from` on, and the offset after the last
    /// whole line; lines that are not records are skipped. A log that is
    /// shorter than `from` was rotated: it is read from its start.
    pub fn log_records(&self, from: u64) -> (Vec<LogRecord>, u64) {
        let Ok(data) = fs::read(self.log()) else {
            return (Vec::new(), from);
        };
        let from = if (data.len() as u64) < from { 0 } else { from };
        let mut out = Vec::new();
        let mut pos = from as usize;
        while let Some(nl) = data.get(pos..).and_then(|d| d.iter().position(|b| *b == b'\n')) {
            if let Ok(r) = serde_json::from_slice::<LogRecord>(&data[pos..pos + nl]) {
                out.push(r);
            }
            pos += nl + 1;
        }
        (out, pos as u64)
    }

    /// Every record the log still has: its rotated files, oldest first,
    /// then the current one (with the offset after its last whole line).
    pub fn all_log_records(&self) -> (Vec<LogRecord>, u64) {
        let mut out = Vec::new();
        for n in (1..=self.log_options().max_file.max(1)).rev() {
            if let Ok(data) = fs::read(self.rotated_log(n)) {
                out.extend(
                    data.split(|b| *b == b'\n')
                        .filter_map(|l| serde_json::from_slice::<LogRecord>(l).ok()),
                );
            }
        }
        let (current, end) = self.log_records(0);
        out.extend(current);
        (out, end)
    }

    /// `log.json.N`: the Nth newest rotated log file.
    pub fn rotated_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("log.json.{n}"))
    }

    /// How the shim rotates `log.json` (`--log-opt`).
    pub fn log_options(&self) -> LogOptions {
        fs::read(self.dir.join("log-options.json"))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    pub fn write_log_options(&self, o: &LogOptions) -> io::Result<()> {
        write_atomic(&self.dir.join("log-options.json"), &serde_json::to_vec(o)?)
    }

    /// Where execs keep their files; created by `write_exec`.
    pub fn exec_dir(&self) -> PathBuf {
        self.dir.join("exec")
    }

    /// The process file `molde-shim exec --process` reads.
    pub fn exec_process(&self, exec_id: &str) -> PathBuf {
        self.exec_dir().join(format!("{exec_id}.json"))
    }

    pub fn exec_socket(&self, exec_id: &str) -> PathBuf {
        self.exec_dir().join(format!("{exec_id}.sock"))
    }

    pub fn write_exec(&self, exec_id: &str, p: &ExecProcess) -> io::Result<PathBuf> {
        fs::create_dir_all(self.exec_dir())?;
        let path = self.exec_process(exec_id);
        fs::write(&path, serde_json::to_vec(p)?)?;
        Ok(path)
    }

    fn task_exec_path(&self, exec_id: &str) -> PathBuf {
        self.exec_dir().join(format!("{exec_id}.task.json"))
    }

    pub fn write_task_exec(&self, exec_id: &str, t: &TaskExec) -> io::Result<()> {
        fs::create_dir_all(self.exec_dir())?;
        fs::write(self.task_exec_path(exec_id), serde_json::to_vec(t)?)
    }

    /// A containerd client's exec; None when it was never created (or deleted).
    pub fn task_exec(&self, exec_id: &str) -> io::Result<Option<TaskExec>> {
        match fs::read(self.task_exec_path(exec_id)) {
            Ok(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("parsing exec {exec_id}: {e}"))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove_task_exec(&self, exec_id: &str) {
        let _ = fs::remove_file(self.task_exec_path(exec_id));
    }

    pub fn write_shim_pid(&self, pid: u32) -> io::Result<()> {
        fs::write(self.dir.join("shim.pid"), pid.to_string())
    }

    pub fn shim_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("shim.pid"))
    }

    /// Written by a shim started with `--hold` once the container is created
    /// and waits for its start: its init's pid.
    pub fn write_created_pid(&self, pid: i32) -> io::Result<()> {
        write_atomic(&self.dir.join("created.pid"), pid.to_string().as_bytes())
    }

    pub fn created_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("created.pid"))
    }

    /// The FIFO a holding shim reads its order from: [`HOLD_START`] or
    /// [`HOLD_ABANDON`].
    pub fn hold_fifo(&self) -> PathBuf {
        self.dir.join("hold.fifo")
    }

    /// Gives a holding shim its order. `Ok(false)` when no shim holds the
    /// container (none reads the FIFO).
    pub fn order_held(&self, order: u8) -> io::Result<bool> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        match rustix::fs::open(self.hold_fifo(), flags, Mode::empty()) {
            Ok(fd) => {
                rustix::io::write(&fd, &[order])?;
                Ok(true)
            }
            Err(rustix::io::Errno::NXIO | rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Written last by the shim: molded takes it as "started".
    pub fn write_init_pid(&self, pid: i32) -> io::Result<()> {
        write_atomic(&self.dir.join("init.pid"), pid.to_string().as_bytes())
    }

    pub fn init_pid(&self) -> Option<i32> {
        read_pid(&self.dir.join("init.pid"))
    }

    /// When the shim wrote `init.pid`: the start of the current run.
    pub fn started_at(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.dir.join("init.pid")).ok()?.modified().ok()
    }

    pub fn write_exit(&self, e: &Exit) -> io::Result<()> {
        write_atomic(&self.dir.join("exit.json"), &serde_json::to_vec(e)?)
    }

    /// How the container ended, once its shim recorded it. A record that
    /// cannot be read says the shim was cut short writing it: status 255.
    pub fn exit(&self) -> Option<Exit> {
        let raw = fs::read(self.dir.join("exit.json")).ok()?;
        Some(serde_json::from_slice(&raw).unwrap_or(Exit {
            status: 255,
            signal: None,
            oom_killed: false,
            exited_at: String::new(),
        }))
    }

    pub fn write_error(&self, msg: &str) -> io::Result<()> {
        write_atomic(&self.dir.join("error"), msg.as_bytes())
    }

    /// Why the container did not start, when its shim failed.
    pub fn error(&self) -> Option<String> {
        fs::read_to_string(self.dir.join("error"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn write_stdio(&self, s: &Stdio) -> io::Result<()> {
        fs::write(self.dir.join("stdio.json"), serde_json::to_vec(s)?)
    }

    /// The FIFOs a containerd client gave, if it gave any.
    pub fn stdio(&self) -> io::Result<Option<Stdio>> {
        match fs::read(self.dir.join("stdio.json")) {
            Ok(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("parsing stdio.json: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn set_interactive(&self) -> io::Result<()> {
        fs::write(self.dir.join("interactive"), b"")
    }

    /// Interactive, and stdin closes once the first attach client leaves
    /// (the CRI's `stdin_once`).
    pub fn set_interactive_once(&self) -> io::Result<()> {
        fs::write(self.dir.join("interactive"), b"once")
    }

    pub fn interactive(&self) -> bool {
        self.dir.join("interactive").exists()
    }

    pub fn stdin_once(&self) -> bool {
        fs::read(self.dir.join("interactive")).is_ok_and(|b| b == b"once")
    }

    /// Marks the exit as published; true for the one caller that marked it.
    pub fn mark_exit_published(&self) -> bool {
        fs::File::options()
            .write(true)
            .create_new(true)
            .open(self.dir.join("exit.published"))
            .is_ok()
    }

    pub fn exit_published(&self) -> bool {
        self.dir.join("exit.published").exists()
    }

    /// The container's health as molded's checks left it.
    pub fn health(&self) -> Option<Health> {
        serde_json::from_slice(&fs::read(self.dir.join("health.json")).ok()?).ok()
    }

    pub fn write_health(&self, h: &Health) -> io::Result<()> {
        write_atomic(&self.dir.join("health.json"), &serde_json::to_vec(h)?)
    }

    /// How often molded started the container again by its restart policy
    /// since the user last started it.
    pub fn restart_count(&self) -> u32 {
        fs::read_to_string(self.dir.join("restarts"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn set_restart_count(&self, n: u32) -> io::Result<()> {
        write_atomic(&self.dir.join("restarts"), n.to_string().as_bytes())
    }

    /// Forgets the last run before the container starts again (`molde
    /// start` of an exited container): its pids, exit, error, sockets and
    /// execs go; its spec, mounts, log and released network record stay.
    pub fn clear_run(&self) -> io::Result<()> {
        for f in [
            "init.pid",
            "shim.pid",
            "created.pid",
            "exit.json",
            "exit.published",
            "error",
            "attach.sock",
            "console.sock",
            "health.json",
        ] {
            match fs::remove_file(self.dir.join(f)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::remove_dir_all(self.exec_dir()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_written_by_one_side_read_on_the_other() {
        let d = tempfile::tempdir().unwrap();
        let b = Bundle::new(d.path());
        assert_eq!(b.init_pid(), None);
        assert_eq!(b.exit(), None);
        assert_eq!(b.stdio().unwrap(), None);
        b.write_init_pid(42).unwrap();
        assert_eq!(b.init_pid(), Some(42));
        let e = Exit {
            status: 137,
            signal: Some(9),
            oom_killed: true,
            exited_at: "2026-01-01T00:00:00Z".into(),
        };
        b.write_exit(&e).unwrap();
        assert_eq!(b.exit(), Some(e));
        let s = Stdio {
            stdin: "/tmp/in".into(),
            ..Default::default()
        };
        b.write_stdio(&s).unwrap();
        assert_eq!(b.stdio().unwrap(), Some(s));
        assert!(b.mark_exit_published());
        assert!(!b.mark_exit_published(), "once");
        b.write_error("no such file\n").unwrap();
        assert_eq!(b.error().as_deref(), Some("no such file"));
    }
}
