//! `molde run`: real containers from a busybox-static image, each in its own
//! molde-shim on youki's libcontainer. (Root, as the daemon runs.)

use molde_tests::Daemon;

/// A daemon with the busybox base image loaded (built offline by deploy/make-base-image.py).
fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    let tar = d.dir.path().join("busybox.tar");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-base-image.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.molde(&["load", "-q", "-i", tar.to_str().unwrap()]).ok();
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
    let err = d.molde(&["run", "--rm", "no/such-image", "true"]).fails();
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
