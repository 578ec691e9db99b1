//! `molde run`: real containers from a busybox-static image, each in its own
//! molde-shim on youki's libcontainer. (Root, as the daemon runs.)

use molde_tests::Daemon;

/// A daemon with the busybox base image loaded (built offline by deploy/make-base-image.py).
fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

const IMAGE: &str = "localhost/molde/busybox";

#[test]
fn run_separates_stdout_and_stderr_and_returns_the_exit_code() {
    let d = daemon_with_busybox();
    let r = d.molde(&["run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(r.out.status.code(), Some(7), "{}", r.stderr());
    assert_eq!(r.stdout(), "out\n");
    assert_eq!(r.stderr(), "err\n");
    let ok = d.molde(&["run", "--rm", IMAGE, "true"]);
    assert_eq!(ok.out.status.code(), Some(0));
}

#[test]
fn run_applies_env_workdir_entrypoint_and_hostname() {
    let d = daemon_with_busybox();
    let env_file = d.dir.path().join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").unwrap();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "-e",
            "GREETING=hi there",
            "--env-file",
            env_file.to_str().unwrap(),
            "-w",
            "/tmp",
            "--hostname",
            "box",
            IMAGE,
            "sh",
            "-c",
            "echo $GREETING $FROM_FILE; pwd; hostname",
        ])
        .ok();
    assert_eq!(out, "hi there yes\n/tmp\nbox\n");
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/echo",
            IMAGE,
            "from",
            "entrypoint",
        ])
        .ok();
    assert_eq!(out, "from entrypoint\n");
    // --entrypoint drops the image's Cmd (sh), as docker's does.
    let out = d.molde(&["run", "--rm", "--entrypoint", "/bin/echo", IMAGE]).ok();
    assert_eq!(out, "\n");
    // The image's Cmd (sh) runs when none is given; with no stdin it exits 0.
    assert_eq!(d.molde(&["run", "--rm", IMAGE]).out.status.code(), Some(0));
}

#[test]
fn rm_leaves_no_container_snapshot_or_bundle() {
    let d = daemon_with_busybox();
    d.molde(&["run", "--rm", "--name", "gone", IMAGE, "true"]).ok();
    assert!(!d.ctr(&["containers", "ls", "-q"]).ok().contains("gone"));
    assert!(!d.ctr(&["snapshots", "ls"]).ok().contains("gone"));
    assert!(!d.state.join("runtime/default/gone").exists());
    // Without --rm the record stays, visible to containerd's client.
    d.molde(&["run", "--name", "kept", IMAGE, "true"]).ok();
    let info: serde_json::Value = serde_json::from_str(&d.ctr(&["containers", "info", "kept"]).ok()).unwrap();
    assert_eq!(info["Image"], "localhost/molde/busybox:latest");
    assert_eq!(info["Spec"]["process"]["args"][0], "true");
}

#[test]
fn bad_runs_fail_clearly_and_leave_nothing_behind() {
    let d = daemon_with_busybox();
    let err = d
        .molde(&["run", "--rm", "--pull", "never", "no/such-image", "true"])
        .fails();
    assert!(
        err.contains("no/such-image") && err.contains("not found"),
        "{err}"
    );
    let err = d
        .molde(&["run", "--rm", "--name", "nobin", IMAGE, "/bin/not-there"])
        .fails();
    assert!(err.contains("nobin"), "{err}");
    d.molde(&["run", "--name", "taken", IMAGE, "true"]).ok();
    let err = d.molde(&["run", "--name", "taken", IMAGE, "true"]).fails();
    assert!(err.contains("taken") && err.contains("already in use"), "{err}");
    let err = d.molde(&["run", "-e", "NOEQUALS", IMAGE, "true"]).fails();
    assert!(err.contains("NOEQUALS"), "{err}");
}

