//! containers.v1 through containerd's ctr: records with client-generated specs
//! and rootfs snapshots prepared by molded's snapshotter.

use molde_tests::Daemon;
use molde_tests::image::{self, Compression, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;

#[test]
fn ctr_containers_create_ls_info_label_rm() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = image::layout(
        &tmp.path().join("oci"),
        &[tar(&busybox_rootfs())],
        Compression::Gzip,
        host_arch(),
    );
    reg.push_layout(&l.dir, "ctr/busybox:1");
    let d = Daemon::start();
    let reference = format!("{}/ctr/busybox:1", reg.host);
    d.ctr(&["images", "pull", "--plain-http", &reference]).ok();
    d.ctr(&[
        "containers",
        "create",
        "--label",
        "team=a",
        &reference,
        "web1",
        "sleep",
        "10",
    ])
    .ok();

    let ls = d.ctr(&["containers", "ls"]).ok();
    assert!(ls.contains("web1") && ls.contains(&reference), "{ls}");
    let info: serde_json::Value = serde_json::from_str(&d.ctr(&["containers", "info", "web1"]).ok()).unwrap();
    assert_eq!(info["ID"], "web1");
    assert_eq!(info["Image"], reference.as_str());
    assert_eq!(info["Labels"]["team"], "a");
    assert_eq!(
        info["Spec"]["process"]["args"][1], "10",
        "the spec ctr generated round-trips"
    );
    let key = info["SnapshotKey"].as_str().unwrap().to_string();
    assert!(
        d.ctr(&["snapshots", "ls"]).ok().contains(&key),
        "ctr prepared the rootfs snapshot in molded"
    );

    d.ctr(&["containers", "label", "web1", "tier=1"]).ok();
    let info: serde_json::Value = serde_json::from_str(&d.ctr(&["containers", "info", "web1"]).ok()).unwrap();
    assert_eq!(info["Labels"]["tier"], "1");
    let err = d.ctr(&["containers", "create", &reference, "web1"]).fails();
    assert!(err.contains("already exists"), "{err}");
    assert!(
        d.ctr(&["containers", "ls", "-q", "labels.team==b"])
            .ok()
            .trim()
            .is_empty()
    );

    d.ctr(&["containers", "rm", "web1"]).ok();
    assert!(!d.ctr(&["containers", "ls", "-q"]).ok().contains("web1"));
    assert!(
        !d.ctr(&["snapshots", "ls"]).ok().contains(&key),
        "ctr removes the container's snapshot"
    );
    let err = d.ctr(&["containers", "info", "web1"]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ctr_run_and_task_commands_run_containers_in_molde_shims() {
    let d = Daemon::start();
    let tar = d.dir.path().join("busybox.tar");
    let script = molde_tests::base_image_script();
    assert!(
        std::process::Command::new("python3")
            .arg(script)
            .arg(&tar)
            .status()
            .unwrap()
            .success()
    );
    d.molde(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    let image = "localhost/molde/busybox:latest";

    assert_eq!(d.ctr(&["run", "--rm", image, "hello", "echo", "hi"]).ok(), "hi\n");
    let r = d.ctr(&[
        "run",
        "--rm",
        image,
        "failing",
        "sh",
        "-c",
        "echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(r.out.status.code(), Some(3));
    assert_eq!(r.stderr(), "to-stderr\n");
    assert!(
        d.ctr(&["containers", "ls", "-q"]).ok().trim().is_empty(),
        "--rm removed both"
    );

    d.ctr(&["run", "-d", image, "bg", "sleep", "60"]).ok();
    let tasks = d.ctr(&["task", "ls"]).ok();
    assert!(tasks.contains("bg") && tasks.contains("RUNNING"), "{tasks}");
    let pid: u32 = tasks
        .lines()
        .find(|l| l.starts_with("bg"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(d.ctr(&["task", "ps", "bg"]).ok().contains(&pid.to_string()));

    // `ctr task metrics` reads containerd's cgroup metrics: the same numbers
    // as the container's cgroup files.
    let metrics = d.ctr(&["task", "metrics", "bg"]).ok();
    let metric = |name: &str| -> String {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
    };
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // The container's directory in a v1 controller's hierarchy, if the
    // host counts that controller on v1.
    let cgroup = |controller: &str| -> Option<std::path::PathBuf> {
        own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, names, path) = (f.next()?, f.next()?, f.next()?);
            if !names.split(',').any(|c| c == controller) {
                return None;
            }
            let dir = std::path::Path::new("/sys/fs/cgroup")
                .join(names)
                .join(path.trim_start_matches('/'));
            dir.exists().then_some(dir)
        })
    };
    assert!(metrics.contains("bg"), "{metrics}");
    match cgroup("memory") {
        // A v1 memory controller: containerd's v1 metrics.
        Some(mem) => {
            let file = |name: &str| {
                std::fs::read_to_string(mem.join(name))
                    .unwrap()
                    .trim()
                    .to_string()
            };
            assert_eq!(metric("memory.limit_in_bytes"), file("memory.limit_in_bytes"));
            assert_ne!(metric("memory.usage_in_bytes"), "0");
            let pids = cgroup("pids").expect("a pids controller beside memory");
            let current = std::fs::read_to_string(pids.join("pids.current")).unwrap();
            assert_eq!(metric("pids.current"), current.trim());
            assert_eq!(metric("pids.current"), "1", "sleep alone");
            assert_ne!(metric("cpuacct.usage"), "0");
        }
        // The unified hierarchy: containerd's v2 metrics.
        None => {
            assert_eq!(metric("pids.current"), "1", "sleep alone");
            assert_ne!(metric("memory.usage"), "0");
        }
    }
    let json = d.ctr(&["task", "metrics", "--format", "json", "bg"]).ok();
    assert!(json.contains("\"pids\""), "{json}");
    let err = d.ctr(&["task", "metrics", "no-such-task"]).fails();
    assert!(err.contains("not found") || err.contains("no metrics"), "{err}");
    let r = d.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo from-exec; exit 4",
    ]);
    assert_eq!(r.out.status.code(), Some(4));
    assert_eq!(r.stdout(), "from-exec\n");
    let err = d.ctr(&["task", "rm", "bg"]).fails();
    assert!(err.contains("running"), "{err}");
    d.ctr(&["task", "kill", "-s", "SIGKILL", "bg"]).ok();
    molde_tests::eventually(10, "the task to stop", || {
        d.ctr(&["task", "ls"]).stdout().contains("STOPPED")
    });
    d.ctr(&["task", "rm", "bg"]).ok();
    d.ctr(&["containers", "rm", "bg"]).ok();
    assert!(d.ctr(&["task", "ls", "-q"]).ok().trim().is_empty());
}

#[test]
fn ctr_events_show_container_and_task_lifecycles() {
    let d = Daemon::start();
    let tar = d.dir.path().join("busybox.tar");
    let script = molde_tests::base_image_script();
    assert!(
        std::process::Command::new("python3")
            .arg(script)
            .arg(&tar)
            .status()
            .unwrap()
            .success()
    );
    d.molde(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
    let events = std::process::Command::new(molde_tests::require("ctr"))
        .arg("--address")
        .arg(&d.sock)
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    d.ctr(&["run", "--rm", "localhost/molde/busybox:latest", "evt", "true"])
        .ok();
    d.molde(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--name",
        "evt2",
        "localhost/molde/busybox",
        "true",
    ])
    .ok();
    std::thread::sleep(std::time::Duration::from_millis(800));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(events.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = String::from_utf8_lossy(&events.wait_with_output().unwrap().stdout).into_owned();
    for topic in [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ] {
        assert!(out.contains(topic), "ctr events shows {topic}:\n{out}");
    }
    assert!(
        out.contains(r#""id":"evt2""#) || out.contains(r#""container_id":"evt2""#),
        "{out}"
    );
}
