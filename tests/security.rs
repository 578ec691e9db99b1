//! What an ordinary container may not do, and what it asked for: the default
//! seccomp allow-list, the device cgroup, supplementary groups and published
//! ports, through `molde run` (CRI's side is in tests/cri.rs).

use molde_tests::Daemon;

const IMAGE: &str = "localhost/molde/busybox";

fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

/// The probe's lines as (check, result).
fn results(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn probe_mount() -> String {
    format!("{}:/probe:ro", molde_tests::probe().display())
}

#[test]
fn the_default_seccomp_profile_refuses_what_it_does_not_list() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "-v",
            &probe_mount(),
            IMAGE,
            "/probe",
            "keyctl",
            "add_key",
            "unshare-user",
            "io_uring_setup",
            "sys1000",
            "clone3",
            "clone-newuser",
            "fork",
            "threads",
        ])
        .ok();
    let got = results(&out);
    let want = [
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("unshare-user", "EPERM"),
        ("io_uring_setup", "EPERM"),
        // A number no kernel has is refused by the filter, not answered ENOSYS by the kernel.
        ("sys1000", "EPERM"),
        // clone3 says it does not exist, so libc falls back to clone...
        ("clone3", "ENOSYS"),
        // clone makes processes, not namespaces.
        ("clone-newuser", "EPERM"),
        ("fork", "ok"),
        // ...and threads still start.
        ("threads", "ok"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(got, want, "{out}");
}

#[test]
fn ordinary_work_runs_under_the_default_profile() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "-v",
            &probe_mount(),
            IMAGE,
            "sh",
            "-c",
            "echo piped | cat; \
             ping -c 1 -W 5 127.0.0.1 >/dev/null && echo ping-ok; \
             /probe dns-server & \
             for i in 1 2 3 4 5 6 7 8 9 10; do nslookup molde.test 127.0.0.1 2>&1 | grep -q 10.1.2.3 && break; sleep 0.3; done; \
             nslookup molde.test 127.0.0.1; kill %1",
        ])
        .ok();
    assert!(out.contains("piped\n"), "{out}");
    assert!(out.contains("ping-ok"), "{out}");
    assert!(out.contains("10.1.2.3"), "DNS lookups work: {out}");
}

#[test]
fn security_opt_seccomp_unconfined_and_a_profile_file() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            "-v",
            &probe_mount(),
            IMAGE,
            "sh",
            "-c",
            "grep Seccomp: /proc/self/status; /probe sys1000",
        ])
        .ok();
    assert!(out.contains("Seccomp:\t0"), "{out}");
    assert!(
        out.contains("sys1000 ENOSYS"),
        "the kernel answers, no filter: {out}"
    );

    // A profile of the user's: everything but mkdir.
    let profile = d.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let r = d.molde(&[
        "run",
        "--rm",
        "--security-opt",
        &format!("seccomp={}", profile.display()),
        IMAGE,
        "sh",
        "-c",
        "touch /tmp/file && echo touched; mkdir /tmp/dir",
    ]);
    assert_ne!(r.out.status.code(), Some(0));
    assert!(r.stdout().contains("touched"), "{}", r.describe());
    assert!(r.stderr().contains("Operation not permitted"), "{}", r.describe());

    let bad = d.molde(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=/nonexistent.json",
        IMAGE,
        "true",
    ]);
    assert!(!bad.out.status.success());
    assert!(bad.stderr().contains("/nonexistent.json"), "{}", bad.describe());
    let bad = d.molde(&["run", "--rm", "--security-opt", "apparmor=x", IMAGE, "true"]);
    assert!(bad.stderr().contains("apparmor=x"), "{}", bad.describe());
}

