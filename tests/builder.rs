//! `molde build`: Dockerfiles built by molded's builder into images that
//! `molde run` runs. (Root, as the daemon runs.)

use std::os::unix::process::CommandExt;
use std::path::Path;

use molde_tests::Daemon;

fn daemon_with_busybox() -> Daemon {
    let d = Daemon::start();
    d.load_busybox();
    d
}

/// A context directory with these files (path, contents).
fn context(d: &Daemon, name: &str, files: &[(&str, &str)]) -> String {
    let dir = d.dir.path().join(name);
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir.to_string_lossy().into_owned()
}

fn leftovers(d: &Daemon) -> (String, Vec<String>) {
    let ps = d.molde(&["ps", "-a", "-q"]).ok();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(d.state.to_str().unwrap()) && !l.contains("/netns/"))
        .map(str::to_string)
        .collect();
    (ps, mounts)
}

/// How many steps a build's plain progress shows as cached.
fn cached(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" CACHED ")).count()
}

#[test]
fn a_multi_stage_build_runs_as_its_dockerfile_says() {
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "app",
        &[
            (
                "Dockerfile",
                "# syntax=docker/dockerfile:1\n\
                 ARG BASE=localhost/molde/busybox\n\
                 FROM $BASE AS builder\n\
                 ARG GREETING=hello\n\
                 WORKDIR /src\n\
                 COPY hello.txt .\n\
                 RUN echo \"$GREETING from $(cat hello.txt)\" > out.txt \\\n\
                 \x20   && mkdir -p /out && cp out.txt /out/\n\
                 \n\
                 FROM localhost/molde/busybox\n\
                 ENV MODE=release\n\
                 LABEL org.example.name=app\n\
                 COPY --from=builder /out/out.txt /app/\n\
                 COPY --chmod=700 dir/ /app/dir/\n\
                 WORKDIR /app\n\
                 USER 65534\n\
                 EXPOSE 8080\n\
                 CMD [\"sh\", \"-c\", \"echo $MODE; cat out.txt; ls dir; id -u; stat -c %a dir/a\"]\n",
            ),
            ("hello.txt", "the context\n"),
            ("dir/a", "a\n"),
            ("dir/b", "b\n"),
            ("dir/skip.log", "ignored\n"),
            (".dockerignore", "**/*.log\n"),
        ],
    );
    let out = d.molde(&[
        "build",
        "-t",
        "localhost/test/app:1",
        "--build-arg",
        "GREETING=hi",
        &ctx,
    ]);
    let log = out.stderr();
    assert_eq!(out.out.status.code(), Some(0), "{log}");
    assert!(log.contains("RUN echo"), "steps are shown: {log}");
    assert!(log.contains("tagged localhost/test/app:1"), "{log}");

    let run = d.run_image("localhost/test/app:1", &[]);
    assert_eq!(run, "release\nhi from the context\na\nb\n65534\n700\n");

    let inspect: serde_json::Value = d.inspect("localhost/test/app:1");
    let text = inspect.to_string();
    for want in ["8080/tcp", "org.example.name", "MODE=release", "/app"] {
        assert!(text.contains(want), "{want} in {text}");
    }
    let (ps, mounts) = leftovers(&d);
    assert!(ps.trim().is_empty(), "no build container is left: {ps}");
    assert!(mounts.is_empty(), "no build mount is left: {mounts:?}");
}

