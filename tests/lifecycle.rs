//! A container's life as a docker user drives it through `molde`: create,
//! start, restart, pause, rename, update, port, attach and its keys, the
//! exit statuses of a run that cannot start, `run --pull`, completion.
//! (Root, as the daemon runs.)

use molde_tests::Daemon;
use molde_tests::registry::Registry;

const IMAGE: &str = "localhost/molde/busybox";

fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

fn state_of(d: &Daemon, name: &str) -> String {
    let ps = d.molde(&["ps", "-a", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&ps).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name || c["id"] == name)
        .map(|c| c["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{name} is not in ps -a: {ps}"))
}

#[test]
fn create_start_restart_rename_and_what_a_failed_run_exits_with() {
    let d = daemon_with_busybox();
    let id = d
        .molde(&[
            "create",
            "--name",
            "once",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo ran; exit 3",
        ])
        .ok();
    assert_eq!(id.trim(), "once");
    assert_eq!(state_of(&d, "once"), "created");
    assert!(d.molde(&["ps", "-a"]).ok().contains("Created"));
    assert!(d.molde(&["logs", "once"]).ok().is_empty(), "nothing ran yet");

    // start -a: the output from the first line, the container's status.
    let r = d.molde(&["start", "-a", "once"]);
    assert_eq!(r.out.status.code(), Some(3), "{}", r.describe());
    assert_eq!(r.stdout(), "ran\n");
    assert_eq!(state_of(&d, "once"), "exited");

    // An exited container starts again; its log goes on.
    assert_eq!(d.molde(&["start", "once"]).ok().trim(), "once");
    assert_eq!(d.molde(&["wait", "once"]).stdout().trim(), "3");
    assert_eq!(d.molde(&["logs", "once"]).ok(), "ran\nran\n");

    // restart: a running container is stopped and started; its network
    // comes back with it.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "server",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done",
    ])
    .ok();
    molde_tests::eventually(10, "the first start's line", || {
        d.molde(&["logs", "server"]).stdout() == "up\n"
    });
    d.molde(&["restart", "-t", "2", "server"]).ok();
    molde_tests::eventually(10, "the second start's line", || {
        d.molde(&["logs", "server"]).stdout() == "up\nup\n"
    });
    assert_eq!(state_of(&d, "server"), "running");
    let ip = d
        .molde(&["exec", "server", "ip", "-4", "-o", "addr", "show", "eth0"])
        .ok();
    assert!(
        ip.contains("inet "),
        "the restarted container has an address: {ip}"
    );

    // rename: the new name answers, the name is free again for another.
    d.molde(&["rename", "server", "renamed"]).ok();
    assert!(d.molde(&["ps"]).ok().contains("renamed"));
    assert_eq!(
        d.molde(&["exec", "renamed", "echo", "by the new name"]).ok(),
        "by the new name\n"
    );
    let taken = d.molde(&["rename", "renamed", "once"]).fails();
    assert!(taken.contains("already in use"), "{taken}");
    d.molde(&[
        "run",
        "--rm",
        "--name",
        "server",
        "--network",
        "none",
        IMAGE,
        "true",
    ])
    .ok();
    d.molde(&["rm", "-f", "renamed"]).ok();

    // Starting a running container is no error, as with docker.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "runs",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "30",
    ])
    .ok();
    d.molde(&["start", "runs"]).ok();
    d.molde(&["rm", "-f", "runs"]).ok();

    // What a run that cannot start exits with, as docker's: 127 for a
    // command that is not there, 126 for one that cannot run, 125 for the
    // rest; each error names what was wrong.
    let missing = d.molde(&["run", "--rm", "--network", "none", IMAGE, "no-such-program"]);
    assert_eq!(missing.out.status.code(), Some(127), "{}", missing.describe());
    let said = missing.stderr();
    assert!(
        said.contains("exec: \"no-such-program\": executable file not found in $PATH")
            && said.matches("no-such-program").count() == 1,
        "docker's words, once: {said}"
    );
    let not_exec = d.molde(&["run", "--rm", "--network", "none", IMAGE, "/etc/passwd"]);
    assert_eq!(not_exec.out.status.code(), Some(126), "{}", not_exec.describe());
    assert!(
        not_exec
            .stderr()
            .contains("exec: \"/etc/passwd\": permission denied"),
        "{}",
        not_exec.stderr()
    );
    // A registry that is not there is named, in one line.
    let port = molde_tests::registry::free_port();
    let unreachable = d.molde(&["run", "--rm", &format!("127.0.0.1:{port}/app:1"), "true"]);
    assert_eq!(unreachable.out.status.code(), Some(125));
    let err = unreachable.stderr();
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(
        !err.contains("error sending request"),
        "no HTTP client chain: {err}"
    );
    let reg = Registry::start();
    let absent = d.molde(&["run", "--rm", &format!("{}/no/such:1", reg.host), "true"]);
    assert_eq!(absent.out.status.code(), Some(125));
    let err = absent.stderr();
    assert!(err.contains("not found") && err.lines().count() <= 2, "{err}");
    let no_image = d.molde(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "localhost/no/such:image",
        "true",
    ]);
    assert_eq!(no_image.out.status.code(), Some(125), "{}", no_image.describe());
    assert!(
        no_image.stderr().contains("localhost/no/such:image"),
        "{}",
        no_image.stderr()
    );
    let bad_flag = d.molde(&["run", "--rm", "--memory", "lots", IMAGE, "true"]);
    assert_eq!(bad_flag.out.status.code(), Some(125), "{}", bad_flag.describe());
    // The container that could not start is kept (without --rm), exited 127.
    let kept = d
        .molde(&["create", "--name", "broken", "--network", "none", IMAGE, "nope"])
        .ok();
    assert_eq!(kept.trim(), "broken");
    let r = d.molde(&["start", "broken"]);
    assert!(
        !r.out.status.success() && r.stderr().contains("nope"),
        "{}",
        r.describe()
    );
    let ps = d.molde(&["ps", "-a"]).ok();
    assert!(ps.contains("Exited (127)"), "{ps}");
}

