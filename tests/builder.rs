//! `molde build`: Dockerfiles built by molded's builder into images that
//! `molde run` runs. (Root, as the daemon runs.)

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

    let run = d
        .molde(&["run", "--rm", "--network", "none", "localhost/test/app:1"])
        .ok();
    assert_eq!(run, "release\nhi from the context\na\nb\n65534\n700\n");

    let inspect: serde_json::Value =
        serde_json::from_str(&d.molde(&["inspect", "localhost/test/app:1"]).ok()).unwrap();
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
    let cached = |log: &str| log.lines().filter(|l| l.contains(" CACHED ")).count();
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

    let out = d
        .molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            "localhost/test/cached",
            "cat",
            "/copy.txt",
            "/b.txt",
        ])
        .ok();
    assert_eq!(out, "first\nchanged\n");
}
