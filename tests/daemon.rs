//! molded as a process: socket, signals, config, split mode, and the CLI's
//! message when no daemon runs.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use molde_tests::{Daemon, bin, files_under, sha256};

#[test]
fn socket_is_0660_and_a_second_daemon_is_refused() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(bin("molded"))
        .args(["--root", other.path().join("r").to_str().unwrap()])
        .args(["--state", other.path().join("s").to_str().unwrap()])
        .args(["--address", d.sock.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another molded") && err.contains(d.sock.to_str().unwrap()),
        "{err}"
    );
    // The first daemon is unharmed.
    d.molde(&["version"]).ok();
}

#[test]
fn a_second_daemon_on_the_same_root_is_refused() {
    let d = Daemon::start();
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(bin("molded"))
        .args(["--root", d.root.to_str().unwrap()])
        .args(["--state", other.path().join("s").to_str().unwrap()])
        .args(["--address", other.path().join("m.sock").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another molded using root"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_restart_keeps_content() {
    let mut d = Daemon::start();
    let digest = d
        .molde_stdin(
            &["content", "ingest", "r", "-l", "containerd.io/gc.root=1"],
            b"kept",
        )
        .ok();
    let status = d.terminate();
    assert!(status.success(), "exit status {status}\n{}", d.log_text());
    assert!(!d.sock.exists(), "the socket is removed on shutdown");
    assert!(d.log_text().contains("SIGTERM"));
    let err = d.molde(&["version"]).fails();
    assert!(
        err.contains("is molded running?") && err.contains("start it with `molded`"),
        "{err}"
    );
    d.restart();
    assert_eq!(d.molde(&["content", "get", digest.trim()]).out.stdout, b"kept");
}

#[test]
fn stale_socket_after_kill9_is_replaced() {
    let mut d = Daemon::start();
    d.kill9();
    assert!(d.sock.exists(), "a killed daemon leaves its socket behind");
    d.restart();
    d.molde(&["version"]).ok();
}

#[test]
fn cli_says_when_molded_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = Command::new(bin("molde"))
        .env("MOLDE_ADDRESS", &sock)
        .args(["content", "ls"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(sock.to_str().unwrap()) && err.contains("is molded running?"),
        "{err}"
    );
}

#[test]
fn config_file_sets_root_and_address() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("from-config.sock");
    let root = dir.path().join("from-config-root");
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = {:?}\nstate = {:?}\naddress = {:?}\n",
            root,
            dir.path().join("state"),
            sock
        ),
    )
    .unwrap();
    let mut child = Command::new(bin("molded"))
        .arg("--config")
        .arg(&cfg)
        .spawn()
        .unwrap();
    molde_tests::eventually(20, "molded to serve the configured socket", || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let out = Command::new(bin("molde"))
        .env("MOLDE_ADDRESS", &sock)
        .arg("info")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.contains(&format!("root={}", root.join("content").display())),
        "{info}"
    );
    assert!(root.join("meta.redb").is_file());

    std::fs::write(&cfg, "no_such_key = 1\n").unwrap();
    let out = Command::new(bin("molded"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

#[test]
fn split_mode_content_service_reached_by_address() {
    let content = Daemon::start_with(&["--service", "content"]);
    let front = Daemon::start_with(&["--remote", &format!("content=unix://{}", content.sock.display())]);
    let data = b"stored through the front daemon";
    let digest = front.molde_stdin(&["content", "ingest", "split"], data).ok();
    assert_eq!(digest.trim(), sha256(data));
    // The bytes live in the content daemon's root.
    assert!(
        files_under(&content.root.join("content/blobs"))
            .iter()
            .any(|p| p.ends_with(&digest.trim()[7..]))
    );
    assert!(
        !front.root.join("content").exists(),
        "the front daemon keeps no blobs"
    );
    // Streams, unary calls and containerd's client all pass through.
    assert_eq!(front.molde(&["content", "get", digest.trim()]).out.stdout, data);
    assert!(front.ctr(&["content", "ls"]).ok().contains(digest.trim()));
    front.ctr(&["leases", "create", "--id", "l1"]).ok();
    assert!(content.ctr(&["leases", "ls", "-q"]).ok().contains("l1"));
    let info = front.molde(&["info"]).ok();
    assert!(info.contains("remote=unix://"), "{info}");

    // With the content daemon gone, the front says which service is unreachable.
    drop(content);
    let err = front.molde(&["content", "ls"]).fails();
    assert!(
        err.contains("containerd.services.content.v1.Content") && err.contains("unreachable"),
        "{err}"
    );
}

/// A namespace that is not a valid name never turns into `default`: the CLI
/// refuses it before sending anything, and molded refuses a request whose
/// header holds one.
#[test]
fn an_invalid_namespace_is_refused_never_taken_as_default() {
    let d = Daemon::start();
    d.load_busybox();
    let image = "localhost/molde/busybox:latest";
    for bad in ["staging\n", "", "a/b", "ünï"] {
        let err = d.molde(&["-n", bad, "rmi", image]).fails();
        assert!(err.contains("namespace"), "{bad:?}: {err}");
        assert!(
            d.molde(&["images", "-q"]).ok().contains(image),
            "{bad:?} untagged it in default"
        );
    }
    // Refused before any request: the same error with no daemon at all.
    let mut c = std::process::Command::new(molde_tests::bin("molde"));
    c.env("MOLDE_ADDRESS", d.dir.path().join("nothing.sock"))
        .env("MOLDE_NAMESPACE", "staging\n")
        .args(["images"]);
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("MOLDE_NAMESPACE"), "{err}");
    assert!(!err.contains("is molded running"), "{err}");

    // A client that sends a header molded cannot take gets InvalidArgument.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use molde_api::containerd::services::images::v1::{DeleteImageRequest, images_client::ImagesClient};
        let ch = d.channel().await;
        for bad in ["staging name", "-x", ""] {
            let mut r = tonic::Request::new(DeleteImageRequest {
                name: image.into(),
                sync: false,
            });
            r.metadata_mut()
                .insert(molde_api::NAMESPACE_HEADER, bad.parse().unwrap());
            let err = ImagesClient::new(ch.clone()).delete(r).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
        }
    });
    assert!(d.molde(&["images", "-q"]).ok().contains(image));
}

