//! `molde-shim exec`: a process run in a running container (libcontainer's
//! tenant builder). Its output goes to this process's stdout and stderr;
//! with `--attach`, its stdin comes from an attach client, and with `--tty`
//! its terminal is relayed to that client both ways.

use super::*;

/// `exec`: joins the container's namespaces and cgroup with libcontainer's
/// tenant builder. Without `--attach` the process inherits this one's stdout
/// and stderr; with it, its stdio (a terminal with `--tty`, else pipes) is
/// relayed to the client of that socket, which is awaited before the process
/// starts so no output is lost. Its exit status becomes this one's.
/// Short-lived, one per exec.
pub(crate) fn exec(args: &Args) -> Result<i32> {
    let pfile = args.process.as_ref().context("--process is required")?;
    let p: ExecProcess = serde_json::from_slice(&fs::read(pfile)?).context("parsing the exec process")?;
    let env: std::collections::HashMap<String, String> = p
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let mut readers = Vec::new();
    let mut console = None;
    let mut attach = None;
    let (stdin, stdout, stderr): (OwnedFd, OwnedFd, OwnedFd) = match &args.attach {
        None => (
            File::open("/dev/null")?.into(),
            std::io::stdout().as_fd().try_clone_to_owned()?,
            std::io::stderr().as_fd().try_clone_to_owned()?,
        ),
        Some(sock) if args.tty => {
            let a = attach::Attach::new(None, None);
            a.serve(sock).context("serving the exec's attach socket")?;
            let path = sock.with_extension("console");
            let _ = fs::remove_file(&path);
            let reach = molde_bundle::sock::reachable(&path)?;
            console = Some((std::os::unix::net::UnixListener::bind(reach.path())?, reach));
            attach = Some(a);
            let null = || -> Result<OwnedFd> { Ok(File::open("/dev/null")?.into()) };
            (null()?, null()?, null()?)
        }
        Some(sock) => {
            // Input from the attach client; output stays on this process's
            // stdout and stderr, two streams molded tells apart.
            let (in_r, in_w) = nix::unistd::pipe().context("creating the stdin pipe")?;
            let a = attach::Attach::new(Some(File::from(in_w)), None);
            a.serve(sock).context("serving the exec's attach socket")?;
            attach = Some(a);
            (
                in_r,
                std::io::stdout().as_fd().try_clone_to_owned()?,
                std::io::stderr().as_fd().try_clone_to_owned()?,
            )
        }
    };
    if let Some(a) = &attach
        && !a.wait_client(std::time::Duration::from_secs(30))
    {
        bail!("no client attached to the exec within 30s");
    }
    let spec = Bundle::new(&args.bundle).spec().context("reading config.json")?;
    let filter = crate::seccomp::Filter::of(&spec);
    let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_root_path(&args.state)
        .context("libcontainer state root")?
        .with_executor(crate::seccomp::FilteredExecutor(filter.clone()))
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_console_socket(console.as_ref().map(|(_, reach)| reach.path().to_path_buf()))
        .as_tenant();
    builder = if args.tty {
        // A terminal comes through libcontainer's console socket only when the
        // process is given whole: the container's own, with exec's changes.
        let whole = tty_process(&spec, &filter, &p, pfile)?;
        builder.with_process(Some(whole))
    } else {
        builder
            .with_container_args(p.args.clone())
            .with_env(env)
            .with_cwd(p.cwd.clone())
            .with_user(p.uid)
            .with_group(p.gid)
            .with_additional_gids(p.additional_gids.clone())
            .with_capabilities(filter.lent())
    };
    let pid = builder
        .with_detach(true)
        .build()
        .with_context(|| format!("running {:?} in container {}", p.args, args.id))?;
    if let (Some((listener, path)), Some(a)) = (&console, &attach) {
        let master = attach::receive_master(listener).context("receiving the exec's terminal")?;
        let _ = fs::remove_file(path.path());
        readers.push(relay(File::from(master.try_clone()?), a.clone()));
        a.set_terminal(master)?;
    }
    let pid = nix::unistd::Pid::from_raw(pid.as_raw());
    // molded kills this process (and only it) when an exec times out.
    molde_bundle::ExecFiles::of(pfile).write_pid(pid.as_raw())?;
    let code = loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for the exec'd process: {e}"),
        }
    };
    if let Some(a) = &attach {
        // The rest of the output, unless processes the exec left behind keep
        // its pipe or terminal open: those are not waited for.
        let start = std::time::Instant::now();
        while readers.iter().any(|r| !r.is_finished()) && start.elapsed() < std::time::Duration::from_secs(2)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        a.close();
    }
    if let Some(sock) = &args.attach {
        let _ = fs::remove_file(sock);
    }
    Ok(code)
}

/// The container's own process (config.json) with the exec's command, env,
/// directory and user, and a terminal.
fn tty_process(
    spec: &oci_spec::runtime::Spec,
    filter: &crate::seccomp::Filter,
    p: &ExecProcess,
    pfile: &Path,
) -> Result<PathBuf> {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(true));
    process.set_args(Some(p.args.clone()));
    process.set_env(Some(p.env.clone()));
    process.set_cwd(PathBuf::from(p.cwd.as_deref().unwrap_or("/")));
    let mut user = process.user().clone();
    user.set_uid(p.uid.unwrap_or(0));
    user.set_gid(p.gid.unwrap_or(0));
    user.set_additional_gids(Some(p.additional_gids.clone()));
    process.set_user(user);
    process.set_console_size(None);
    filter.lend_to(&mut process);
    let path = molde_bundle::ExecFiles::of(pfile).runtime_process();
    fs::write(&path, serde_json::to_vec(&process)?)?;
    Ok(path)
}

/// Copies an exec's output to its attach client.
fn relay(mut from: File, attach: attach::Attach) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    return;
                }
                attach.broadcast(&buf[..n]);
            }
        })
        .expect("spawning an exec relay")
}
