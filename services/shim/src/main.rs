//! molde-shim: one small process per container.
//!
//! `molde-shim start --id ID --bundle DIR --state DIR` mounts the rootfs the
//! bundle's `mounts.json` describes at `DIR/rootfs`, creates and starts the
//! container from `DIR/config.json` with youki's libcontainer, copies the
//! container's stdout and stderr into `DIR/log.json` (docker's json-file
//! format: one `{"log","stream","time"}` object per line), reaps it, writes
//! `DIR/exit.json`, tears the container down and exits with its status.
//!
//! The shim is single-threaded while libcontainer clones: the log readers are
//! started only after the container runs. The container's init is created with
//! `CLONE_PARENT` by libcontainer's intermediate process, so it is this
//! process's child and its exit status is ours to collect.

mod attach;
mod cgroupfs;
mod crilog;
mod devices;
mod exec;
mod hold;
mod seccomp;
mod spare;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use molde_bundle::{Bundle, ExecProcess, Exit, LogRecord};
use nix::sys::wait::{WaitStatus, waitpid};

/// Opens one stdio FIFO (or /dev/null for an empty path). Opened read-write,
/// a FIFO never blocks the open; the container holds the only copies once it
/// runs, so the reader sees EOF when it exits.
fn open_fifo(path: &str, write: bool) -> Result<OwnedFd> {
    if path.is_empty() {
        return Ok(File::options().read(true).write(write).open("/dev/null")?.into());
    }
    let f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    Ok(f.into())
}