#[test]
fn pause_update_and_published_ports() {
    let d = daemon_with_busybox();
    // A host port of its own, printed as docker's `port` prints it.
    let port = molde_tests::registry::free_port();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "counter",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        IMAGE,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done",
    ])
    .ok();
    assert_eq!(
        d.molde(&["port", "counter"]).ok(),
        format!("80/tcp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(
        d.molde(&["port", "counter", "80"]).ok(),
        format!("127.0.0.1:{port}\n")
    );
    let none = d.molde(&["port", "counter", "81/udp"]).fails();
    assert!(none.contains("81/udp"), "{none}");
    assert!(
        d.molde(&["ps"])
            .ok()
            .contains(&format!("127.0.0.1:{port}->80/tcp")),
        "ps shows the port"
    );

    // pause: the processes stop where they are (the cgroup freezer).
    d.molde(&["pause", "counter"]).ok();
    assert_eq!(state_of(&d, "counter"), "paused");
    assert!(d.molde(&["ps"]).ok().contains("Paused"));
    let lines = d.molde(&["logs", "counter"]).ok().lines().count();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        d.molde(&["logs", "counter"]).ok().lines().count(),
        lines,
        "no line while paused"
    );
    let refused = d.molde(&["exec", "counter", "true"]).fails();
    assert!(refused.contains("paused"), "{refused}");
    assert!(d.molde(&["pause", "counter"]).fails().contains("already paused"));
    d.molde(&["unpause", "counter"]).ok();
    molde_tests::eventually(10, "lines again once thawed", || {
        d.molde(&["logs", "counter"]).ok().lines().count() > lines + 2
    });
    assert!(d.molde(&["unpause", "counter"]).fails().contains("not paused"));

    // update: the limits reach the cgroup now and stay for the next start.
    d.molde(&["update", "--memory", "96m", "--pids-limit", "40", "counter"])
        .ok();
    let pids_max = || {
        [
            "/sys/fs/cgroup/pids/molde/default-counter/pids.max",
            "/sys/fs/cgroup/molde/default-counter/pids.max",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
    };
    let memory_max = || {
        [
            "/sys/fs/cgroup/memory/molde/default-counter/memory.limit_in_bytes",
            "/sys/fs/cgroup/molde/default-counter/memory.max",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
    };
    assert_eq!(pids_max().trim(), "40");
    assert_eq!(memory_max().trim(), (96u64 << 20).to_string());
    d.molde(&["restart", "-t", "1", "counter"]).ok();
    assert_eq!(pids_max().trim(), "40", "kept across the restart");
    assert_eq!(memory_max().trim(), (96u64 << 20).to_string());
    assert!(d.molde(&["update", "counter"]).fails().contains("--memory"));
    d.molde(&["rm", "-f", "counter"]).ok();
}

/// Drives `molde` on a pseudo-terminal: waits for `ready` in its output,
/// writes `keys`, then reports the output, whether the terminal was left
/// in raw mode while it ran, and its exit status.
const KEYS_DRIVER: &str = r#"
import os, pty, time, select, sys, termios
molde, sock, ready, keys = sys.argv[1], sys.argv[2], sys.argv[3].encode(), bytes.fromhex(sys.argv[4])
pid, fd = pty.fork()
if pid == 0:
    os.execv(molde, ["molde", "--address", sock] + sys.argv[5:])
def read_until(marker, t=15):
    out = b""; end = time.time() + t
    while time.time() < end and marker not in out:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try: out += os.read(fd, 4096)
            except OSError: break
    return out
out = read_until(ready)
lflag = termios.tcgetattr(fd)[3]
print("canonical" if lflag & termios.ICANON else "raw")
os.write(fd, keys)
out += read_until(b"\x00", 5)
sys.stdout.write(out.decode(errors="replace"))
_, st = os.waitpid(pid, 0)
print("\nexit", os.waitstatus_to_exitcode(st))
"#;

fn drive_keys(d: &Daemon, ready: &str, keys: &[u8], args: &[&str]) -> String {
    let script = d.dir.path().join("drive_keys.py");
    std::fs::write(&script, KEYS_DRIVER).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(molde_tests::bin("molde"))
        .arg(&d.sock)
        .arg(ready)
        .arg(hex::encode(keys))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn attach_keeps_the_terminal_detaches_on_its_keys_and_forwards_ctrl_c() {
    let d = daemon_with_busybox();
    // run -it: Ctrl-P Ctrl-Q leaves the container running.
    let text = drive_keys(
        &d,
        "prompt>",
        b"\x10\x11",
        &[
            "run",
            "-it",
            "--name",
            "shell",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo prompt'>'; while true; do sleep 0.1; done",
        ],
    );
    assert!(
        text.starts_with("raw"),
        "a container terminal puts the local one in raw mode: {text}"
    );
    assert!(text.trim_end().ends_with("exit 0"), "{text}");
    assert_eq!(state_of(&d, "shell"), "running", "detached, not stopped");
    // Other keys, as --detach-keys names them.
    let text = drive_keys(
        &d,
        "again>",
        b"\x01x",
        &[
            "run",
            "-it",
            "--detach-keys",
            "ctrl-a,x",
            "--name",
            "shell2",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo again'>'; while true; do sleep 0.1; done",
        ],
    );
    assert!(text.trim_end().ends_with("exit 0"), "{text}");
    assert_eq!(state_of(&d, "shell2"), "running");
    let bad = d.molde(&["attach", "--detach-keys", "ctrl-", "shell"]).fails();
    assert!(bad.contains("--detach-keys"), "{bad}");

    // attach without a container terminal: the local terminal keeps its
    // line discipline, and Ctrl-C is a signal forwarded to the container.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got INT; exit 5' INT; while true; do echo tick; sleep 0.2; done",
    ])
    .ok();
    // A tick through the attach: it relays, and its handlers are set.
    let text = drive_keys(&d, "tick", b"\x03", &["attach", "plain"]);
    assert!(text.starts_with("canonical"), "{text}");
    assert!(text.contains("got INT"), "{text}");
    assert_eq!(d.molde(&["wait", "plain"]).stdout().trim(), "5");

    // --sig-proxy=false: Ctrl-C ends the CLI only; the container runs on.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "kept",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 5' INT; while true; do echo tick; sleep 0.2; done",
    ])
    .ok();
    let text = drive_keys(&d, "tick", b"\x03", &["attach", "--sig-proxy=false", "kept"]);
    assert!(
        text.trim_end().ends_with("exit -2"),
        "Ctrl-C ended the CLI: {text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(state_of(&d, "kept"), "running");
    for c in ["shell", "shell2", "kept"] {
        d.molde(&["rm", "-f", c]).ok();
    }
}