/// Runs `args` as uid/gid 65534 (another local user, not root).
fn as_nobody(args: &[&str]) -> std::process::Output {
    Command::new(molde_tests::require("setpriv"))
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn what_molded_writes_is_readable_by_root_only() {
    let mut d = Daemon::prepare(&[]);
    // A tree another user may walk: only molded's own modes keep them out.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A socket directory molded creates itself.
    d.sock = d.dir.path().join("run/molde/molde.sock");
    d.spawn();
    d.load_busybox();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "secretive",
        "-e",
        "TOKEN=hunter2",
        "-v",
        "vol:/data",
        "localhost/molde/busybox",
        "sh",
        "-c",
        "echo printed-secret; sleep 60",
    ])
    .ok();
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/molde/busybox\nRUN --mount=type=cache,target=/c echo built > /built\n",
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "localhost/built", ctx.to_str().unwrap()])
        .ok();

    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.root), 0o711);
    assert_eq!(mode(&d.state), 0o711);
    assert_eq!(mode(d.sock.parent().unwrap()), 0o711);
    assert_eq!(mode(&d.sock), 0o660);
    for top in [&d.root, &d.state] {
        for e in std::fs::read_dir(top).unwrap() {
            let p = e.unwrap().path();
            assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
        }
    }

    // What another user would go for, by the paths molded uses.
    let bundle = d.state.join("runtime/default/secretive");
    let blob = files_under(&d.root.join("content/blobs"))[0].clone();
    let targets = [
        bundle.join("config.json"),
        bundle.join("log.json"),
        bundle.join("rootfs/etc/passwd"),
        d.root.join("meta.redb"),
        blob,
        d.root.join("snapshots/overlayfs"),
        d.root.join("build-cache"),
        d.root.join("build-cache-mounts"),
        d.root.join("volumes/vol"),
    ];
    for t in &targets {
        assert!(t.exists(), "{} exists", t.display());
        let cmd = if t.is_dir() { "ls" } else { "cat" };
        let out = as_nobody(&[cmd, t.to_str().unwrap()]);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "another user reads {}: {}{}",
            t.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = as_nobody(&["ls", d.root.to_str().unwrap()]);
    assert!(!out.status.success(), "another user lists the root");
    d.molde(&["rm", "-f", "secretive"]).ok();
}