/// Kills every process left in the container's cgroup.
fn kill_leftovers(cgroups_path: &str) {
    for pid in molde_bundle::cgroup::Cgroup::new(cgroups_path).procs() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

struct Args {
    exec: bool,
    /// `spare`: the container (id, bundle, hold) comes later, from molded.
    spare: bool,
    id: String,
    bundle: PathBuf,
    state: PathBuf,
    /// For exec: a JSON file with the process to run.
    process: Option<PathBuf>,
    /// For exec -i/-t: the socket its attach client connects to.
    attach: Option<PathBuf>,
    /// For exec -t: give the process a terminal.
    tty: bool,
    /// For start: create the container, then wait for molded's order to
    /// start it (containerd's task create, then start).
    hold: bool,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    if cmd != "start" && cmd != "exec" && cmd != "spare" {
        bail!(
            "usage: molde-shim start|exec --id ID --bundle DIR --state DIR [--hold] [--process FILE] [--attach SOCK] [--tty]\n       molde-shim spare --state DIR [--title PAD]"
        );
    }
    let (mut id, mut bundle, mut state, mut process, mut attach, mut tty, mut hold) =
        (None, None, None, None, None, false, false);
    while let Some(a) = it.next() {
        if a == "--tty" || a == "--hold" {
            tty |= a == "--tty";
            hold |= a == "--hold";
            continue;
        }
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--id" => id = Some(v),
            "--bundle" => bundle = Some(PathBuf::from(v)),
            "--state" => state = Some(PathBuf::from(v)),
            "--process" => process = Some(PathBuf::from(v)),
            "--attach" => attach = Some(PathBuf::from(v)),
            "--title" if cmd == "spare" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    if cmd == "spare" {
        // The container comes later, from molded (see `spare`).
        return Ok(Args {
            exec: false,
            spare: true,
            id: String::new(),
            bundle: PathBuf::new(),
            state: state.context("--state is required")?,
            process: None,
            attach: None,
            tty: false,
            hold: false,
        });
    }
    Ok(Args {
        exec: cmd == "exec",
        spare: false,
        id: id.context("--id is required")?,
        bundle: bundle.context("--bundle is required")?,
        state: state.context("--state is required")?,
        process,
        attach,
        tty,
        hold,
    })
}

/// Creates `path` (absolute in the container) and its missing parents in
/// `rootfs`, as docker does for a working directory that is not there;
/// what it creates belongs to `owner` when given (a build's WORKDIR).
/// Every lookup resolves inside the rootfs (`RESOLVE_IN_ROOT`), so links in
/// the image cannot lead the creation outside it.
fn ensure_dir(rootfs: &Path, path: &str, owner: Option<(u32, u32)>) -> Result<()> {
    use rustix::fs::{Mode, OFlags, ResolveFlags, mkdirat, open, openat2};
    let root = open(
        rootfs,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut prefix = String::from("/");
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = openat2(&root, prefix.as_str(), flags, Mode::empty(), how)?;
        match mkdirat(&parent, c, Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                if let Some((uid, gid)) = owner {
                    rustix::fs::chownat(
                        &parent,
                        c,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                }
            }
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(c);
    }
    // It must be a directory now (an existing file would fail here).
    openat2(&root, prefix.as_str(), flags, Mode::empty(), how)?;
    Ok(())
}

fn mount_rootfs(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<PathBuf> {
    let mut target = bundle.join("rootfs");
    if let Some(root) = spec.root().as_ref().map(|r| r.path()).filter(|p| p.is_absolute()) {
        // A rootfs placed outside the bundle (a userns pod's container, whose
        // root cannot enter the bundle): `rootfs` in the bundle links to it,
        // so whatever finds the rootfs there still does.
        fs::create_dir_all(root)?;
        let link = bundle.join("rootfs");
        if link.is_dir() && !link.is_symlink() {
            fs::remove_dir(&link)?;
        }
        if !link.is_symlink() {
            std::os::unix::fs::symlink(root, &link)?;
        }
        target = root.clone();
    }
    fs::create_dir_all(&target)?;
    let mounts = molde_bundle::mount::read(bundle)?;
    match pod_userns(spec)? {
        Some((userns, owner)) => molde_bundle::mount::mount_all_idmapped(&mounts, &target, &userns, owner)
            .context("mounting the rootfs idmapped")?,
        None => molde_bundle::mount::mount_all(&mounts, &target, false).context("mounting the rootfs")?,
    }
    Ok(target)
}

/// The user namespace a container joins by path (a pod's own) and the host
/// uid and gid its root maps to, from the bundle's spec.
fn pod_userns(spec: &oci_spec::runtime::Spec) -> Result<Option<(PathBuf, (u32, u32))>> {
    let Some(linux) = spec.linux() else {
        return Ok(None);
    };
    let Some(path) = linux
        .namespaces()
        .iter()
        .flatten()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        .and_then(|n| n.path().clone())
    else {
        return Ok(None);
    };
    let root = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
    };
    let (Some(uid), Some(gid)) = (root(linux.uid_mappings()), root(linux.gid_mappings())) else {
        anyhow::bail!(
            "the spec joins the user namespace {} without the maps of its root",
            path.display()
        );
    };
    Ok(Some((path, (uid, gid))))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `log.json`, rotated as the bundle's log options say (`--log-opt`).
struct LogWriter {
    file: File,
    bundle: Bundle,
    size: u64,
    options: molde_bundle::LogOptions,
}

impl LogWriter {
    fn open(bundle: &Bundle) -> std::io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(bundle.log())?;
        Ok(LogWriter {
            size: file.metadata()?.len(),
            file,
            bundle: Bundle::new(bundle.dir()),
            options: bundle.log_options(),
        })
    }

    /// Writes one record; the file is rotated first when the record would
    /// take it past max-size (as docker's json-file does), so the current
    /// file is never left empty and no file grows past the limit.
    fn write(&mut self, line: &[u8]) {
        let max = self.options.max_size;
        if max > 0 && self.size > 0 && self.size + line.len() as u64 > max {
            let reopened = self.options.rotate(&self.bundle).and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.bundle.log())
            });
            match reopened {
                Ok(f) => {
                    self.file = f;
                    self.size = 0;
                }
                Err(e) => eprintln!("molde-shim: rotating the log: {e}"),
            }
        }
        if self.file.write_all(line).is_ok() {
            self.size += line.len() as u64;
        }
    }
}

/// Copies one output stream of the container into the log, record by record.
fn pump(
    mut from: File,
    stream: &'static str,
    log: Arc<Mutex<LogWriter>>,
    attach: attach::Attach,
) -> std::thread::JoinHandle<()> {
    // A small stack: the shim stays small for every container it runs.
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                attach.broadcast(&buf[..n]);
                let rec = LogRecord {
                    log: String::from_utf8_lossy(&buf[..n]).into_owned(),
                    stream: stream.to_string(),
                    time: now(),
                };
                let mut line = serde_json::to_vec(&rec).expect("json");
                line.push(b'\n');
                let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
                f.write(&line);
            }
        })
        .expect("spawning a log reader")
}