/// A cgroup file of a running container, in v1 (per controller) or v2 layout.
fn cgroup_file(controller: &str, id: &str, v1: &str, v2: &str) -> Option<String> {
    let rel = format!("molde/default-{id}");
    [
        format!("/sys/fs/cgroup/{controller}/{rel}/{v1}"),
        format!("/sys/fs/cgroup/{rel}/{v2}"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|s| s.trim().to_string())
}

#[test]
fn users_volumes_and_read_only_rootfs() {
    let d = daemon_with_busybox();
    assert_eq!(
        d.molde(&["run", "--rm", "-u", "nobody", IMAGE, "id", "-u"])
            .ok()
            .trim(),
        "65534"
    );
    assert_eq!(
        d.molde(&[
            "run",
            "--rm",
            "-u",
            "1234:5678",
            IMAGE,
            "sh",
            "-c",
            "id -u; id -g"
        ])
        .ok(),
        "1234\n5678\n"
    );
    let err = d.molde(&["run", "--rm", "-u", "ghost", IMAGE, "true"]).fails();
    assert!(err.contains("ghost") && err.contains("/etc/passwd"), "{err}");

    let host = d.dir.path().join("shared");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("in"), b"from the host").unwrap();
    let vol = format!("{}:/data", host.display());
    let out = d
        .molde(&[
            "run",
            "--rm",
            "-v",
            &vol,
            IMAGE,
            "sh",
            "-c",
            "cat /data/in; echo back > /data/out",
        ])
        .ok();
    assert_eq!(out, "from the host");
    assert_eq!(std::fs::read_to_string(host.join("out")).unwrap(), "back\n");
    let ro = format!("{}:/data:ro", host.display());
    assert_ne!(
        d.molde(&["run", "--rm", "-v", &ro, IMAGE, "sh", "-c", "echo x > /data/nope"])
            .out
            .status
            .code(),
        Some(0)
    );

    // A named volume outlives the container that wrote it.
    d.molde(&[
        "run",
        "--rm",
        "-v",
        "cache:/cache",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /cache/f",
    ])
    .ok();
    assert_eq!(
        d.molde(&["run", "--rm", "-v", "cache:/cache", IMAGE, "cat", "/cache/f"])
            .ok(),
        "kept\n"
    );

    let r = d.molde(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch",
        IMAGE,
        "sh",
        "-c",
        "echo ok > /scratch/f && cat /scratch/f; touch /etc/x",
    ]);
    assert_ne!(r.out.status.code(), Some(0), "the rootfs is read-only");
    assert_eq!(r.stdout(), "ok\n", "a tmpfs is writable");
    assert!(r.stderr().contains("Read-only"), "{}", r.stderr());
    let err = d
        .molde(&["run", "--rm", "-v", "/no/such/dir:/x", IMAGE, "true"])
        .fails();
    assert!(err.contains("/no/such/dir"), "{err}");
}

#[test]
fn limits_memory_oom_pids_and_cpus() {
    let d = daemon_with_busybox();
    let r = d.molde(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    ]);
    assert_eq!(
        r.out.status.code(),
        Some(137),
        "killed by the OOM killer: {}",
        r.stderr()
    );
    let ps: serde_json::Value =
        serde_json::from_str(&d.molde(&["ps", "-a", "--format", "json"]).ok()).unwrap();
    let hog = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "hog")
        .unwrap()
        .clone();
    assert_eq!(hog["oomKilled"], true);
    assert_eq!(hog["exitCode"], 137);
    assert!(d.molde(&["ps", "-a"]).ok().contains("OOMKilled"));
    assert_eq!(d.molde(&["wait", "hog"]).stdout().trim(), "137");
    let inspect: serde_json::Value = d.inspect("hog");
    assert_eq!(inspect["State"]["OOMKilled"], true);

    let err = d.molde(&["run", "--memory", "lots", IMAGE, "true"]).fails();
    assert!(err.contains("invalid memory value"), "{err}");

    d.molde(&[
        "run",
        "-d",
        "--name",
        "limited",
        "--pids-limit",
        "5",
        "--cpus",
        "0.5",
        IMAGE,
        "sleep",
        "30",
    ])
    .ok();
    assert_eq!(
        cgroup_file("pids", "limited", "pids.max", "pids.max").as_deref(),
        Some("5")
    );
    assert_eq!(
        cgroup_file("cpu", "limited", "cpu.cfs_quota_us", "cpu.max")
            .map(|s| s.split(' ').next().unwrap().to_string())
            .as_deref(),
        Some("50000")
    );
    let r = d.molde(&[
        "run",
        "--rm",
        "--pids-limit",
        "3",
        IMAGE,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do sleep 2 & done; wait",
    ]);
    assert!(
        r.stderr().contains("fork"),
        "forks past the limit fail: {}",
        r.stderr()
    );
    d.molde(&["rm", "-f", "limited"]).ok();
}