/// A root on a small tmpfs, filled: writes fail with the disk's error, and
/// once space is back the next tag, pull, run and build work without a
/// restart, with nothing committed before lost.
#[test]
fn a_full_disk_fails_writes_and_molded_recovers_once_space_is_back() {
    use std::io::Write;
    let mut d = Daemon::prepare(&[]);
    std::fs::create_dir_all(&d.root).unwrap();
    let root = d.root.to_str().unwrap().to_string();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs", &root])
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").args(["-l", &self.0]).status();
        }
    }
    let _unmount = Unmount(root.clone());
    d.spawn();
    d.load_busybox();
    let image = "localhost/molde/busybox";
    let reg = molde_tests::registry::Registry::start();
    let remote = format!("{}/full/busybox:1", reg.host);
    d.molde(&["tag", image, &remote]).ok();
    d.molde(&["push", &remote]).ok();

    // Fill the disk.
    let filler = d.root.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..4096]).is_ok() {}
    drop(f);
    // Metadata writes until one meets the full disk.
    let mut failure = None;
    for i in 0..400 {
        let r = d.molde(&["tag", image, &format!("localhost/full/t{i}:1")]);
        if !r.out.status.success() {
            failure = Some(r.stderr());
            break;
        }
    }
    let failure = failure.expect("a tag fails on a full disk");
    assert!(failure.contains("No space left on device"), "{failure}");
    let r = d.molde(&["run", "--rm", image, "true"]);
    assert!(!r.out.status.success(), "a run on a full disk fails");

    // Space back: everything works, no restart.
    std::fs::remove_file(&filler).unwrap();
    d.molde(&["tag", image, "localhost/full/after:1"]).ok();
    assert!(d.molde(&["images", "-q"]).ok().lines().count() >= 2);
    d.molde(&["rmi", &remote]).ok();
    d.molde(&["pull", "-q", &remote]).ok();
    assert_eq!(d.molde(&["run", "--rm", &remote, "echo", "ran"]).ok(), "ran\n");
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {image}\nRUN echo built > /built\n"),
    )
    .unwrap();
    d.molde(&[
        "build",
        "-q",
        "-t",
        "localhost/full/built:1",
        ctx.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        d.molde(&["run", "--rm", "localhost/full/built:1", "cat", "/built"])
            .ok(),
        "built\n"
    );
    // What was committed before the disk filled is all there.
    assert!(d.molde(&["images"]).ok().contains("localhost/full/t0"));
    assert!(
        d.log_text().contains("reopened"),
        "the database was reopened in place"
    );
}