#[test]
fn bad_builds_fail_clearly_and_leave_nothing() {
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "failing",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\nRUN echo step-output && exit 3\nRUN echo never\n",
        )],
    );
    let err = d.molde(&["build", "-t", "localhost/test/bad", &ctx]).fails();
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("exit code 3"), "{err}");
    assert!(err.contains("step-output"), "the step's output is shown: {err}");
    assert!(!err.contains("never"), "{err}");

    let ctx = context(
        &d,
        "syntax",
        &[("Dockerfile", "FROM localhost/molde/busybox\nFROBNICATE all\n")],
    );
    let err = d.molde(&["build", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:2: unknown instruction: FROBNICATE"),
        "{err}"
    );

    let ctx = context(
        &d,
        "outside",
        &[("Dockerfile", "FROM localhost/molde/busybox\nCOPY ../outside /x\n")],
    );
    let err = d.molde(&["build", &ctx]).fails();
    assert!(err.contains("outside the build context"), "{err}");

    let ctx = context(
        &d,
        "cycle",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox AS a\nCOPY --from=b /x /x\nFROM localhost/molde/busybox AS b\nCOPY --from=a /y /y\n",
        )],
    );
    let err = d.molde(&["build", &ctx]).fails();
    assert!(err.contains("cycle"), "{err}");

    let ctx = context(
        &d,
        "missing",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\nCOPY --from=4 /x /x\n",
        )],
    );
    let err = d.molde(&["build", &ctx]).fails();
    assert!(err.contains("there is no stage 4"), "{err}");

    let ctx = context(
        &d,
        "badmount",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\nRUN --mount=type=nfs,target=/x true\n",
        )],
    );
    let err = d.molde(&["build", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:2") && err.contains("unknown type \"nfs\""),
        "{err}"
    );

    let ctx = context(&d, "noimage", &[("Dockerfile", "FROM localhost/nothing/here\n")]);
    let err = d.molde(&["build", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:1") && err.contains("localhost/nothing/here"),
        "{err}"
    );

    let (ps, mounts) = leftovers(&d);
    assert!(ps.trim().is_empty(), "no build container is left: {ps}");
    assert!(mounts.is_empty(), "no build mount is left: {mounts:?}");
    assert!(
        d.molde(&["images", "-q"]).ok().lines().count() == 1,
        "no image was made by a failed build"
    );
}

#[test]
fn the_cache_reuses_unchanged_steps_across_restarts() {
    let mut d = daemon_with_busybox();
    let ctx = context(
        &d,
        "cached",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\n\
                 COPY a.txt /a.txt\n\
                 RUN echo ran-step-one && cat /a.txt > /copy.txt\n\
                 COPY b.txt /b.txt\n\
                 RUN echo ran-step-two\n",
            ),
            ("a.txt", "first\n"),
            ("b.txt", "b\n"),
        ],
    );
    let build = |d: &Daemon, extra: &[&str]| {
        let mut args = vec!["build", "-t", "localhost/test/cached"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let r = d.molde(&args);
        assert_eq!(r.out.status.code(), Some(0), "{}", r.stderr());
        r.stderr()
    };
    // A step's output line (the instruction lines name the same words).
    let ran = |log: &str, what: &str| log.lines().any(|l| l == what);

    let log = build(&d, &[]);
    assert!(ran(&log, "ran-step-one") && ran(&log, "ran-step-two"), "{log}");
    assert_eq!(cached(&log), 0, "{log}");

    let log = build(&d, &[]);
    assert_eq!(cached(&log), 4, "an unchanged rebuild runs no step:\n{log}");
    assert!(!ran(&log, "ran-step-one") && !ran(&log, "ran-step-two"), "{log}");

    // A new modification time alone changes nothing.
    let a = Path::new(&ctx).join("a.txt");
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    assert_eq!(cached(&build(&d, &[])), 4, "touching a file keeps the cache");

    // New content in b.txt: its COPY and what follows run again, not what precedes.
    std::fs::write(Path::new(&ctx).join("b.txt"), "changed\n").unwrap();
    let log = build(&d, &[]);
    assert_eq!(cached(&log), 2, "{log}");
    assert!(ran(&log, "ran-step-two") && !ran(&log, "ran-step-one"), "{log}");

    // The cache outlives the daemon.
    d.restart();
    assert_eq!(cached(&build(&d, &[])), 4, "the cache survives a restart");

    let log = build(&d, &["--no-cache"]);
    assert_eq!(cached(&log), 0, "{log}");
    assert!(ran(&log, "ran-step-one"), "{log}");

    let out = d.run_image("localhost/test/cached", &["cat", "/copy.txt", "/b.txt"]);
    assert_eq!(out, "first\nchanged\n");
}