#[test]
fn run_pulls_a_missing_image_and_completion_scripts_load() {
    let reg = Registry::start();
    let d = daemon_with_busybox();
    let remote = format!("{}/lib/box:1", reg.host);
    d.molde(&["tag", IMAGE, &remote]).ok();
    d.molde(&["push", "-q", &remote]).ok();
    d.molde(&["rmi", &remote]).ok();

    let r = d.molde(&["run", "--rm", "--network", "none", &remote, "echo", "pulled"]);
    assert_eq!(
        r.stdout(),
        "pulled\n",
        "only the container's output on stdout: {}",
        r.describe()
    );
    assert!(r.stderr().contains("Unable to find image"), "{}", r.stderr());
    assert!(d.molde(&["images"]).ok().contains("lib/box"));
    // Present: no pull, unless asked.
    let again = d.molde(&["run", "--rm", "--network", "none", &remote, "true"]);
    assert!(!again.stderr().contains("Unable to find"), "{}", again.stderr());
    let always = d.molde(&[
        "run",
        "--rm",
        "--pull",
        "always",
        "--network",
        "none",
        &remote,
        "true",
    ]);
    assert!(
        always.stderr().contains(&remote),
        "pulled again: {}",
        always.describe()
    );
    assert!(always.out.status.success());
    // create pulls as run does.
    d.molde(&["rmi", &remote]).ok();
    d.molde(&["create", "--name", "made", "--network", "none", &remote, "true"])
        .ok();
    d.molde(&["rm", "made"]).ok();

    // completion: scripts each shell loads, naming the commands.
    let bash = d.molde(&["completion", "bash"]).ok();
    assert!(
        bash.contains("restart") && bash.contains("--detach-keys"),
        "{}",
        &bash[..200]
    );
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg("source /dev/stdin; complete -p molde")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(bash.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("molde"),
        "bash registered the completion"
    );
    for shell in ["zsh", "fish"] {
        let s = d.molde(&["completion", shell]).ok();
        assert!(s.contains("pause"), "{shell}");
    }
    assert!(d.molde(&["completion", "tcsh"]).fails().contains("tcsh"));
}

fn volume_names(d: &Daemon, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["volume", "ls", "-q"];
    args.extend_from_slice(extra);
    d.molde(&args).ok().lines().map(str::to_string).collect()
}

#[test]
fn volumes_named_anonymous_filled_from_the_image_and_kept_while_used() {
    let d = daemon_with_busybox();
    // An image with a VOLUME and data there; and one whose VOLUME path goes
    // through a link to `/`, naming a directory only the host has.
    let host_only = d.dir.path().join("host-only");
    std::fs::create_dir_all(&host_only).unwrap();
    std::fs::write(host_only.join("secret"), "host data").unwrap();
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\n\
             RUN mkdir -p /var/lib/app && echo seeded > /var/lib/app/seed && chown 1000:1001 /var/lib/app/seed \
             && ln -s / /esc\n\
             VOLUME /var/lib/app\n\
             VOLUME /esc{}\n",
            host_only.display()
        ),
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "localhost/test/vol:1", ctx.to_str().unwrap()])
        .ok();
    let img = "localhost/test/vol:1";

    // Named: created with labels, filled from the image on first use.
    assert_eq!(
        d.molde(&["volume", "create", "--label", "team=db", "data"])
            .ok()
            .trim(),
        "data"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&d.molde(&["volume", "inspect", "data"]).ok()).unwrap();
    assert_eq!(inspect[0]["Labels"]["team"], "db");
    let mountpoint = inspect[0]["Mountpoint"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&mountpoint).is_dir());
    assert_eq!(
        d.molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            "data:/var/lib/app",
            img,
            "stat",
            "-c",
            "%u:%g %n",
            "/var/lib/app/seed",
        ])
        .ok(),
        "1000:1001 /var/lib/app/seed\n",
        "the image's files, owners kept"
    );
    d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/d",
        IMAGE,
        "sh",
        "-c",
        "echo kept > /d/file",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(format!("{mountpoint}/file")).unwrap(),
        "kept\n"
    );
    let ro = d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        "type=volume,src=data,dst=/d,readonly",
        IMAGE,
        "sh",
        "-c",
        "cat /d/file; echo x > /d/other",
    ]);
    assert_eq!(ro.stdout(), "kept\n");
    assert!(!ro.out.status.success(), "read-only: {}", ro.describe());

    // In use (even by a stopped container): kept, and the error names it.
    d.molde(&[
        "create",
        "--name",
        "user",
        "--network",
        "none",
        "-v",
        "data:/d",
        IMAGE,
        "true",
    ])
    .ok();
    let err = d.molde(&["volume", "rm", "data"]).fails();
    assert!(err.contains("in use") && err.contains("user"), "{err}");
    assert!(!volume_names(&d, &["-f", "dangling=true"]).contains(&"data".to_string()));
    d.molde(&["rm", "user"]).ok();
    assert!(volume_names(&d, &["-f", "dangling=true"]).contains(&"data".to_string()));
    d.molde(&["volume", "rm", "data"]).ok();
    assert!(!std::path::Path::new(&mountpoint).exists());
    assert!(d.molde(&["volume", "rm", "data"]).fails().contains("data"));
    d.molde(&["volume", "rm", "-f", "data"]).ok();

    // Anonymous: one per image VOLUME, gone with rm -v; the linked path
    // was looked up in the image, so no host file came into it.
    let before = volume_names(&d, &[]).len();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "anon",
        "--network",
        "none",
        img,
        "sleep",
        "30",
    ])
    .ok();
    let made: Vec<String> = volume_names(&d, &[]);
    assert_eq!(made.len(), before + 2, "{made:?}");
    let esc = d
        .molde(&[
            "exec",
            "anon",
            "sh",
            "-c",
            &format!("ls -A /esc{}", host_only.display()),
        ])
        .ok();
    assert!(
        esc.trim().is_empty(),
        "nothing of the host's in the volume: {esc}"
    );
    d.molde(&["rm", "-f", "-v", "anon"]).ok();
    assert_eq!(volume_names(&d, &[]).len(), before);
    d.molde(&["run", "--rm", "--network", "none", img, "true"]).ok();
    assert_eq!(
        volume_names(&d, &[]).len(),
        before,
        "run --rm takes its anonymous volumes"
    );

    // prune: dangling anonymous volumes; -a named ones too.
    d.molde(&[
        "create",
        "--name",
        "a2",
        "--network",
        "none",
        "-v",
        "/scratch",
        IMAGE,
        "true",
    ])
    .ok();
    d.molde(&["rm", "a2"]).ok();
    d.molde(&["volume", "create", "keepme"]).ok();
    assert_eq!(volume_names(&d, &[]).len(), before + 2);
    let pruned = d.molde(&["volume", "prune", "-f"]).ok();
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(volume_names(&d, &[]), ["keepme"]);
    d.molde(&["volume", "prune", "-a", "-f"]).ok();
    assert!(volume_names(&d, &[]).is_empty());
    let refused = d.molde(&["volume", "prune"]).fails();
    assert!(refused.contains("-f"), "no terminal, no -f: {refused}");
    assert!(
        d.molde(&["volume", "create", "-d", "nfs", "x"])
            .fails()
            .contains("local")
    );
}