#[test]
fn devices_outside_the_default_list_cannot_be_used() {
    let d = daemon_with_busybox();
    // The kernel log: the node can be made, not written.
    let r = d.molde(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "mknod /tmp/kmsg c 1 11 && echo made; echo molde-test-line > /tmp/kmsg && echo wrote",
    ]);
    assert!(r.stdout().contains("made"), "{}", r.describe());
    assert!(!r.stdout().contains("wrote"), "{}", r.describe());
    assert!(r.stderr().contains("Operation not permitted"), "{}", r.describe());
    // kvm (10:232): not even opened.
    let r = d.molde(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "mknod /tmp/kvm c 10 232 && cat /tmp/kvm",
    ]);
    assert!(r.stderr().contains("Operation not permitted"), "{}", r.describe());
    // The defaults still work.
    let out = d
        .molde(&[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok",
        ])
        .ok();
    assert!(out.contains("3\n") && out.contains("null-ok"), "{out}");
}

#[test]
fn a_device_asked_for_read_only_is_not_writable() {
    let d = daemon_with_busybox();
    let r = d.molde(&[
        "run",
        "--rm",
        "--device",
        "/dev/fuse:/dev/fuse:r",
        IMAGE,
        "sh",
        "-c",
        "ls -l /dev/fuse; true < /dev/fuse && echo read-ok; true > /dev/fuse && echo write-ok",
    ]);
    assert!(r.stdout().contains("read-ok"), "{}", r.describe());
    assert!(!r.stdout().contains("write-ok"), "{}", r.describe());
    assert!(r.stderr().contains("Operation not permitted"), "{}", r.describe());
    // Asked for with every permission, it opens for writing.
    let out = d
        .molde(&[
            "run",
            "--rm",
            "--device",
            "/dev/fuse",
            IMAGE,
            "sh",
            "-c",
            "true > /dev/fuse && echo write-ok",
        ])
        .ok();
    assert!(out.contains("write-ok"), "{out}");
    let bad = d.molde(&["run", "--rm", "--device", "/dev/fuse:/dev/fuse:rx", IMAGE, "true"]);
    assert!(bad.stderr().contains("/dev/fuse"), "{}", bad.describe());
}

#[test]
fn a_privileged_container_sees_the_hosts_devices() {
    let d = daemon_with_busybox();
    let out = d
        .molde(&["run", "--rm", "--privileged", IMAGE, "ls", "/dev"])
        .ok();
    for host in ["kmsg", "fuse", "full"] {
        if std::path::Path::new("/dev").join(host).exists() {
            assert!(out.lines().any(|l| l == host), "{host} in {out}");
        }
    }
    let plain = d.molde(&["run", "--rm", IMAGE, "ls", "/dev"]).ok();
    assert!(!plain.lines().any(|l| l == "kmsg"), "{plain}");
}

#[test]
fn a_privileged_container_has_sys_writable_as_dockers_has() {
    let d = daemon_with_busybox();
    let sys = |args: &[&str]| {
        let mut cmd = vec!["run", "--rm"];
        cmd.extend_from_slice(args);
        cmd.extend_from_slice(&[IMAGE, "sh", "-c", "grep ' /sys ' /proc/mounts; grep -q ' /proc/timer_list ' /proc/mounts && echo timer_list-masked; true"]);
        d.molde(&cmd).ok()
    };
    let plain = sys(&[]);
    assert!(plain.contains(" ro,") || plain.contains(" ro "), "{plain}");
    assert!(plain.contains("timer_list-masked"), "{plain}");
    let privileged = sys(&["--privileged"]);
    assert!(
        privileged.contains(" rw,") || privileged.contains(" rw "),
        "{privileged}"
    );
    assert!(!privileged.contains("timer_list-masked"), "{privileged}");
}

fn groups_of(d: &Daemon, args: &[&str]) -> Vec<u32> {
    let mut cmd = vec!["run", "--rm"];
    cmd.extend_from_slice(args);
    cmd.extend_from_slice(&[IMAGE, "grep", "^Groups:", "/proc/self/status"]);
    let out = d.molde(&cmd).ok();
    out.trim_start_matches("Groups:")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect()
}