#[test]
fn independent_stages_run_at_once() {
    // Two stages that need nothing of each other meet through a shared cache
    // mount: each marks its arrival and waits (bounded) for the other. Run
    // one after the other, the first would give up and fail the build.
    let d = daemon_with_busybox();
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,id=meet,target=/meet touch /meet/{me} \
             && i=0; while [ ! -e /meet/{other} ]; do i=$((i+1)); [ $i -gt 300 ] && exit 7; sleep 0.1; done; \
             echo {me} > /{me}\n"
        )
    };
    let text = format!(
        "FROM localhost/molde/busybox AS left\n{}\
         FROM localhost/molde/busybox AS right\n{}\
         FROM localhost/molde/busybox\nCOPY --from=left /left /\nCOPY --from=right /right /\nCMD [\"cat\", \"/left\", \"/right\"]\n",
        wait("left", "right"),
        wait("right", "left")
    );
    let ctx = context(&d, "parallel", &[("Dockerfile", &text)]);
    d.molde(&["build", "-q", "-t", "parallel", &ctx]).ok();
    assert_eq!(d.run_image("parallel", &[]), "left\nright\n");
}

#[test]
fn context_on_stdin_exports_compression_and_progress() {
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "stdin",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nCOPY msg.txt big.bin /\nRUN cat /msg.txt > /ran && wc -c < /big.bin >> /ran\nCMD [\"cat\", \"/ran\"]\n",
            ),
            ("msg.txt", "from a tar on stdin\n"),
        ],
    );
    // Larger than one gRPC message: the tar is streamed in pieces.
    std::fs::write(Path::new(&ctx).join("big.bin"), vec![7u8; 6 << 20]).unwrap();
    // `-`: the context is a tar the daemon receives from the client.
    let tar = std::process::Command::new("tar")
        .args(["-C", &ctx, "-cf", "-", "."])
        .output()
        .unwrap();
    assert!(tar.status.success());
    d.molde_stdin(&["build", "-q", "-t", "fromstdin", "-"], &tar.stdout)
        .ok();
    assert_eq!(d.run_image("fromstdin", &[]), "from a tar on stdin\n6291456\n");
    // An archive that would write outside the context is refused.
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escaped.tx");
    h.set_cksum();
    evil.append(&h, &b"hi"[..]).unwrap();
    let err = d
        .molde_stdin(&["build", "-q", "-"], &evil.into_inner().unwrap())
        .fails();
    assert!(err.contains("context"), "{err}");

    // zstd layers on request, and an OCI archive that skopeo reads.
    let out = d.dir.path().join("image.tar");
    let dest = format!("type=oci,dest={}", out.display());
    d.molde(&[
        "build",
        "-q",
        "--compression",
        "zstd",
        "-t",
        "zst",
        "-o",
        &dest,
        &ctx,
    ])
    .ok();
    let inspect = std::process::Command::new(molde_tests::require("skopeo"))
        .args(["inspect", "--raw", &format!("oci-archive:{}", out.display())])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(
        layers.last().unwrap()["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(d.run_image("zst", &[]), "from a tar on stdin\n6291456\n");
    // A docker-archive export of an image given no name leaves no name behind.
    let archive = d.dir.path().join("docker.tar");
    let dest = format!("type=docker,dest={}", archive.display());
    let before = d.molde(&["images", "-q"]).ok();
    d.molde(&["build", "-q", "-o", &dest, &ctx]).ok();
    let inspect = std::process::Command::new(molde_tests::require("skopeo"))
        .args(["inspect", &format!("docker-archive:{}", archive.display())])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert_eq!(
        d.molde(&["images", "-q"]).ok(),
        before,
        "no temporary name is left"
    );
    // Only the host's platform can be built.
    let err = d
        .molde(&["build", "-q", "--platform", "linux/s390x", &ctx])
        .fails();
    assert!(err.contains("linux/s390x") && err.contains("host"), "{err}");
    // The live view on a terminal redraws a tree of steps.
    let r = d.molde(&["build", "--progress", "tty", "-t", "zst2", &ctx]);
    r.ok();
    let log = r.stderr();
    assert!(
        log.contains("[+] Building") && log.contains("\x1b[") && log.contains("CACHED"),
        "{log}"
    );
}

#[test]
fn the_cache_is_pruned_by_size_and_on_demand() {
    // A cache that may hold 1 byte of layers keeps no record past a build.
    let d = Daemon::start_with_config("[builder]\ncache_max_bytes = 1\n");
    d.load_busybox();
    let ctx = context(
        &d,
        "small",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nCOPY a.txt /\nRUN echo ran > /ran\n",
            ),
            ("a.txt", "a\n"),
        ],
    );
    let build = |d: &Daemon, tag: &str| {
        let r = d.molde(&["build", "--progress", "plain", "-t", tag, &ctx]);
        r.ok();
        r.stderr()
    };
    build(&d, "small");
    molde_tests::eventually(10, "the records are pruned", || {
        std::fs::read_dir(d.root.join("build-cache")).map_or(true, |r| r.count() == 0)
    });
    assert_eq!(cached(&build(&d, "small")), 0, "nothing was kept");

    // With room, records stay; `molde builder prune` drops them, and the
    // layers only the cache held are collected.
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "big",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nCOPY a.txt /\nRUN echo ran > /ran\n",
            ),
            ("a.txt", "a\n"),
        ],
    );
    let build = |tag: &str| {
        let r = d.molde(&["build", "--progress", "plain", "-t", tag, &ctx]);
        r.ok();
        r.stderr()
    };
    build("big");
    assert_eq!(cached(&build("big")), 2, "kept");
    let blobs = |d: &Daemon| d.molde(&["content", "ls", "-q"]).ok();
    d.molde(&["rmi", "big"]).ok();
    let held = blobs(&d);
    let out = d.molde(&["builder", "prune"]).ok();
    assert!(out.contains("removed 2 cache records"), "{out}");
    molde_tests::eventually(10, "the cache's layers are collected", || {
        blobs(&d).lines().count() < held.lines().count()
    });
    assert_eq!(cached(&build("big")), 0, "pruned records are gone");
}