fn restart_count(d: &Daemon, name: &str) -> u64 {
    let v: serde_json::Value = d.inspect(name);
    v["RestartCount"].as_u64().unwrap()
}

#[test]
fn restart_policies_after_exits_stops_molded_restarts_and_reboots() {
    let mut d = daemon_with_busybox();
    let run = |d: &Daemon, name: &str, policy: &str, script: &str| {
        d.molde(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            script,
        ])
        .ok();
    };
    // on-failure:2: three runs in all, then it stays exited.
    run(&d, "flaky", "on-failure:2", "echo try; exit 1");
    molde_tests::eventually(20, "two restarts", || {
        d.molde(&["logs", "flaky"]).stdout() == "try\ntry\ntry\n" && state_of(&d, "flaky") == "exited"
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        d.molde(&["logs", "flaky"]).ok(),
        "try\ntry\ntry\n",
        "no third restart"
    );
    assert_eq!(restart_count(&d, "flaky"), 2);
    // Between a crash and the next start, ps says Restarting, as docker's.
    run(&d, "crashy", "always", "exit 3");
    molde_tests::eventually(20, "Restarting in ps", || {
        let ps = d.molde(&["ps", "--format", "{{.Names}} {{.Status}}"]).ok();
        ps.lines().any(|l| l.starts_with("crashy Restarting (3)"))
    });
    d.molde(&["rm", "-f", "crashy"]).ok();
    // A clean exit is no failure.
    run(&d, "fine", "on-failure", "echo ok");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(d.molde(&["logs", "fine"]).ok(), "ok\n");

    // always: back after each exit, until the user stops it.
    run(&d, "forever", "always", "echo up; sleep 0.2");
    molde_tests::eventually(20, "a few restarts", || {
        d.molde(&["logs", "forever"]).stdout().lines().count() >= 3
    });
    d.molde(&["stop", "-t", "1", "forever"]).ok();
    molde_tests::eventually(10, "stopped", || state_of(&d, "forever") == "exited");
    let lines = d.molde(&["logs", "forever"]).ok().lines().count();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        d.molde(&["logs", "forever"]).ok().lines().count(),
        lines,
        "stopped stays stopped"
    );
    assert!(
        d.molde(&["run", "--rm", "--restart", "always", IMAGE, "true"])
            .fails()
            .contains("--rm"),
        "--rm and --restart conflict"
    );
    assert!(
        d.molde(&["run", "-d", "--restart", "sometimes", IMAGE, "true"])
            .fails()
            .contains("sometimes")
    );

    // molded starts again: `always` comes back even when stopped,
    // `unless-stopped` only when it was not.
    run(&d, "us-stopped", "unless-stopped", "sleep 1000");
    run(&d, "us-running", "unless-stopped", "sleep 1000");
    d.molde(&["stop", "-t", "1", "us-stopped"]).ok();
    d.molde(&["rm", "-f", "flaky", "fine"]).ok();
    d.restart();
    molde_tests::eventually(20, "the always container back", || {
        state_of(&d, "forever") == "running"
    });
    assert_eq!(state_of(&d, "us-running"), "running", "its shim outlived molded");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(state_of(&d, "us-stopped"), "exited");

    // A reboot: molded and every container gone with the state directory;
    // the policies bring theirs back from the records.
    run(&d, "plain", "no", "sleep 1000");
    d.kill9();
    let bundles = d.state.join("runtime").join("default");
    for b in std::fs::read_dir(&bundles).unwrap().flatten() {
        for pid in ["init.pid", "shim.pid"] {
            if let Ok(p) = std::fs::read_to_string(b.path().join(pid)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.trim().parse().unwrap()),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    for b in std::fs::read_dir(&bundles).unwrap().flatten() {
        let _ = rustix::mount::unmount(b.path().join("rootfs"), rustix::mount::UnmountFlags::DETACH);
    }
    std::fs::remove_dir_all(d.state.join("runtime")).unwrap();
    d.spawn();
    for name in ["forever", "us-running"] {
        molde_tests::eventually(20, "restarted after the reboot", || {
            state_of(&d, name) == "running"
        });
    }
    assert_eq!(state_of(&d, "plain"), "exited", "no policy, not started");
    assert!(d.molde(&["ps", "-a"]).ok().contains("Exited (255)"));
    assert_ne!(state_of(&d, "us-stopped"), "running");
    let out = d.molde(&["exec", "us-running", "echo", "alive"]).ok();
    assert_eq!(out, "alive\n");
    for c in ["forever", "us-running", "us-stopped", "plain"] {
        d.molde(&["rm", "-f", c]).ok();
    }
}

#[test]
fn run_flags_capabilities_ulimits_shm_labels_stop_signal_and_init() {
    let d = daemon_with_busybox();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        d.molde(&all).ok()
    };
    let cap_eff = |out: String| {
        let hex = out.split_whitespace().last().unwrap().to_string();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    let only_bind = cap_eff(run(&[
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        IMAGE,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]));
    assert_eq!(only_bind, 1 << 10, "CAP_NET_BIND_SERVICE alone");
    let with_admin = cap_eff(run(&[
        "--cap-add",
        "sys_admin",
        IMAGE,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]));
    assert_ne!(with_admin & (1 << 21), 0, "CAP_SYS_ADMIN added");
    let without_chown = cap_eff(run(&[
        "--cap-drop",
        "CHOWN",
        IMAGE,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]));
    assert_eq!(without_chown & 1, 0, "CAP_CHOWN dropped");
    let bad = d
        .molde(&["run", "--rm", "--cap-add", "NOT_A_CAP", IMAGE, "true"])
        .fails();
    assert!(bad.contains("NOT_A_CAP"), "{bad}");

    assert_eq!(
        run(&[
            "--ulimit",
            "nofile=512:1024",
            IMAGE,
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn"
        ]),
        "512\n1024\n"
    );
    let bad = d
        .molde(&["run", "--rm", "--ulimit", "nofile=9:1", IMAGE, "true"])
        .fails();
    assert!(bad.contains("soft limit"), "{bad}");
    let shm = run(&["--shm-size", "32m", IMAGE, "df", "-k", "/dev/shm"]);
    assert!(
        shm.lines().nth(1).unwrap().split_whitespace().nth(1) == Some("32768"),
        "{shm}"
    );

    d.molde(&[
        "run",
        "-d",
        "--name",
        "labelled",
        "--label",
        "team=web",
        "--stop-signal",
        "USR1",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 9' USR1; while true; do sleep 0.1; done",
    ])
    .ok();
    let v: serde_json::Value = d.inspect("labelled");
    assert_eq!(v["Config"]["Labels"]["team"], "web");
    d.molde(&["stop", "-t", "5", "labelled"]).ok();
    assert_eq!(
        d.molde(&["wait", "labelled"]).stdout().trim(),
        "9",
        "stopped with its stop signal"
    );

    // --stop-timeout: `stop` without -t waits that long, not 10 s; the
    // bound below is far from both.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 0.1; done",
    ])
    .ok();
    let stop = std::process::Command::new("timeout")
        .args([
            "6",
            molde_tests::bin("molde").to_str().unwrap(),
            "--address",
            d.sock.to_str().unwrap(),
        ])
        .args(["stop", "stubborn"])
        .output()
        .unwrap();
    assert!(stop.status.success(), "stopped within its own timeout: {stop:?}");
    assert_eq!(d.molde(&["wait", "stubborn"]).stdout().trim(), "137");

    // --init: tini is PID 1 and hands SIGTERM to the command, which as
    // PID 1 itself would not have taken it.
    let cmdline = run(&["--init", IMAGE, "sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline"]);
    assert!(cmdline.starts_with("/sbin/molde-init -- sh"), "{cmdline}");
    d.molde(&[
        "run",
        "-d",
        "--name",
        "inited",
        "--init",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "100",
    ])
    .ok();
    d.molde(&["stop", "-t", "20", "inited"]).ok();
    assert_eq!(
        d.molde(&["wait", "inited"]).stdout().trim(),
        "143",
        "SIGTERM reached sleep"
    );
    for c in ["labelled", "stubborn", "inited"] {
        d.molde(&["rm", c]).ok();
    }
}