/// Gives back what creating the container needed and watching it does not:
/// free heap pages, and the resident pages of file mappings (this binary's
/// libcontainer code, shared libraries) that fault back in if ever used again.
fn shrink() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    // The file mappings, with their advice: collected first, so the code
    // that parses is not faulted back in after its pages were dropped.
    let mut advice: Vec<(usize, usize, i32)> = Vec::with_capacity(64);
    let mut current: Option<(usize, usize, bool)> = None;
    let mut anonymous = 0u64;
    let mut decide = |m: Option<(usize, usize, bool)>, anonymous: u64| {
        if let Some((start, end, read_only)) = m {
            // Pages never written (code, constants) are dropped from this
            // process's page tables, which takes them out of its RSS even when
            // other processes share them (libc); they fault back in from the
            // file. Anything else is only paged out.
            let how = if read_only && anonymous == 0 {
                libc::MADV_DONTNEED
            } else {
                libc::MADV_PAGEOUT
            };
            advice.push((start, end, how));
        }
    };
    for line in smaps.lines() {
        if let Some(v) = line.strip_prefix("Anonymous:") {
            anonymous = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(1);
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        decide(current.take(), anonymous);
        anonymous = 0;
        let path = f.next().unwrap_or("");
        if inode != "0" && path.starts_with('/') {
            current = Some((start, end, !perms.contains('w')));
        }
    }
    decide(current, anonymous);
    drop(smaps);
    for &(start, end, how) in &advice {
        // SAFETY: both advices act on an existing file mapping of this process.
        // MADV_DONTNEED is given only where no page was ever written
        // (read-only mapping, no anonymous copies), so refaulting from the
        // file yields the same bytes; MADV_PAGEOUT never changes contents.
        // MADV_RANDOM: a later fault brings in its own page, not its neighbours.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_RANDOM);
            libc::madvise(start as *mut libc::c_void, end - start, how);
        }
    }
}