#[test]
fn missing_base_images_are_pulled_and_built_images_pushed() {
    let reg = molde_tests::registry::Registry::start();
    let d = daemon_with_busybox();
    let base = format!("{}/base/busybox:1", reg.host);
    d.molde(&["push", "localhost/molde/busybox", &base]).ok();
    let ctx = context(
        &d,
        "pulled",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo built-on-pulled > /m\nCMD [\"cat\", \"/m\"]\n"),
        )],
    );
    // Not here: pulled from the registry, as docker does.
    d.molde(&["inspect", &base]).fails();
    d.molde(&["build", "-q", "-t", "onpulled", &ctx]).ok();
    d.molde(&["inspect", &base]).ok();
    // --pull fetches it again even though it is here.
    d.molde(&["build", "-q", "--pull", "-t", "onpulled", &ctx]).ok();
    assert!(
        reg.log().matches("GET /v2/base/busybox/manifests/1").count() >= 2,
        "{}",
        reg.log()
    );
    assert_eq!(d.run_image("onpulled", &[]), "built-on-pulled\n");
    // And the built image goes to the registry, where skopeo reads it.
    let pushed = format!("{}/built/app:1", reg.host);
    d.molde(&["push", "onpulled", &pushed]).ok();
    let inspect = reg.skopeo(&["inspect", "--tls-verify=false", &format!("docker://{pushed}")]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn copy_link_layers_are_reused_over_a_changed_base() {
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "link",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nARG V=1\nRUN echo $V > /v\nCOPY --link app/ /app/\nCMD [\"cat\", \"/v\", \"/app/a.txt\"]\n",
            ),
            ("app/a.txt", "linked\n"),
        ],
    );
    let build = |v: &str| {
        let arg = format!("V={v}");
        let r = d.molde(&[
            "build",
            "--progress",
            "plain",
            "--build-arg",
            &arg,
            "-t",
            "link",
            &ctx,
        ]);
        r.ok();
        let log = r.stderr();
        let inspect: serde_json::Value = d.inspect("link");
        let top = inspect["RootFS"]["diff_ids"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        (log, top)
    };
    let (_, first) = build("1");
    assert_eq!(d.run_image("link", &[]), "1\nlinked\n");
    // The RUN below changed: the linked layer is the same layer, not copied again.
    let (log, second) = build("2");
    assert_eq!(first, second, "the --link layer is reused");
    assert!(
        log.lines().any(|l| l.contains("COPY --link")) && log.contains("#4 CACHED"),
        "{log}"
    );
    assert_eq!(d.run_image("link", &[]), "2\nlinked\n");
}