#[test]
fn the_process_group_is_among_its_supplementary_groups() {
    let d = daemon_with_busybox();
    assert_eq!(groups_of(&d, &["-u", "1000:1000"]), vec![1000]);
    assert_eq!(
        groups_of(
            &d,
            &["-u", "1000:1001", "--group-add", "10", "--group-add", "1234"]
        ),
        vec![10, 1001, 1234]
    );
    assert_eq!(groups_of(&d, &["--group-add", "10"]), vec![0, 10]);
    assert_eq!(groups_of(&d, &["--group-add", "nogroup"]), vec![0, 65534]);
    let bad = d.molde(&["run", "--rm", "--group-add", "nosuchgroup", IMAGE, "true"]);
    assert!(bad.stderr().contains("nosuchgroup"), "{}", bad.describe());
}

#[test]
fn devices_are_controlled_on_a_pure_cgroup_v2_host_too() {
    // cgroup v2 has no devices controller: the rules become a BPF program
    // attached to the container's cgroup.
    let d = Daemon::start_with_cgroup_v2_view();
    d.load_busybox();
    let r = d.molde(&[
        "run",
        "--rm",
        "--device",
        "/dev/fuse:/dev/fuse:r",
        IMAGE,
        "sh",
        "-c",
        "mknod /tmp/kmsg c 1 11 && echo made; echo molde-test-line > /tmp/kmsg && echo wrote; \
         true < /dev/fuse && echo read-ok; true > /dev/fuse && echo write-ok; \
         echo x > /dev/null && echo null-ok",
    ]);
    let out = r.stdout();
    assert!(
        out.contains("made") && out.contains("read-ok") && out.contains("null-ok"),
        "{}",
        r.describe()
    );
    assert!(
        !out.contains("wrote") && !out.contains("write-ok"),
        "{}",
        r.describe()
    );
}

#[test]
fn a_published_port_a_host_process_or_another_container_has_fails_the_run() {
    use std::io::{Read, Write};
    let d = daemon_with_busybox();
    // A host service listening on the port.
    let port = molde_tests::registry::free_port_outside_ephemeral();
    let service = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let publish = format!("127.0.0.1:{port}:80");
    let r = d.molde(&["run", "-d", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80"]);
    let err = r.fails();
    assert!(
        err.contains(&format!("127.0.0.1:{port}/tcp")),
        "names the port: {err}"
    );
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "names the holder: {err}"
    );
    // The host service still answers.
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"hello").unwrap();
    let (mut conn, _) = service.accept().unwrap();
    let mut got = [0u8; 5];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    drop((client, conn, service));
    // No container was left behind by the failed run.
    assert_eq!(d.molde(&["ps", "-a", "-q"]).ok().trim(), "");

    // Two containers on one host port: the second fails, naming the first.
    let port = molde_tests::registry::free_port_outside_ephemeral();
    let publish = format!("127.0.0.1:{port}:80");
    d.molde(&[
        "run", "-d", "--name", "first", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80",
    ])
    .ok();
    let err = d
        .molde(&[
            "run",
            "-d",
            "--name",
            "second",
            "-p",
            &format!("{port}:80"),
            IMAGE,
            "httpd",
            "-f",
            "-p",
            "80",
        ])
        .fails();
    assert!(
        err.contains(&format!("{port}/tcp")) && err.contains("first"),
        "{err}"
    );
    // Nothing else on the host can take it meanwhile.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    // Once the first is gone, the port is free again.
    d.molde(&["rm", "-f", "first"]).ok();
    d.molde(&[
        "run", "-d", "--name", "third", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80",
    ])
    .ok();
    d.molde(&["rm", "-f", "third"]).ok();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn a_restarted_molded_holds_the_ports_of_the_containers_it_finds() {
    let mut d = daemon_with_busybox();
    let port = molde_tests::registry::free_port_outside_ephemeral();
    let publish = format!("127.0.0.1:{port}:80");
    d.molde(&[
        "run", "-d", "--name", "kept", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80",
    ])
    .ok();
    d.restart();
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    let err = d
        .molde(&["run", "-d", "-p", &publish, IMAGE, "httpd", "-f", "-p", "80"])
        .fails();
    assert!(err.contains("kept"), "{err}");
    d.molde(&["rm", "-f", "kept"]).ok();
}