#[test]
fn detached_containers_ps_logs_stop_kill_wait_rm() {
    let d = daemon_with_busybox();
    let id = d
        .molde(&[
            "run",
            "-d",
            "--name",
            "ticker",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo bye; exit 3' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ])
        .ok();
    assert_eq!(id.trim(), "ticker");
    molde_tests::eventually(10, "a few log lines", || {
        d.molde(&["logs", "ticker"]).stdout().lines().count() >= 3
    });
    let ps = d.molde(&["ps"]).ok();
    assert!(ps.contains("ticker") && ps.contains("Up"), "{ps}");
    assert_eq!(
        d.molde(&["logs", "--tail", "1", "ticker"]).ok().lines().count(),
        1
    );
    assert!(
        d.molde(&["logs", "-t", "ticker"])
            .ok()
            .lines()
            .next()
            .unwrap()
            .starts_with("20"),
        "timestamps"
    );
    let err = d.molde(&["rm", "ticker"]).fails();
    assert!(err.contains("running"), "{err}");
    d.molde(&["stop", "-t", "5", "ticker"]).ok();
    assert_eq!(
        d.molde(&["wait", "ticker"]).stdout().trim(),
        "3",
        "SIGTERM ran the trap"
    );
    assert!(d.molde(&["logs", "ticker"]).ok().ends_with("bye\n"));
    assert!(!d.molde(&["ps"]).ok().contains("ticker"));
    assert!(d.molde(&["ps", "-a"]).ok().contains("Exited (3)"));

    // An unnamed container answers to the short id `ps` prints, as docker's.
    let long = d.molde(&["run", "-d", IMAGE, "echo", "short ids"]).ok();
    let long = long.trim();
    assert!(long.len() > 12, "{long}");
    let short = &long[..12];
    let ps = d.molde(&["ps", "-a"]).ok();
    assert!(ps.contains(short), "{ps}");
    assert_eq!(d.molde(&["wait", short]).ok().trim(), "0");
    assert_eq!(d.molde(&["logs", short]).ok(), "short ids\n");
    assert!(d.molde(&["inspect", short]).ok().contains(long));
    let missing = d.molde(&["logs", "zz-no-such"]).fails();
    assert!(missing.contains("zz-no-such"), "{missing}");
    d.molde(&["rm", short]).ok();
    assert!(!d.molde(&["ps", "-a"]).ok().contains(short));

    d.molde(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; sleep 60",
    ])
    .ok();
    d.molde(&["stop", "-t", "1", "stubborn"]).ok();
    assert_eq!(
        d.molde(&["wait", "stubborn"]).stdout().trim(),
        "137",
        "SIGKILL after the grace period"
    );
    // As in any PID namespace, the container's init only sees signals it handles.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "target",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 42' USR1; while true; do sleep 0.1; done",
    ])
    .ok();
    d.molde(&["kill", "-s", "USR1", "target"]).ok();
    assert_eq!(d.molde(&["wait", "target"]).stdout().trim(), "42");
    for id in ["ticker", "stubborn", "target"] {
        d.molde(&["rm", id]).ok();
    }
    assert!(d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty());
    let err = d.molde(&["kill", "nothing-here"]).fails();
    assert!(err.contains("nothing-here") && err.contains("not found"), "{err}");
}