#[test]
fn a_build_cut_short_by_a_killed_daemon_leaves_nothing_behind() {
    let mut d = daemon_with_busybox();
    let ctx = context(
        &d,
        "killed",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nCOPY a.txt /\nRUN echo step-started && sleep 120\n",
            ),
            ("a.txt", "a\n"),
        ],
    );
    let mut build = std::process::Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &d.sock)
        .args(["build", "--progress", "plain", "-t", "killed", &ctx])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the RUN to be running, then kill molded as a crash would.
    let stderr = build.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    assert!(
        lines
            .by_ref()
            .take(50)
            .any(|l| l.is_ok_and(|l| l == "step-started")),
        "the RUN step never started"
    );
    assert!(
        !d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty(),
        "the RUN container runs"
    );
    d.kill9();
    let status = build.wait().unwrap();
    assert!(!status.success(), "the client sees the build fail");
    d.spawn();
    // The restarted daemon removes the RUN container (still running), its
    // snapshot, mounts and directories.
    molde_tests::eventually(30, "the build's container is removed", || {
        d.molde(&["ps", "-a", "-q"]).ok().trim().is_empty()
    });
    let (_, mounts) = leftovers(&d);
    assert!(mounts.is_empty(), "no build mount is left: {mounts:?}");
    let scratch = std::fs::read_dir(d.state.join("build")).map_or(0, |r| r.count());
    assert_eq!(scratch, 0, "no build directory is left");
    let snaps = d.ctr(&["snapshots", "ls"]).ok();
    assert!(!snaps.lines().any(|l| l.starts_with("build-")), "{snaps}");
    let leases = d.ctr(&["leases", "ls"]).ok();
    assert!(!leases.lines().any(|l| l.starts_with("build-")), "{leases}");
    // And building works again (the COPY layer the killed build cached is reused).
    std::fs::write(
        Path::new(&ctx).join("Dockerfile"),
        "FROM localhost/molde/busybox\nCOPY a.txt /\nRUN cat /a.txt > /b\nCMD [\"cat\", \"/b\"]\n",
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "killed", &ctx]).ok();
    assert_eq!(d.run_image("killed", &[]), "a\n");
}

#[test]
fn private_base_images_are_pulled_with_the_users_login() {
    let reg = molde_tests::registry::Registry::start_with_auth("alice", "s3cret");
    let d = daemon_with_busybox();
    let home = tempfile::tempdir().unwrap();
    let molde = |args: &[&str], stdin: &[u8]| {
        let mut c = std::process::Command::new(molde_tests::bin("molde"));
        c.env("MOLDE_ADDRESS", &d.sock)
            .env("HOME", home.path())
            .env_remove("DOCKER_CONFIG")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let base = format!("{}/private/busybox:1", reg.host);
    let login = ["login", reg.host.as_str(), "-u", "alice", "--password-stdin"];
    assert!(molde(&login, b"s3cret\n").status.success());
    let out = molde(&["push", "localhost/molde/busybox", &base], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(molde(&["logout", &reg.host], b"").status.success());
    let ctx = context(
        &d,
        "private",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo private-base > /p\nCMD [\"cat\", \"/p\"]\n"),
        )],
    );
    let out = molde(&["build", "-q", "-t", "private", &ctx], b"");
    assert!(!out.status.success(), "pulled without credentials");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Dockerfile:1") && err.to_lowercase().contains("auth"),
        "{err}"
    );
    assert!(molde(&login, b"s3cret\n").status.success());
    let out = molde(&["build", "-q", "-t", "private", &ctx], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.run_image("private", &[]), "private-base\n");
}

#[test]
fn locked_cache_mounts_are_used_one_at_a_time_and_tmpfs_sizes_hold() {
    // Two stages run at once and use one cache directory with
    // sharing=locked: each fails if it finds the other inside.
    let d = daemon_with_busybox();
    let step = |me: &str| {
        format!(
            "RUN --mount=type=cache,id=lk,target=/c,sharing=locked \
             [ ! -e /c/busy ] && touch /c/busy && sleep 1 && rm /c/busy && echo {me} > /{me}\n"
        )
    };
    let text = format!(
        "FROM localhost/molde/busybox AS one\n{}\
         FROM localhost/molde/busybox AS two\n{}\
         FROM localhost/molde/busybox\nCOPY --from=one /one /\nCOPY --from=two /two /\n\
         RUN --mount=type=tmpfs,target=/t,size=1m df -k /t | tail -1 | awk '{{print $2}}' > /tsize\n\
         CMD [\"cat\", \"/one\", \"/two\", \"/tsize\"]\n",
        step("one"),
        step("two")
    );
    let ctx = context(&d, "locked", &[("Dockerfile", &text)]);
    d.molde(&["build", "-q", "-t", "locked", &ctx]).ok();
    assert_eq!(d.run_image("locked", &[]), "one\ntwo\n1024\n");
}