/// The address `name` has on its network, as `network inspect` shows it.
fn address_on(d: &Daemon, network: &str, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&d.molde(&["network", "inspect", network]).ok()).unwrap();
    v[0]["Containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["Name"] == name)
        .map(|c| {
            c["IPv4Address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .unwrap_or_else(|| panic!("{name} is not on {network}: {v}"))
}

#[test]
fn user_networks_resolve_names_and_are_isolated() {
    let d = daemon_with_busybox();
    // Only names the networks know are asked below: nothing is forwarded
    // to the host's resolvers.
    let front = d
        .molde(&["network", "create", "--label", "tier=web", "front"])
        .ok();
    assert_eq!(front.trim().len(), 64, "an id: {front}");
    d.molde(&["network", "create", "back"]).ok();
    let ls = d.molde(&["network", "ls"]).ok();
    for n in ["bridge", "host", "none", "front", "back"] {
        assert!(ls.contains(n), "{ls}");
    }
    let v: serde_json::Value = serde_json::from_str(&d.molde(&["network", "inspect", "front"]).ok()).unwrap();
    let subnet = v[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap().to_string();
    assert!(
        subnet.starts_with("10.90."),
        "outside podman's and the default network's: {subnet}"
    );
    assert_eq!(v[0]["Labels"]["tier"], "web");
    assert!(
        d.molde(&["network", "create", "front"])
            .fails()
            .contains("already exists")
    );
    assert!(
        d.molde(&["network", "create", "bridge"])
            .fails()
            .contains("molde's own")
    );
    let clash = d
        .molde(&["network", "create", "--subnet", &subnet, "again"])
        .fails();
    assert!(clash.contains("overlaps"), "{clash}");

    for (name, net, alias) in [
        ("a1", "front", None),
        ("a2", "front", Some("api")),
        ("b1", "back", None),
    ] {
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        if let Some(a) = alias {
            args.extend(["--network-alias", a]);
        }
        args.extend([IMAGE, "sleep", "300"]);
        d.molde(&args).ok();
    }
    // By name and by alias on the same network, through molded's DNS.
    let resolv = d.molde(&["exec", "a1", "cat", "/etc/resolv.conf"]).ok();
    let gateway = v[0]["IPAM"]["Config"][0]["Gateway"].as_str().unwrap();
    assert!(resolv.contains(&format!("nameserver {gateway}")), "{resolv}");
    // The network's bridge keeps the address it was made with as containers
    // come and go: the gateway a container learnt stays reachable.
    let bridge = {
        let out = std::process::Command::new("ip")
            .args(["-o", "addr", "show", "to", gateway])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no host interface holds {gateway}"))
            .to_string()
    };
    let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{bridge}/{f}")).unwrap();
    let mac = sys("address").trim().to_string();
    assert_eq!(
        sys("addr_assign_type").trim(),
        "3",
        "{bridge}'s address is set, not a port's"
    );
    d.molde(&["exec", "a1", "ping", "-c", "1", "-W", "5", gateway])
        .ok();
    let learnt = d.molde(&["exec", "a1", "ip", "neigh", "show", gateway]).ok();
    assert!(learnt.contains(&mac), "a1 knows the gateway as {mac}: {learnt}");
    d.molde(&[
        "run",
        "-d",
        "--name",
        "a3",
        "--network",
        "front",
        IMAGE,
        "sleep",
        "300",
    ])
    .ok();
    assert_eq!(
        sys("address").trim(),
        mac,
        "a3 joining changed {bridge}'s address"
    );
    d.molde(&["rm", "-f", "a3"]).ok();
    let a1 = address_on(&d, "front", "a1");
    let ping = d.molde(&["exec", "a2", "ping", "-c", "1", "-W", "5", "a1"]).ok();
    assert!(ping.contains(&a1), "a1 resolved to its address: {ping}");
    d.molde(&["exec", "a1", "ping", "-c", "1", "-W", "5", "api"]).ok();
    d.molde(&["exec", "a1", "ping", "-c", "1", "-W", "5", "a2.front"])
        .ok();
    // Not from another network, nor from the default bridge, even by address.
    let cross = d.molde(&["exec", "b1", "ping", "-c", "1", "-W", "2", &a1]);
    assert!(
        !cross.out.status.success(),
        "back reached front: {}",
        cross.describe()
    );
    let from_default = d.molde(&["run", "--rm", IMAGE, "ping", "-c", "1", "-W", "2", &a1]);
    assert!(
        !from_default.out.status.success(),
        "the default bridge reached front"
    );

    // A network with containers stays; rm names them.
    let busy = d.molde(&["network", "rm", "front"]).fails();
    assert!(busy.contains("a1") && busy.contains("a2"), "{busy}");

    // --internal, --subnet, --ip, --add-host, --dns-search.
    d.molde(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.92.77.0/24",
        "private",
    ])
    .ok();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--network",
            "private",
            "--ip",
            "10.92.77.50",
            "--add-host",
            "db:192.0.2.7",
            "--dns-search",
            "example.test",
            IMAGE,
            "sh",
            "-c",
            "ip -4 -o addr show eth0; grep db /etc/hosts; grep search /etc/resolv.conf; ip route",
        ])
        .ok();
    assert!(out.contains("inet 10.92.77.50/24"), "{out}");
    assert!(out.contains("192.0.2.7\tdb"), "{out}");
    assert!(out.contains("search example.test"), "{out}");
    assert!(
        !out.contains("default"),
        "an internal network has no way out: {out}"
    );
    let bad = d
        .molde(&["run", "--rm", "--ip", "10.9.9.9", IMAGE, "true"])
        .fails();
    assert!(bad.contains("user network"), "{bad}");
    let bad = d
        .molde(&["run", "--rm", "--add-host", "nocolon", IMAGE, "true"])
        .fails();
    assert!(bad.contains("NAME:IP"), "{bad}");
    let missing = d
        .molde(&["run", "--rm", "--network", "nowhere", IMAGE, "true"])
        .fails();
    assert!(missing.contains("nowhere"), "{missing}");

    // Gone with its containers: bridge and rules too.
    for c in ["a1", "a2", "b1"] {
        d.molde(&["rm", "-f", c]).ok();
    }
    let bridge = v[0]["Options"]["bridge"].as_str().unwrap().to_string();
    assert!(std::path::Path::new("/sys/class/net").join(&bridge).exists());
    // Its address store (host-local's directory) goes with it.
    let id = v[0]["Id"].as_str().unwrap();
    let store = std::path::Path::new("/var/lib/cni/networks").join(format!("molde-front-{}", &id[..8]));
    assert!(store.exists(), "{} held a1's and a2's addresses", store.display());
    d.molde(&["network", "rm", "front"]).ok();
    assert!(!std::path::Path::new("/sys/class/net").join(&bridge).exists());
    assert!(!store.exists(), "{} is left", store.display());
    let rules = std::process::Command::new("iptables")
        .args(["-S"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&bridge),
        "its isolation rules went"
    );
    let pruned = d.molde(&["network", "prune", "-f"]).ok();
    assert!(pruned.contains("back") && pruned.contains("private"), "{pruned}");
    assert_eq!(d.molde(&["network", "ls", "-q"]).ok(), "bridge\nhost\nnone\n");
}

#[test]
fn system_df_and_prunes_report_and_reclaim() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "--name",
        "big",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=5 2>/dev/null",
    ])
    .ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "up",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "100",
    ])
    .ok();
    d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "kept:/v",
        IMAGE,
        "sh",
        "-c",
        "echo x > /v/f",
    ])
    .ok();
    let row = |df: &str, kind: &str| -> Vec<String> {
        let line = df
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("{kind} in {df}"));
        line[kind.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let df = d.molde(&["system", "df"]).ok();
    assert_eq!(&row(&df, "Images")[..2], ["1", "1"], "{df}");
    assert_eq!(&row(&df, "Containers")[..2], ["2", "1"], "{df}");
    assert_eq!(&row(&df, "Local Volumes")[..2], ["1", "0"], "{df}");
    let containers = row(&df, "Containers");
    assert_eq!(containers[3], "MB", "5 MB written: {df}");

    // container prune: the stopped one goes, with what it wrote.
    let out = d.molde(&["container", "prune", "-f"]).ok();
    assert!(out.contains("big") && !out.contains("up\n"), "{out}");
    assert!(out.contains("Total reclaimed space: 5."), "{out}");
    assert_eq!(d.molde(&["ps", "-a", "-q"]).ok(), "up\n");
    assert!(d.molde(&["container", "prune"]).fails().contains("-f"));

    // image prune -a: only what no container uses.
    d.molde(&["tag", IMAGE, "localhost/other:1"]).ok();
    let out = d.molde(&["image", "prune", "-a", "-f"]).ok();
    assert!(
        out.contains("localhost/other:1") && !out.contains("busybox"),
        "{out}"
    );

    // system prune: stopped containers, unused networks, and volumes when asked.
    d.molde(&["network", "create", "unused"]).ok();
    d.molde(&[
        "create",
        "--name",
        "never",
        "--network",
        "none",
        "-v",
        "/anon",
        IMAGE,
        "true",
    ])
    .ok();
    d.molde(&["rm", "never"]).ok();
    let before = d.molde(&["volume", "ls", "-q"]).ok().lines().count();
    let out = d.molde(&["system", "prune", "-f", "--volumes"]).ok();
    assert!(out.contains("unused"), "{out}");
    assert_eq!(
        d.molde(&["volume", "ls", "-q"]).ok().lines().count(),
        before - 1,
        "the anonymous one"
    );
    assert!(
        d.molde(&["volume", "ls", "-q"]).ok().contains("kept"),
        "named volumes stay"
    );
    assert_eq!(d.molde(&["ps", "-q"]).ok(), "up\n", "a running container stays");
    d.molde(&["rm", "-f", "up"]).ok();
}