#[test]
fn containers_outlive_a_killed_daemon_and_are_found_again() {
    let mut d = daemon_with_busybox();
    d.molde(&["run", "-d", "--name", "sleeper", IMAGE, "sleep", "60"])
        .ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "writer",
        IMAGE,
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
    ])
    .ok();
    molde_tests::eventually(10, "the writer's first lines", || {
        d.molde(&["logs", "writer"]).stdout().lines().count() >= 2
    });
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.restart();
    let ps = d.molde(&["ps"]).ok();
    assert!(
        ps.contains("sleeper") && ps.contains("writer"),
        "both keep running:\n{ps}"
    );
    // `logs -f` on the new daemon: line numbers continue one by one from
    // before the kill through lines written after the restart.
    let mut follow = std::process::Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &d.sock)
        .args(["logs", "-f", "writer"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let before = d.molde(&["logs", "writer"]).ok().lines().count() as u64;
    let mut lines: Vec<u64> = Vec::new();
    while lines.last().is_none_or(|&n| n < before + 20) {
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(l) => lines.extend(l.strip_prefix("line ").and_then(|n| n.parse::<u64>().ok())),
            Err(_) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        lines.first(),
        Some(&0),
        "logs -f starts at the first line: {lines:?}"
    );
    assert!(
        lines.last().is_some_and(|&n| n >= before + 20),
        "logs -f followed lines written after the restart: {lines:?}"
    );
    assert!(lines.windows(2).all(|w| w[1] == w[0] + 1), "no gap: {lines:?}");
    d.molde(&["stop", "-t", "1", "sleeper", "writer"]).ok();
    d.molde(&["rm", "sleeper", "writer"]).ok();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(d.state.to_str().unwrap()),
        "no mount is left behind"
    );
    assert!(
        std::process::Command::new("pgrep")
            .args(["-f", "molde-shim start --id default-sleeper"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "no shim is left"
    );
}

#[test]
fn exec_runs_in_a_running_container() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "host",
        "-e",
        "BASE=1",
        IMAGE,
        "sh",
        "-c",
        "echo made > /tmp/marker; sleep 60",
    ])
    .ok();
    molde_tests::eventually(10, "the marker file", || {
        d.molde(&["exec", "host", "cat", "/tmp/marker"]).stdout() == "made\n"
    });
    let r = d.molde(&[
        "exec",
        "-e",
        "EXTRA=2",
        "-w",
        "/tmp",
        "host",
        "sh",
        "-c",
        "echo $BASE $EXTRA $(pwd); echo oops >&2; exit 4",
    ]);
    assert_eq!(r.out.status.code(), Some(4));
    assert_eq!(r.stdout(), "1 2 /tmp\n");
    assert_eq!(r.stderr(), "oops\n");
    assert_eq!(
        d.molde(&["exec", "-u", "nobody", "host", "id", "-u"]).ok().trim(),
        "65534"
    );
    let r = d.molde(&["exec", "host", "/not/there"]);
    assert_ne!(r.out.status.code(), Some(0));
    assert!(r.stderr().contains("/not/there"), "{}", r.stderr());
    d.molde(&["stop", "-t", "1", "host"]).ok();
    let err = d.molde(&["exec", "host", "true"]).fails();
    assert!(err.contains("not running"), "{err}");
    d.molde(&["rm", "host"]).ok();
}

#[test]
fn bridge_network_published_ports_and_teardown() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&["run", "--rm", IMAGE, "ip", "-4", "-o", "addr", "show", "eth0"])
        .ok();
    assert!(out.contains("inet 10.89."), "a bridge address from CNI: {out}");
    let none = d
        .molde(&["run", "--rm", "--network", "none", IMAGE, "ip", "-o", "link"])
        .ok();
    assert!(!none.contains("eth0") && none.contains("lo"), "{none}");
    let host = d
        .molde(&["run", "--rm", "--network", "host", IMAGE, "ip", "-o", "link"])
        .ok();
    let host_links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    // The host's own links; veths come and go with containers other tests
    // run at the same time.
    let lasting = |text: &str| text.lines().filter(|l| !l.contains("veth")).count();
    assert_eq!(
        lasting(&host),
        lasting(&String::from_utf8_lossy(&host_links.stdout)),
        "{host}"
    );

    let port = molde_tests::registry::free_port();
    let publish = format!("127.0.0.1:{port}:80");
    d.molde(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-molde > /www/index.html && exec httpd -f -p 80 -h /www",
    ])
    .ok();
    let mut body = String::new();
    molde_tests::eventually(10, "the published port to answer", || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n");
        body.clear();
        let _ = s.read_to_string(&mut body);
        body.contains("hello-from-molde")
    });
    let pins = || {
        std::fs::read_dir(d.state.join("netns"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert_eq!(pins(), 1);
    d.molde(&["rm", "-f", "web"]).ok();
    assert_eq!(pins(), 0, "the network namespace is released");
    let rules = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&port.to_string()),
        "the port mapping is removed"
    );
    // Stopped, or ended on its own: the network is given back, the container stays.
    d.molde(&["run", "-d", "--name", "stopped", IMAGE, "sleep", "60"])
        .ok();
    assert_eq!(pins(), 1);
    d.molde(&["stop", "-t", "1", "stopped"]).ok();
    assert_eq!(pins(), 0, "stop released the network namespace");
    d.molde(&["run", "-d", "--name", "brief", IMAGE, "sleep", "2"])
        .ok();
    assert_eq!(pins(), 1, "the running container has its network");
    molde_tests::eventually(10, "the exited container's network to be released", || {
        pins() == 0
    });
    let ps = d.molde(&["ps", "-a"]).ok();
    assert!(ps.contains("stopped") && ps.contains("brief"), "{ps}");
    d.molde(&["rm", "stopped", "brief"]).ok();
    let err = d.molde(&["run", "--rm", "-p", "nonsense", IMAGE, "true"]).fails();
    assert!(err.contains("nonsense"), "{err}");
}