/// A tar entry: name, type, link target.
type Raw = (String, tar::EntryType, String);

/// A tar entry written with its name and link as given (no checks).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn hostile_archives_in_add_are_refused_and_write_nothing_outside() {
    let d = daemon_with_busybox();
    let outside = d.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let up = "../".repeat(12);
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        (
            "dotdot",
            vec![(
                format!("{up}{}/escaped", &out[1..]),
                tar::EntryType::Regular,
                String::new(),
            )],
        ),
        (
            "abs-symlink",
            vec![
                ("link".into(), tar::EntryType::Symlink, out.to_string()),
                ("link/escaped".into(), tar::EntryType::Regular, String::new()),
            ],
        ),
        (
            "rel-symlink",
            vec![
                ("up".into(), tar::EntryType::Symlink, format!("{up}{}", &out[1..])),
                ("up/escaped".into(), tar::EntryType::Regular, String::new()),
            ],
        ),
        (
            "abs-hardlink",
            vec![("pw".into(), tar::EntryType::Link, "/etc/passwd".into())],
        ),
        (
            "rel-hardlink",
            vec![("pw".into(), tar::EntryType::Link, format!("{up}etc/passwd"))],
        ),
    ];
    let passwd = std::fs::read("/etc/passwd").unwrap();
    for (name, entries) in cases {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, link) in &entries {
            raw_entry(
                &mut b,
                path,
                *kind,
                link,
                if *kind == tar::EntryType::Regular {
                    b"owned"
                } else {
                    b""
                },
            );
        }
        let ctx = context(
            &d,
            &format!("hostile-{name}"),
            &[(
                "Dockerfile",
                "FROM localhost/molde/busybox\nADD evil.tar /x/\nRUN echo never\n",
            )],
        );
        std::fs::write(Path::new(&ctx).join("evil.tar"), b.into_inner().unwrap()).unwrap();
        let err = d
            .molde(&["build", "-t", &format!("hostile-{name}"), &ctx])
            .fails();
        assert!(
            err.contains("Dockerfile:2") && err.contains("evil.tar"),
            "{name}: {err}"
        );
        assert!(!err.contains("never"), "{name}: {err}");
        if name.ends_with("hardlink") {
            assert!(
                err.contains("entry pw: a hard link to") && err.contains("leads outside the destination"),
                "{name}: the entry and the reason: {err}"
            );
        }
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{name}: something was written outside the snapshot"
        );
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd, "{name}");
        d.molde(&["inspect", &format!("hostile-{name}")]).fails();
    }
    let (ps, mounts) = leftovers(&d);
    assert!(ps.trim().is_empty() && mounts.is_empty(), "{ps} {mounts:?}");
}