#[test]
fn events_tell_what_happened_filtered_and_since_a_time() {
    let reg = Registry::start();
    let d = daemon_with_busybox();
    // A subscriber from before anything happens (ends with --until).
    let until = (std::time::SystemTime::now() + std::time::Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let live = std::process::Command::new(molde_tests::bin("molde"))
        .args([
            "--address",
            d.sock.to_str().unwrap(),
            "events",
            "--filter",
            "type=volume",
            "--until",
            &until,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = d.molde(&[
        "run",
        "--name",
        "ev",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(r.out.status.code(), Some(3), "{}", r.describe());
    d.molde(&["rm", "ev"]).ok();
    d.molde(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        "--network",
        "none",
        IMAGE,
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=100M",
        "count=1",
    ]);
    let remote = format!("{}/ev/box:1", reg.host);
    d.molde(&["tag", IMAGE, &remote]).ok();
    d.molde(&["push", "-q", &remote]).ok();
    d.molde(&["rmi", &remote]).ok();
    d.molde(&["pull", "-q", &remote]).ok();
    d.molde(&["volume", "create", "evv"]).ok();
    d.molde(&["volume", "rm", "evv"]).ok();
    d.molde(&["network", "create", "evn"]).ok();
    d.molde(&["network", "rm", "evn"]).ok();

    let all = d.molde(&["events", "--since", "5m", "--until", "0s"]).ok();
    let actions: Vec<String> = all
        .lines()
        .map(|l| l.split_whitespace().skip(1).take(3).collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "container create ev",
        "container start ev",
        "container die ev",
        "container destroy ev",
        "container oom hog",
        "image tag",
        "image push",
        "image delete",
        "image pull",
        "volume create evv",
        "volume destroy evv",
        "network create evn",
        "network destroy evn",
    ] {
        assert!(actions.iter().any(|a| a.starts_with(want)), "{want} in:\n{all}");
    }
    let order: Vec<&String> = actions.iter().filter(|a| a.ends_with(" ev")).collect();
    assert_eq!(
        order,
        [
            "container create ev",
            "container start ev",
            "container die ev",
            "container destroy ev"
        ],
        "in the order they happened"
    );
    assert!(all.contains("die ev (exitCode=3)"), "{all}");

    let dies = d
        .molde(&[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            "event=die",
            "--filter",
            "container=ev",
        ])
        .ok();
    assert_eq!(dies.lines().count(), 1, "{dies}");
    let json = d
        .molde(&[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            "type=network",
            "--format",
            "json",
        ])
        .ok();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["Type"].as_str(), first["Action"].as_str()),
        (Some("network"), Some("create"))
    );
    assert!(
        d.molde(&["events", "--filter", "colour=red"])
            .fails()
            .contains("colour")
    );

    // The live subscriber saw the volume's events as they happened.
    let child = live;
    // Ended by --until at the latest; its output so far is what it printed.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("volume create evv") && text.contains("volume destroy evv"),
        "{text}"
    );
    assert!(!text.contains("container"), "filtered: {text}");
    d.molde(&["rm", "hog"]).ok();
}

fn health_of(d: &Daemon, name: &str) -> String {
    let v: serde_json::Value = d.inspect(name);
    v["State"]["Health"]["Status"].as_str().unwrap_or("").to_string()
}

#[test]
fn health_checks_from_flags_and_the_image() {
    let d = daemon_with_busybox();
    // Healthy while /tmp/ok is there, unhealthy after two failures.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "checked",
        "--network",
        "none",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/ok; while [ ! -f /tmp/stop ]; do sleep 0.1; done; rm /tmp/ok; sleep 100",
    ])
    .ok();
    molde_tests::eventually(20, "healthy", || health_of(&d, "checked") == "healthy");
    let ps = d.molde(&["ps"]).ok();
    assert!(ps.contains("Up ") && ps.contains(" (healthy)"), "{ps}");
    d.molde(&["exec", "checked", "touch", "/tmp/stop"]).ok();
    molde_tests::eventually(20, "unhealthy", || health_of(&d, "checked") == "unhealthy");
    let v: serde_json::Value = d.inspect("checked");
    assert!(
        v["State"]["Health"]["FailingStreak"].as_u64().unwrap() >= 2,
        "{v}"
    );
    assert_ne!(
        v["State"]["Health"]["Log"][0]["ExitCode"],
        serde_json::Value::Null
    );
    let events = d
        .molde(&[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            "event=health_status",
        ])
        .ok();
    assert!(
        events.contains("health_status: healthy checked")
            && events.contains("health_status: unhealthy checked"),
        "{events}"
    );
    let bad = d
        .molde(&["run", "--rm", "--health-interval", "1s", IMAGE, "true"])
        .fails();
    assert!(bad.contains("--health-cmd"), "{bad}");

    // The image's HEALTHCHECK, and --no-healthcheck.
    let ctx = d.dir.path().join("hc");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nHEALTHCHECK --interval=200ms --retries=1 CMD [\"true\"]\n"),
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "localhost/test/hc:1", ctx.to_str().unwrap()])
        .ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "imaged",
        "--network",
        "none",
        "localhost/test/hc:1",
        "sleep",
        "100",
    ])
    .ok();
    molde_tests::eventually(20, "the image's check", || health_of(&d, "imaged") == "healthy");
    d.molde(&[
        "run",
        "-d",
        "--name",
        "unchecked",
        "--no-healthcheck",
        "--network",
        "none",
        "localhost/test/hc:1",
        "sleep",
        "100",
    ])
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(health_of(&d, "unchecked"), "", "no check");
    for c in ["checked", "imaged", "unchecked"] {
        d.molde(&["rm", "-f", c]).ok();
    }
}