#[test]
fn seccomp_etc_files_inspect_top_stats_and_signal_forwarding() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--hostname",
            "boxy",
            IMAGE,
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; cat /etc/hostname; grep boxy /etc/hosts",
        ])
        .ok();
    assert!(
        out.contains("Seccomp:\t2"),
        "the default seccomp profile filters: {out}"
    );
    assert!(out.contains("boxy\n10.89."), "{out}");
    let r = d.molde(&["run", "--rm", IMAGE, "unshare", "-n", "true"]);
    assert!(r.stderr().contains("Operation not permitted"), "{}", r.stderr());

    d.molde(&[
        "run",
        "-d",
        "--name",
        "watched",
        "--memory",
        "64m",
        IMAGE,
        "sh",
        "-c",
        "sleep 60 & sleep 61 & wait",
    ])
    .ok();
    let v: serde_json::Value = d.inspect("watched");
    assert_eq!(v["State"]["Status"], "running");
    assert!(
        v["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("10.89.")
    );
    assert_eq!(v["HostConfig"]["Resources"]["memory"]["limit"], 64 << 20);
    let top = d.molde(&["top", "watched"]).ok();
    assert!(top.contains("sleep 60") && top.contains("sleep 61"), "{top}");
    let stats = d.molde(&["stats", "--no-stream", "watched"]).ok();
    assert!(
        stats.contains("watched") && stats.contains("/ 64MiB"),
        "the limit shows: {stats}"
    );
    d.molde(&["rm", "-f", "watched"]).ok();
    // Images are still inspected by name.
    let img: serde_json::Value = d.inspect(IMAGE);
    assert_eq!(img["Name"], "localhost/molde/busybox:latest");

    // SIGTERM to `molde run` reaches the container, whose trap decides the status.
    let child = std::process::Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &d.sock)
        .args([
            "run",
            "--rm",
            "--name",
            "fg",
            IMAGE,
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo trap-set >&2; while true; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    molde_tests::eventually(10, "the foreground container to set its trap", || {
        d.molde(&["logs", "fg"]).stderr().contains("trap-set")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-term\n");
}

/// Drives `molde <args...>` (a shell with -it) through a real pty: types
/// commands, reads the shell's answers, resizes the terminal, exits with a
/// status.
const PTY_DRIVER: &str = r#"
import os, pty, time, select, sys, fcntl, termios, struct, signal
molde, sock = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(molde, ["molde", "--address", sock] + sys.argv[3:])
def read_until(marker, t=10):
    out = b""; end = time.time() + t
    while time.time() < end and marker not in out:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: out += os.read(fd, 4096)
            except OSError: break
    return out
time.sleep(0.5)
os.write(fd, b"echo hello-$((40+2))\n")
sys.stdout.write(read_until(b"hello-42").decode(errors="replace"))
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
os.kill(pid, signal.SIGWINCH)
# The resize travels CLI -> molded -> shim; ask until it has arrived (bounded).
for _ in range(40):
    time.sleep(0.25)
    os.write(fd, b"stty size; tty\n")
    got = read_until(b"/dev/pts", 5)
    sys.stdout.write(got.decode(errors="replace"))
    if b"33 111" in got:
        break
os.write(fd, b"exit 7\n")
read_until(b"\x00", 3)
_, st = os.waitpid(pid, 0)
print("\nexit", os.waitstatus_to_exitcode(st))
"#;

/// Runs `molde <args>` under PTY_DRIVER; its stdout and stderr.
fn drive_tty(d: &Daemon, args: &[&str]) -> (String, String) {
    let script = d.dir.path().join("drive_tty.py");
    std::fs::write(&script, PTY_DRIVER).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(molde_tests::bin("molde"))
        .arg(&d.sock)
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn interactive_terminal_and_stdin() {
    let d = daemon_with_busybox();
    let (text, errors) = drive_tty(&d, &["run", "-it", "--rm", "--network", "none", IMAGE, "sh"]);
    assert!(
        text.contains("hello-42"),
        "the shell ran the typed command:\n{text}\n{errors}"
    );
    assert!(
        text.contains("33 111"),
        "the resize reached the container's terminal:\n{text}"
    );
    assert!(text.contains("/dev/pts/0"), "{text}");
    assert!(text.trim_end().ends_with("exit 7"), "{text}");
    assert!(
        d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty(),
        "--rm removed it"
    );

    // -i without a terminal: stdin is piped through to the container.
    let out = d
        .molde_stdin(
            &[
                "run",
                "-i",
                "--rm",
                "--network",
                "none",
                IMAGE,
                "sh",
                "-c",
                "cat; echo done",
            ],
            b"line1\nline2\n",
        )
        .ok();
    assert_eq!(out, "line1\nline2\ndone\n");

    // attach to a detached container: its output flows until it exits.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "sleep 0.5; for i in 1 2 3; do echo n$i; sleep 0.1; done",
    ])
    .ok();
    let attached = d.molde(&["attach", "--no-stdin", "talker"]).ok();
    assert!(attached.contains("n3"), "{attached}");
}

#[test]
fn interactive_exec_with_and_without_a_terminal() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "60",
    ])
    .ok();
    let (text, errors) = drive_tty(&d, &["exec", "-it", "box", "sh"]);
    assert!(
        text.contains("hello-42"),
        "the exec'd shell ran the typed command:\n{text}\n{errors}"
    );
    assert!(
        text.contains("33 111"),
        "the resize reached the exec's terminal:\n{text}"
    );
    assert!(text.contains("/dev/pts/"), "the exec has a terminal:\n{text}");
    assert!(
        text.trim_end().ends_with("exit 7"),
        "exec -it returns the shell's status:\n{text}"
    );

    // -i alone: stdin piped in, output and status back.
    let r = d.molde_stdin(
        &[
            "exec",
            "-i",
            "box",
            "sh",
            "-c",
            "while read l; do echo \"got $l\"; done; exit 3",
        ],
        b"one\ntwo\n",
    );
    assert_eq!(r.out.status.code(), Some(3), "{}", r.stderr());
    assert_eq!(r.stdout(), "got one\ngot two\n");

    assert_eq!(
        d.molde(&["ps", "-q"]).ok().trim().lines().count(),
        1,
        "the container runs on"
    );
    let exec_dir = d.state.join("runtime/default/box/exec");
    let left: Vec<_> = std::fs::read_dir(&exec_dir)
        .map(|it| it.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "finished execs leave nothing in {}: {left:?}",
        exec_dir.display()
    );
    d.molde(&["rm", "-f", "box"]).ok();
}