#[test]
fn ssh_agents_are_forwarded_to_run_steps_that_ask() {
    let d = daemon_with_busybox();
    let sock = d.dir.path().join("agent.sock");
    let mut agent = std::process::Command::new(molde_tests::require("ssh-agent"))
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    molde_tests::eventually(10, "the agent listens", || sock.exists());
    let ctx = context(
        &d,
        "ssh",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"agent at $SSH_AUTH_SOCK\" > /ssh\n\
             CMD [\"cat\", \"/ssh\"]\n",
        )],
    );
    let spec = format!("default={}", sock.display());
    d.molde(&["build", "-q", "--ssh", &spec, "-t", "ssh", &ctx]).ok();
    assert_eq!(
        d.run_image("ssh", &["sh", "-c", "cat /ssh; ls /run/buildkit 2>&1 | head -1"]),
        "agent at /run/buildkit/ssh_agent.0\nls: /run/buildkit: No such file or directory\n",
        "the agent was there during the RUN, and its mount point is in no layer"
    );
    // A required agent that is not forwarded stops the build, naming it.
    std::fs::write(
        Path::new(&ctx).join("Dockerfile"),
        "FROM localhost/molde/busybox\nRUN --mount=type=ssh,id=deploy,required=true true\n",
    )
    .unwrap();
    let err = d.molde(&["build", "-q", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:2") && err.contains("\"deploy\""),
        "{err}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}

/// `git` in `dir`, as a test author (no global config needed).
fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new(molde_tests::require("git"))
        .args([
            "-c",
            "user.name=molde tests",
            "-c",
            "user.email=tests@molde.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn add_of_a_git_repository_clones_the_ref_and_caches_by_commit() {
    let d = daemon_with_busybox();
    // A repository served by `git daemon` on loopback.
    let served = d.dir.path().join("git");
    let repo = served.join("repo.git");
    std::fs::create_dir_all(repo.join("docs")).unwrap();
    std::fs::write(repo.join("a.txt"), "version one\n").unwrap();
    std::fs::write(repo.join("docs/readme"), "docs one\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "-a", "v1", "-m", "v1"]);
    let port = molde_tests::registry::free_port();
    let _daemon = GitDaemon(
        std::process::Command::new(molde_tests::require("git"))
            .args(["daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", served.display()))
            .arg(&served)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // `git daemon` runs git-daemon as a child: stop the whole group.
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    molde_tests::eventually(10, "git daemon listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let ctx = context(
        &d,
        "gitctx",
        &[(
            "Dockerfile",
            &format!(
                "FROM localhost/molde/busybox\n\
                 ADD {url}#v1 /src\n\
                 ADD --keep-git-dir=true {url} /full/\n\
                 ADD {url}#main:docs /docs/\n\
                 CMD cat /src/a.txt /full/a.txt /docs/readme; ls -a /src | tr '\\n' ' '; [ -d /full/.git ] && echo has-git\n"
            ),
        )],
    );
    let build = || {
        let r = d.molde(&["build", "--progress", "plain", "-t", "fromgit", &ctx]);
        r.ok();
        r.stderr()
    };
    build();
    assert_eq!(
        d.run_image("fromgit", &[]),
        "version one\nversion one\ndocs one\n. .. a.txt docs has-git\n"
    );
    assert_eq!(cached(&build()), 3, "the same commits: every ADD is cached");
    // main moves on: the ADDs that follow it run again, the one pinned to v1 does not.
    std::fs::write(repo.join("a.txt"), "version two\n").unwrap();
    std::fs::write(repo.join("docs/readme"), "docs two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let log = build();
    assert_eq!(cached(&log), 1, "{log}");
    assert_eq!(
        d.run_image("fromgit", &[]),
        "version one\nversion two\ndocs two\n. .. a.txt docs has-git\n"
    );
    // A ref that is not there stops the build, naming it.
    std::fs::write(
        Path::new(&ctx).join("Dockerfile"),
        format!("FROM localhost/molde/busybox\nADD {url}#nosuchref /x\n"),
    )
    .unwrap();
    let err = d.molde(&["build", "-q", &ctx]).fails();
    assert!(err.contains("Dockerfile:2") && err.contains("nosuchref"), "{err}");
}

/// A `git daemon` process group, stopped on drop.
struct GitDaemon(std::process::Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn a_dockerfiles_own_dockerignore_wins_over_the_contexts() {
    let d = daemon_with_busybox();
    let df = "FROM localhost/molde/busybox\nCOPY . /ctx/\nCMD [\"ls\", \"/ctx\"]\n";
    let ctx = context(
        &d,
        "ownignore",
        &[
            ("Dockerfile", df),
            ("app.Dockerfile", df),
            ("app.Dockerfile.dockerignore", "secret.txt\n*.Dockerfile*\n"),
            (".dockerignore", "notes.txt\n"),
            ("secret.txt", "s\n"),
            ("notes.txt", "n\n"),
            ("main.txt", "m\n"),
        ],
    );
    let file = format!("{ctx}/app.Dockerfile");
    d.molde(&["build", "-q", "-f", &file, "-t", "own", &ctx]).ok();
    assert_eq!(d.run_image("own", &[]), "Dockerfile\nmain.txt\nnotes.txt\n");
    d.molde(&["build", "-q", "-t", "plain", &ctx]).ok();
    assert_eq!(
        d.run_image("plain", &[]),
        "Dockerfile\napp.Dockerfile\napp.Dockerfile.dockerignore\nmain.txt\nsecret.txt\n"
    );
}

/// Every step of a 130-step Dockerfile adds a layer; the later RUNs see
/// every one of them below their overlay.
#[test]
fn a_dockerfile_of_130_steps_builds() {
    let d = daemon_with_busybox();
    let mut df = String::from("FROM localhost/molde/busybox\n");
    for i in 0..130 {
        if i % 2 == 0 {
            df.push_str(&format!("RUN mkdir -p /steps && echo {i} > /steps/{i:03}\n"));
        } else {
            df.push_str(&format!("COPY f /steps/{i:03}\n"));
        }
    }
    df.push_str("RUN ls /steps | wc -l > /count\n");
    let ctx = context(&d, "tall", &[("Dockerfile", &df), ("f", "copied\n")]);
    d.molde(&["build", "-q", "-t", "localhost/tall", &ctx]).ok();
    assert_eq!(d.run_image("localhost/tall", &["cat", "/count"]).trim(), "130");
    assert_eq!(
        d.run_image("localhost/tall", &["cat", "/steps/128", "/steps/129"]),
        "128\ncopied\n"
    );
}

/// `RUN --network=host` reaches what listens on the host's loopback only
/// when the person building grants `network.host` and the daemon allows it.
#[test]
fn host_networking_in_a_build_needs_the_network_host_entitlement() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let served = served.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            // Bounded: the one build that may connect, and a spare.
            for conn in listener.incoming().take(2) {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhost secret\n");
            }
        });
    }
    let d = daemon_with_busybox();
    let df = format!(
        "FROM localhost/molde/busybox\nRUN --network=host wget -q -O /got http://127.0.0.1:{port}/\n"
    );
    let ctx = context(&d, "hostnet", &[("Dockerfile", &df)]);

    let err = d.molde(&["build", "-t", "localhost/hostnet", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:2") && err.contains("--allow network.host"),
        "{err}"
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(!d.molde(&["images", "-q"]).ok().contains("hostnet"));

    d.molde(&[
        "build",
        "--allow",
        "network.host",
        "-t",
        "localhost/hostnet",
        &ctx,
    ])
    .ok();
    assert_eq!(
        d.run_image("localhost/hostnet", &["cat", "/got"]),
        "host secret\n"
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1);

    let err = d
        .molde(&["build", "--allow", "security.insecure", "-t", "localhost/x", &ctx])
        .fails();
    assert!(err.contains("security.insecure"), "{err}");
}

#[test]
fn a_daemon_that_withholds_network_host_refuses_it_to_every_build() {
    let d = Daemon::start_with_config("[builder]\nentitlements = []\n");
    d.load_busybox();
    let ctx = context(
        &d,
        "hostnet",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\nRUN --network=host true\n",
        )],
    );
    let err = d
        .molde(&[
            "build",
            "--allow",
            "network.host",
            "-t",
            "localhost/hostnet",
            &ctx,
        ])
        .fails();
    assert!(err.contains("does not grant"), "{err}");
}

#[test]
fn a_copied_link_that_leads_outside_the_context_is_named() {
    let d = daemon_with_busybox();
    let ctx = context(
        &d,
        "links",
        &[
            (
                "Dockerfile",
                "FROM localhost/molde/busybox\nCOPY inside /in\nCOPY link /x\n",
            ),
            ("real", "real\n"),
        ],
    );
    std::os::unix::fs::symlink("/etc/hostname", Path::new(&ctx).join("link")).unwrap();
    std::os::unix::fs::symlink("real", Path::new(&ctx).join("inside")).unwrap();
    let err = d.molde(&["build", "-t", "localhost/links", &ctx]).fails();
    assert!(
        err.contains("Dockerfile:3")
            && err.contains("link: a symbolic link to /etc/hostname")
            && err.contains("outside the build context"),
        "{err}"
    );
    std::fs::remove_file(Path::new(&ctx).join("link")).unwrap();
    std::os::unix::fs::symlink("../../x", Path::new(&ctx).join("link")).unwrap();
    let err = d.molde(&["build", "-t", "localhost/links", &ctx]).fails();
    assert!(err.contains("a symbolic link to ../../x"), "{err}");
    // A link that stays inside is followed.
    std::fs::remove_file(Path::new(&ctx).join("link")).unwrap();
    std::os::unix::fs::symlink("/real", Path::new(&ctx).join("link")).unwrap();
    d.molde(&["build", "-t", "localhost/links", &ctx]).ok();
    assert_eq!(
        d.run_image("localhost/links", &["cat", "/in", "/x"]),
        "real\nreal\n"
    );
}