#[test]
fn log_opt_rotates_molde_log_file() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "--name",
        "chatty",
        "--network",
        "none",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        IMAGE,
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); sleep 0.001; done",
    ])
    .ok();
    let v: serde_json::Value = d.inspect("chatty");
    let bundle = std::path::PathBuf::from(v["BundlePath"].as_str().unwrap());
    let sizes: Vec<u64> = ["log.json", "log.json.1", "log.json.2"]
        .iter()
        .map(|f| std::fs::metadata(bundle.join(f)).map(|m| m.len()).unwrap_or(0))
        .collect();
    assert!(
        sizes.iter().all(|s| *s > 0 && *s <= 2048),
        "three files, each near 2k: {sizes:?}"
    );
    assert!(!bundle.join("log.json.3").exists(), "no more than 3 files");
    let logs = d.molde(&["logs", "chatty"]).ok();
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.last(), Some(&"line 299"), "the newest lines are kept");
    assert!(lines.len() < 300, "the oldest went with rotation");
    let numbers: Vec<u32> = lines.iter().map(|l| l[5..].parse().unwrap()).collect();
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost between files"
    );
    let bad = d
        .molde(&["run", "--rm", "--log-opt", "max-file=2", IMAGE, "true"])
        .fails();
    assert!(bad.contains("max-size"), "{bad}");
    let bad = d
        .molde(&["run", "--rm", "--log-opt", "compress=true", IMAGE, "true"])
        .fails();
    assert!(bad.contains("compress"), "{bad}");
    d.molde(&["rm", "chatty"]).ok();
}