#[test]
fn containers_run_on_a_pure_cgroup_v2_view() {
    let d = Daemon::start_with_cgroup_v2_view();
    d.load_busybox();

    // Where this process sees the v2 hierarchy molded was given.
    let v2 = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy");
    let r = d.molde(&["run", "--rm", "--network", "none", IMAGE, "echo", "hello from v2"]);
    assert_eq!(r.ok(), "hello from v2\n");

    d.molde(&[
        "run",
        "-d",
        "--name",
        "v2",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "60",
    ])
    .ok();
    let inspect: serde_json::Value = d.inspect("v2");
    let pid = inspect[0]["State"]["Pid"]
        .as_i64()
        .or_else(|| inspect["State"]["Pid"].as_i64())
        .unwrap_or_else(|| panic!("a pid in {inspect}"));
    let cg = v2.join("molde/default-v2");
    let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "the container's init {pid} is in its v2 cgroup {}: {procs:?}",
        cg.display()
    );
    assert_eq!(d.molde(&["exec", "v2", "echo", "exec ok"]).ok(), "exec ok\n");
    assert!(d.molde(&["top", "v2"]).ok().contains("sleep"));
    d.molde(&["stats", "--no-stream", "v2"]).ok();
    d.molde(&["rm", "-f", "v2"]).ok();
    assert!(!cg.exists(), "rm removed the cgroup {}", cg.display());

    // A limit needs its controller in the v2 hierarchy.
    let offered = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap();
    let args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--memory",
        "32m",
        IMAGE,
        "cat",
        "/sys/fs/cgroup/memory.max",
    ];
    if offered.split_whitespace().any(|c| c == "memory") {
        assert_eq!(d.molde(&args).ok().trim(), "33554432");
    } else {
        let err = d.molde(&args).fails();
        assert!(
            err.contains("--memory needs cgroup v2's memory controller"),
            "{err}"
        );
        assert!(
            d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty(),
            "the refused run left nothing"
        );
    }
}