fn run(args: &Args) -> Result<i32> {
    let bundle = Bundle::new(&args.bundle);
    // molded tells "the container is exiting" from "the shim is gone" by this.
    bundle.write_shim_pid(std::process::id())?;
    let mut spec = bundle.spec().context("reading config.json")?;
    let rootfs = mount_rootfs(&args.bundle, &spec)?;
    // A containerd client (ctr) hands FIFOs to write into; molde's own runs
    // get pipes that this shim copies into log.json.
    let fifos = bundle.stdio()?;
    // A CRI container: both streams go to the kubelet's log file.
    let cri_log = fifos
        .as_ref()
        .filter(|io| !io.cri_log.is_empty())
        .map(|io| PathBuf::from(&io.cri_log));
    // No FIFOs at all (a CRI container without a log path): pipes, as for
    // molde's own runs, so stdin can still come from attach clients.
    let fifos = fifos.filter(|io| {
        io.cri_log.is_empty() && !(io.stdin.is_empty() && io.stdout.is_empty() && io.stderr.is_empty())
    });
    if seccomp::order_args_for_libcontainer(&mut spec) {
        spec.save(bundle.config())
            .context("writing config.json with libcontainer's seccomp argument order")?;
    }
    if let Some(p) = spec.process() {
        let for_user = spec
            .annotations()
            .as_ref()
            .is_some_and(|a| a.get(molde_bundle::WORKDIR_OWNER).is_some_and(|v| v == "user"));
        let owner = for_user.then(|| (p.user().uid(), p.user().gid()));
        ensure_dir(&rootfs, &p.cwd().to_string_lossy(), owner)
            .with_context(|| format!("creating the working directory {}", p.cwd().display()))?;
    }
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // molde run -i: molded keeps the container's stdin open for attach clients.
    let interactive = bundle.interactive();
    let mut stdin_w: Option<File> = None;
    let (stdin, stdout, stderr, pipes): (OwnedFd, OwnedFd, OwnedFd, Option<(OwnedFd, OwnedFd)>) = match &fifos
    {
        Some(io) => (
            open_fifo(&io.stdin, false)?,
            open_fifo(&io.stdout, true)?,
            open_fifo(&io.stderr, true)?,
            None,
        ),
        None => {
            let (out_r, out_w) = nix::unistd::pipe().context("creating the stdout pipe")?;
            let (err_r, err_w) = nix::unistd::pipe().context("creating the stderr pipe")?;
            let stdin: OwnedFd = if interactive && !terminal {
                let (r, w) = nix::unistd::pipe().context("creating the stdin pipe")?;
                stdin_w = Some(File::from(w));
                r
            } else {
                File::open("/dev/null")?.into()
            };
            (stdin, out_w, err_w, Some((out_r, err_r)))
        }
    };
    let console = if terminal {
        let path = bundle.console_socket();
        let _ = fs::remove_file(&path);
        let reach = molde_bundle::sock::reachable(&path)?;
        Some((std::os::unix::net::UnixListener::bind(reach.path())?, reach))
    } else {
        None
    };
    fs::create_dir_all(&args.state)?;
    let container = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state)
        .context("libcontainer state root")?
        .with_executor(DefaultExecutor {})
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_console_socket(console.as_ref().map(|(_, reach)| reach.path().to_path_buf()))
        .as_init(&args.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let mut container = match container {
        Ok(c) => c,
        Err(e) => {
            // The container's init logs its failing step's cause on what
            // was to be its stderr.
            let cause = pipes.as_ref().map(|(_, err_r)| drain(err_r)).unwrap_or_default();
            return Err(anyhow::Error::new(e).context(format!(
                "creating container {}{}",
                args.id,
                cause_of(&cause)
            )));
        }
    };
    // cgroup v2: the device rules as a BPF program, before the process runs.
    if let Err(e) = devices::apply(
        &spec,
        container
            .pid()
            .context("the created container has no pid")?
            .as_raw(),
    ) {
        let _ = container.delete(true);
        return Err(e);
    }
    if cgroupfs::wants_read_only(&spec) {
        let init = container.pid().context("the created container has no pid")?;
        if let Err(e) = cgroupfs::make_read_only(nix::unistd::Pid::from_raw(init.as_raw())) {
            let _ = container.delete(true);
            return Err(e);
        }
    }
    let pid = nix::unistd::Pid::from_raw(
        container
            .pid()
            .context("the created container has no pid")?
            .as_raw(),
    );
    let mut readers = Vec::new();
    let log = Arc::new(Mutex::new(LogWriter::open(&bundle)?));
    let cri_log = match &cri_log {
        Some(p) => Some(crilog::CriLog::open(p).with_context(|| format!("opening the log {}", p.display()))?),
        None => None,
    };
    let attach = match &console {
        Some((listener, _)) => {
            let master = attach::receive_master(listener).context("receiving the container's terminal")?;
            let reader = File::from(master.try_clone()?);
            let input = File::from(master.try_clone()?);
            let a = attach::Attach::new(Some(input), Some(master));
            match &cri_log {
                Some(cri) => {
                    readers.push(crilog::pump(reader, "stdout", cri.clone(), a.clone()));
                    let cri = cri.clone();
                    a.on_reopen(move || cri.reopen());
                }
                None => readers.push(pump(reader, "stdout", log.clone(), a.clone())),
            }
            a
        }
        None => attach::Attach::new(stdin_w, None),
    };
    if bundle.stdin_once() {
        attach.close_stdin_after_first_client();
    }
    match (pipes, &cri_log) {
        (Some((out_r, err_r)), Some(cri)) => {
            readers.push(crilog::pump(
                File::from(out_r),
                "stdout",
                cri.clone(),
                attach.clone(),
            ));
            readers.push(crilog::pump(
                File::from(err_r),
                "stderr",
                cri.clone(),
                attach.clone(),
            ));
            let cri = cri.clone();
            attach.on_reopen(move || cri.reopen());
        }
        (Some((out_r, err_r)), None) => {
            readers.push(pump(File::from(out_r), "stdout", log.clone(), attach.clone()));
            readers.push(pump(File::from(err_r), "stderr", log, attach.clone()));
        }
        (None, _) => {}
    }
    attach
        .serve(&bundle.attach_socket())
        .context("serving attach.sock")?;
    // The container is created, its log and attach socket ready: with
    // --hold, it waits here for molded's order, so a start is one write.
    let held = if args.hold {
        hold::hold(&bundle, pid)?
    } else {
        hold::Held::Start
    };
    let ended = match held {
        hold::Held::Start => {
            container
                .start()
                .with_context(|| format!("starting container {}", args.id))?;
            // Written last: molded takes init.pid as "started", and by then
            // attach.sock answers.
            bundle.write_init_pid(pid.as_raw())?;
            None
        }
        hold::Held::Abandon => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
        hold::Held::Ended(status) => Some(status),
    };
    // A container that runs on is watched by a small process; one that exits
    // at once is not slowed down by pages faulting back in.
    let _ = std::thread::Builder::new().stack_size(64 << 10).spawn(|| {
        std::thread::sleep(std::time::Duration::from_secs(1));
        shrink();
    });
    let ended = match ended {
        Some(status) => status,
        None => loop {
            match waitpid(pid, None) {
                Ok(s @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break s,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => bail!("waiting for container {}: {e}", args.id),
            }
        },
    };
    let (status, signal) = match ended {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        other => bail!("container {}: unexpected wait status {other:?}", args.id),
    };
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // The container ends with its init: what it left running (in a pod's
    // shared PID namespace its children outlive it) is killed, and with it
    // the last holders of its output pipes.
    kill_leftovers(&cgroups_path);
    let start = std::time::Instant::now();
    while readers.iter().any(|r| !r.is_finished()) && start.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    attach.close();
    let oom_killed =
        !cgroups_path.is_empty() && molde_bundle::cgroup::Cgroup::new(&cgroups_path).oom_kills() > 0;
    let _ = container.delete(true);
    let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
    let exit = Exit {
        status,
        signal,
        oom_killed,
        exited_at: now(),
    };
    bundle.write_exit(&exit)?;
    Ok(status)
}

/// What is buffered in a pipe now, without waiting for more.
fn drain(fd: &OwnedFd) -> String {
    let _ = rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = rustix::io::read(fd, &mut buf) {
        if n == 0 || out.len() > 64 << 10 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first error libcontainer logged in `log`: its processes say which
/// step failed and why only through tracing, not in the error they return.
fn cause_of(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split_once(" ERROR ").map(|(_, rest)| rest.trim()))
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

fn main() {
    // One malloc arena: the shim's few threads need no more, and each arena costs memory.
    // SAFETY: mallopt only tunes the allocator, before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // libcontainer says why a step failed only through tracing: its errors go
    // to this process's stderr, the bundle's shim.log.
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::ERROR)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("molde-shim: {e:#}");
            std::process::exit(2);
        }
    };
    if args.spare {
        let a = match spare::wait() {
            Ok(Some(a)) => a,
            Ok(None) => std::process::exit(0),
            Err(e) => {
                eprintln!("molde-shim: {e:#}");
                std::process::exit(2);
            }
        };
        if let Err(e) = spare::take_stdio(&a) {
            let _ = Bundle::new(&a.bundle).write_error(&format!("{e:#}"));
            std::process::exit(125);
        }
        let argv0 = std::env::args().next().unwrap_or_else(|| "molde-shim".into());
        let (bundle, state) = (a.bundle.to_string_lossy(), args.state.to_string_lossy());
        let mut title = vec![
            argv0.as_str(),
            "start",
            "--id",
            &a.id,
            "--bundle",
            &bundle,
            "--state",
            &state,
        ];
        if a.hold {
            title.push("--hold");
        }
        spare::retitle(&title);
        args.id = a.id.clone();
        args.bundle = a.bundle.clone();
        args.hold = a.hold;
    }
    if args.exec {
        match exec::exec(&args) {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("molde-shim: {e:#}");
                std::process::exit(126);
            }
        }
    }
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // molded reads this to report why the container did not run.
            let msg = format!("{e:#}");
            eprintln!("molde-shim: {msg}");
            let bundle = Bundle::new(&args.bundle);
            let _ = bundle.write_error(&msg);
            let _ = rustix::mount::unmount(bundle.rootfs(), rustix::mount::UnmountFlags::DETACH);
            std::process::exit(125);
        }
    }
}