#[test]
fn cp_export_and_diff_read_a_containers_files() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "--name",
        "maker",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /out/sub && echo data > /out/sub/f && chown 1000:1001 /out/sub/f && chmod 640 /out/sub/f \
         && ln -s /etc/passwd /out/link && rm /bin/cat && echo changed > /etc/motd",
    ])
    .ok();
    // A stopped container: a directory, into an existing directory.
    let host = d.dir.path().join("copied");
    std::fs::create_dir_all(&host).unwrap();
    d.molde(&["cp", "maker:/out", host.to_str().unwrap()]).ok();
    use std::os::unix::fs::MetadataExt;
    let f = host.join("out/sub/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "data\n");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o777),
        (1000, 1001, 0o640),
        "owner and mode kept"
    );
    assert_eq!(
        std::fs::read_link(host.join("out/link")).unwrap(),
        std::path::Path::new("/etc/passwd"),
        "a link stays a link"
    );
    // A file under a new name; a link in the container never leads out.
    d.molde(&["cp", "maker:/out/sub/f", host.join("renamed").to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_to_string(host.join("renamed")).unwrap(), "data\n");
    let via_link = d.molde(&["cp", "maker:/out/link/x", host.join("nope").to_str().unwrap()]);
    assert!(!via_link.out.status.success());
    let missing = d.molde(&["cp", "maker:/no/such", host.to_str().unwrap()]).fails();
    assert!(missing.contains("/no/such"), "{missing}");

    // Into the stopped container: a directory with owners, modes and links
    // kept; a file under a new name; a tar from stdin into a directory.
    let src = d.dir.path().join("src");
    std::fs::create_dir_all(src.join("conf")).unwrap();
    std::fs::write(src.join("conf/app.ini"), "k=v\n").unwrap();
    std::os::unix::fs::chown(src.join("conf/app.ini"), Some(2000), Some(2001)).unwrap();
    std::fs::set_permissions(
        src.join("conf/app.ini"),
        std::os::unix::fs::PermissionsExt::from_mode(0o604),
    )
    .unwrap();
    std::os::unix::fs::symlink("app.ini", src.join("conf/current")).unwrap();
    d.molde(&["cp", src.join("conf").to_str().unwrap(), "maker:/out"])
        .ok();
    d.molde(&[
        "cp",
        src.join("conf/app.ini").to_str().unwrap(),
        "maker:/etc/app.ini",
    ])
    .ok();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o755);
    h.set_uid(7);
    h.set_gid(8);
    tar.append_data(&mut h, "bin/tool", &b"#!/bin/sh\n"[..6]).unwrap();
    d.molde_stdin(&["cp", "-", "maker:/out"], &tar.into_inner().unwrap())
        .ok();
    // A link in the container does not carry a copy out of it: /out/link
    // points at /etc/passwd, resolved in the container's root.
    d.molde(&[
        "cp",
        src.join("conf/app.ini").to_str().unwrap(),
        "maker:/out/link",
    ])
    .ok();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        host_passwd.contains("root:"),
        "the host's /etc/passwd is untouched"
    );
    let err = d
        .molde(&["cp", src.join("conf").to_str().unwrap(), "maker:/no/such/dir"])
        .fails();
    assert!(
        err.contains("/no/such/dir") && err.contains("does not exist"),
        "{err}"
    );
    let passwd = d.molde(&["cp", "maker:/etc/passwd", "-"]).out.stdout;
    assert!(
        !String::from_utf8_lossy(&passwd).contains("k=v"),
        "the link was replaced, not written through"
    );
    d.molde(&[
        "run",
        "-d",
        "--name",
        "reader",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "100",
    ])
    .ok();
    let conf = d.molde(&["cp", "maker:/out/conf", "-"]).out.stdout;
    let mut a = tar::Archive::new(conf.as_slice());
    let mut seen = std::collections::BTreeMap::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        seen.insert(
            e.path().unwrap().display().to_string(),
            (
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mode().unwrap() & 0o777,
                h.entry_type().is_symlink(),
            ),
        );
    }
    assert_eq!(seen["conf/app.ini"], (2000, 2001, 0o604, false), "{seen:?}");
    assert!(seen["conf/current"].3, "the link stays a link: {seen:?}");
    let tool = d.molde(&["cp", "maker:/out/bin/tool", "-"]).out.stdout;
    let mut a = tar::Archive::new(tool.as_slice());
    let e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(
        (e.header().uid().unwrap(), e.header().mode().unwrap() & 0o777),
        (7, 0o755)
    );
    assert!(d.molde(&["cp", "maker:/etc/app.ini", "-"]).out.status.success());
    // Into a running container: it sees the files at once.
    d.molde(&["cp", src.join("conf/app.ini").to_str().unwrap(), "reader:/tmp"])
        .ok();
    assert_eq!(d.molde(&["exec", "reader", "cat", "/tmp/app.ini"]).ok(), "k=v\n");
    d.molde(&["rm", "-f", "reader"]).ok();

    // `-`: the tar itself; export: the whole filesystem.
    let tar = d.molde(&["cp", "maker:/etc/motd", "-"]);
    let mut a = tar::Archive::new(tar.out.stdout.as_slice());
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["motd"]);
    let exported = d.dir.path().join("fs.tar");
    d.molde(&["export", "-o", exported.to_str().unwrap(), "maker"])
        .ok();
    let mut a = tar::Archive::new(std::fs::File::open(&exported).unwrap());
    let names: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("bin/busybox")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("out/sub/f")));
    assert!(
        !names.iter().any(|n| n.ends_with("bin/cat")),
        "removed in the container"
    );

    // diff: what it added, changed and deleted.
    let diff = d.molde(&["diff", "maker"]).ok();
    for want in ["A /out", "A /out/sub/f", "C /etc", "D /bin/cat"] {
        assert!(diff.lines().any(|l| l == want), "{want} in:\n{diff}");
    }
    assert!(!diff.contains("/bin/busybox"), "unchanged files are not listed");
    // A running container too.
    d.molde(&[
        "run",
        "-d",
        "--name",
        "live",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo now > /now; sleep 100",
    ])
    .ok();
    molde_tests::eventually(10, "its file", || {
        d.molde(&["cp", "live:/now", "-"]).out.status.success()
    });
    assert!(d.molde(&["diff", "live"]).ok().contains("A /now"));
    d.molde(&["rm", "-f", "live", "maker"]).ok();
}

#[test]
fn commit_makes_an_image_of_a_containers_changes() {
    let d = daemon_with_busybox();
    d.molde(&[
        "run",
        "--name",
        "changed",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo committed > /made; rm /bin/cat",
    ])
    .ok();
    let digest = d
        .molde(&[
            "commit",
            "-m",
            "my change",
            "-a",
            "Ada <ada@example.test>",
            "changed",
            "localhost/committed:1",
        ])
        .ok();
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    d.molde(&["rm", "changed"]).ok();
    let out = d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/committed:1",
        "sh",
        "-c",
        "cat /made; test -e /bin/cat || echo gone",
    ]);
    assert_eq!(
        out.ok(),
        "committed\ngone\n",
        "the changes, deletions too, are in the image"
    );
    let v: serde_json::Value = d.inspect("localhost/committed:1");
    let text = v.to_string();
    assert!(
        text.contains("my change") && text.contains("Ada <ada@example.test>"),
        "{text}"
    );
    // It outlives a collection: everything it needs is referenced.
    d.molde(&["gc"]).ok();
    d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/committed:1",
        "head",
        "/made",
    ])
    .ok();
    // And can be saved and loaded elsewhere, as any image.
    let tar = d.dir.path().join("committed.tar");
    d.molde(&["save", "-o", tar.to_str().unwrap(), "localhost/committed:1"])
        .ok();
    let other = Daemon::start();
    other.molde(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    assert_eq!(
        other
            .molde(&[
                "run",
                "--rm",
                "--network",
                "none",
                "localhost/committed:1",
                "head",
                "/made"
            ])
            .ok(),
        "committed\n"
    );
}