/// What a shell in the container printed for each attempt on its cgroups: the
/// error of a write that fails, or "written" for one that goes through.
const CGROUP_PROBE: &str = r#"
try() { if sh -c "$1" 2>/tmp/err; then echo "$2: written"; else echo "$2: $(cat /tmp/err)"; fi; }
try 'echo max > /sys/fs/cgroup/pids/pids.max' pids
try 'echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes' memory
try 'mkdir /sys/fs/cgroup/memory/child' child
try 'mkdir /sys/fs/cgroup/mine' top
"#;

#[test]
fn containers_see_their_cgroups_read_only() {
    let d = daemon_with_busybox();
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "boxed",
        "--memory",
        "16m",
        "--pids-limit",
        "50",
        IMAGE,
        "sleep",
        "60",
    ])
    .ok();
    let out = d.molde(&["exec", "boxed", "sh", "-c", CGROUP_PROBE]).ok();
    for line in out.lines() {
        // On a pure v2 host the v1 paths do not exist: the write fails all the same.
        assert!(
            !line.ends_with(": written"),
            "a container changed its cgroups: {out}"
        );
    }
    if v1 {
        for what in ["pids", "memory", "child"] {
            assert!(
                out.lines()
                    .any(|l| l.starts_with(&format!("{what}:")) && l.contains("Read-only file system")),
                "{what}: EROFS expected: {out}"
            );
        }
    }
    assert!(
        out.contains("top:") && out.contains("Read-only file system"),
        "{out}"
    );
    // The limits molded set are still the ones in force.
    assert_eq!(
        cgroup_file("pids", "boxed", "pids.max", "pids.max").as_deref(),
        Some("50")
    );
    assert_eq!(
        cgroup_file("memory", "boxed", "memory.limit_in_bytes", "memory.max").as_deref(),
        Some("16777216")
    );
    d.molde(&["rm", "-f", "boxed"]).ok();
}

#[test]
fn containers_see_their_cgroups_read_only_on_a_pure_v2_view() {
    let d = Daemon::start_with_cgroup_v2_view();
    d.load_busybox();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "mkdir /sys/fs/cgroup/child; echo +pids > /sys/fs/cgroup/cgroup.subtree_control; \
             echo 1 > /sys/fs/cgroup/cgroup.procs; grep ' /sys/fs/cgroup ' /proc/self/mounts",
        ])
        .stderr();
    assert_eq!(
        out.matches("Read-only file system").count(),
        3,
        "every write to the v2 hierarchy fails: {out}"
    );
}

#[test]
fn out_of_range_limits_are_refused_by_name() {
    let d = daemon_with_busybox();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let too_many = format!("{}", cpus + 1);
    for (flag, value, says) in [
        ("--memory", "99999999999g", "more than any limit"),
        ("--cpus", too_many.as_str(), "CPUs available"),
        ("--cpus", "0.001", "at least 0.01"),
        ("--pids-limit", "1", "fewer than 2"),
    ] {
        let err = d.molde(&["run", "--rm", flag, value, IMAGE, "true"]).fails();
        assert!(err.contains(flag) || err.contains(value), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    assert!(d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty());
    // The smallest limits that can run, run.
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--pids-limit",
            "2",
            "--network",
            "none",
            IMAGE,
            "echo",
            "ok",
        ])
        .ok();
    assert_eq!(out, "ok\n");
}