/// Runs molded in `dir` with `args` until its socket answers `molde
/// content ls` (traffic for the log), then stops it; its stderr.
fn molded_log(dir: &std::path::Path, args: &[&str]) -> String {
    let sock = dir.join("molde.sock");
    let child = Command::new(bin("molded"))
        .env_remove("RUST_LOG")
        .args(["--root", dir.join("root").to_str().unwrap()])
        .args(["--state", dir.join("state").to_str().unwrap()])
        .args(["--address", sock.to_str().unwrap()])
        .args(["--service", "content"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = Command::new(bin("molde"))
        .env("MOLDE_ADDRESS", &sock)
        .args(["content", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn log_levels_and_formats_are_molde_s_own_and_dependencies_stay_quiet() {
    let dir = tempfile::tempdir().unwrap();
    // debug in JSON: one object per line, molde's debug lines there, and
    // none from the HTTP/2 and gRPC libraries underneath.
    let log = molded_log(dir.path(), &["--log-level", "debug", "--log-format", "json"]);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["target"] == "molded"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["target"].as_str().unwrap_or("").starts_with("molde")),
        "{log}"
    );
    for l in &lines {
        let target = l["target"].as_str().unwrap_or("");
        assert!(
            target.starts_with("molde") || l["level"] == "WARN" || l["level"] == "ERROR",
            "a dependency logs below warn: {l}"
        );
    }
    // warn in text: nothing of info.
    let quiet = molded_log(dir.path(), &["--log-level", "warn"]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    // The same from the config file's [debug] section.
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[debug]\nlevel = \"warn\"\n").unwrap();
    let quiet = molded_log(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert!(!quiet.contains(" INFO "), "{quiet}");
    // A level that is not one: said once, naming it, without a backtrace.
    let out = Command::new(bin("molded"))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .args(["--root", dir.path().join("root").to_str().unwrap()])
        .args(["--log-level", "chatty"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chatty"), "{err}");
    std::fs::write(&cfg, "[debug]\nlevel = \"chatty\"\n").unwrap();
    let out = Command::new(bin("molded"))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("chatty").count(), 1, "said once: {err}");
    assert!(
        err.contains("[debug] level") && err.contains("config.toml"),
        "{err}"
    );
    assert!(
        !err.contains("stack backtrace") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn health_is_served_on_every_socket_and_turns_not_serving_at_shutdown() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut d = Daemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let check = |addr: &std::path::Path, service: &str| {
        rt.block_on(async {
            let ch = molde_api::client::connect(&molde_api::client::Address::Unix(addr.to_path_buf()))
                .await
                .unwrap();
            HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map(|r| r.into_inner().status)
        })
    };
    let serving = ServingStatus::Serving as i32;
    let cri = d.dir.path().join("cri.sock");
    // Serving once every socket is: wait for the CRI's (it serves last).
    let mut whole = 0;
    for _ in 0..100 {
        whole = check(&d.sock, "").unwrap();
        if whole == serving {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(whole, serving);
    for s in ["content", "snapshotter", "transfer", "runtime", "builder", "cri"] {
        assert_eq!(check(&d.sock, s).unwrap(), serving, "{s}");
    }
    assert_eq!(check(&cri, "runtime.v1.RuntimeService").unwrap(), serving);
    assert_eq!(check(&cri, "").unwrap(), serving);
    assert_eq!(
        check(&d.sock, "nonsense").unwrap_err().code(),
        tonic::Code::NotFound
    );
    // molde info says so.
    let info = d.molde(&["info"]).ok();
    assert!(
        info.contains("Health:") && info.contains("content      SERVING"),
        "{info}"
    );
    // A watcher sees NOT_SERVING when a shutdown begins.
    let sock = d.sock.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async move {
            let ch = molde_api::client::connect(&molde_api::client::Address::Unix(sock))
                .await
                .unwrap();
            let mut s = HealthClient::new(ch)
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            let mut seen = Vec::new();
            while let Ok(Some(m)) = s.message().await {
                seen.push(m.status);
                if seen.len() == 1 {
                    tx.send(()).unwrap();
                }
            }
            seen
        })
    });
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    d.terminate();
    let seen = watcher.join().unwrap();
    assert_eq!(seen.first(), Some(&serving), "{seen:?}");
    assert!(seen.contains(&(ServingStatus::NotServing as i32)), "{seen:?}");
}

#[test]
fn config_default_and_check_tell_the_truth_about_the_shipped_files() {
    let molded = |args: &[&str]| Command::new(bin("molded")).args(args).output().unwrap();
    let deploy = molde_tests::tests_dir().join("../deploy");
    let mut files = vec![deploy.join("config.example.toml")];
    for e in std::fs::read_dir(deploy.join("split")).unwrap() {
        files.push(e.unwrap().path());
    }
    for f in &files {
        let out = molded(&["config", "check", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The defaults printed are a file molded reads back.
    let out = molded(&["config", "default"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[registry]\nconfig_path = \"/etc/molde/certs.d\""),
        "{text}"
    );
    assert!(!text.contains("hosts_dir"), "one key per setting: {text}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("defaults.toml");
    std::fs::write(&f, &text).unwrap();
    assert!(molded(&["config", "check", f.to_str().unwrap()]).status.success());
    // An unknown key: refused, naming it and the file.
    std::fs::write(&f, "[cri]\nadress = \"/run/x.sock\"\n").unwrap();
    let out = molded(&["config", "check", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("adress") && err.contains("defaults.toml"), "{err}");
}

#[test]
fn the_old_hosts_dir_key_still_works_and_says_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, "[transfer]\nhosts_dir = \"/etc/molde/old-certs.d\"\n").unwrap();
    let log = molded_log(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert!(
        log.contains("WARN")
            && log.contains("[transfer] hosts_dir is the old name of [registry] config_path"),
        "{log}"
    );
}
