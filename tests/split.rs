//! Split mode: every service (content, snapshotter, transfer, runtime,
//! builder) in a molded of its own, and a front molded that hosts none of
//! them and forwards every RPC. What a user does through the
//! front gives what the all-in-one daemon gives.

use molde_tests::Daemon;
use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;

/// What the user does, on one daemon's socket; returns what they see.
fn session(d: &Daemon, reference: &str) -> Vec<String> {
    d.load_busybox();
    let mut seen = vec![d.run_image("localhost/molde/busybox", &["echo", "hello"])];
    d.molde(&["pull", "-q", reference]).ok();
    seen.push(d.run_image(reference, &["cat", "/pulled"]));
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "copied\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/molde/busybox\nRUN echo ran > /ran\nCOPY f /f\nCMD [\"cat\", \"/ran\", \"/f\"]\n",
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "localhost/split", ctx.to_str().unwrap()])
        .ok();
    seen.push(d.run_image("localhost/split", &[]));
    seen.push(
        d.ctr(&["run", "--rm", "localhost/split:latest", "c1", "cat", "/f"])
            .ok(),
    );
    // Saved and loaded back under another name, through the transfer service.
    let archive = d.dir.path().join("split.tar");
    d.molde(&["save", "-o", archive.to_str().unwrap(), "localhost/split"])
        .ok();
    d.molde(&["rmi", "localhost/split"]).ok();
    d.molde(&["load", "-q", "-i", archive.to_str().unwrap()]).ok();
    seen.push(d.run_image("localhost/split", &[]));
    seen
}

#[test]
fn every_service_in_its_own_process_behind_a_front() {
    let work = tempfile::tempdir().unwrap();
    let layers = vec![
        tar(&busybox_rootfs()),
        tar(&[Entry::File(
            "pulled".into(),
            b"from the registry\n".to_vec(),
            0o644,
        )]),
    ];
    let l = image::layout(&work.path().join("oci"), &layers, Compression::Gzip, host_arch());
    let reg = Registry::start();
    reg.push_layout(&l.dir, "split/app:1");
    let reference = format!("{}/split/app:1", reg.host);

    let mut content = Daemon::prepare(&["--service", "content"]);
    let mut snapshotter = Daemon::prepare(&["--service", "snapshotter"]);
    let mut transfer = Daemon::prepare(&["--service", "transfer"]);
    let mut runtime = Daemon::prepare(&["--service", "runtime"]);
    let mut builder = Daemon::prepare(&["--service", "builder"]);
    let mut front = Daemon::prepare(&[]);
    let at = |name: &str, d: &Daemon| {
        vec![
            "--remote".to_string(),
            format!("{name}=unix://{}", d.sock.display()),
        ]
    };
    let (c, s, t, r, b) = (
        at("content", &content),
        at("snapshotter", &snapshotter),
        at("transfer", &transfer),
        at("runtime", &runtime),
        at("builder", &builder),
    );
    content.args(&s);
    snapshotter.args(&c);
    transfer.args(&[c.clone(), s.clone()].concat());
    runtime.args(&[c.clone(), s.clone()].concat());
    builder.args(&[c.clone(), s.clone(), t.clone(), r.clone()].concat());
    front.args(&[c, s, t, r, b].concat());
    for d in [
        &mut content,
        &mut snapshotter,
        &mut transfer,
        &mut runtime,
        &mut builder,
        &mut front,
    ] {
        d.spawn();
    }

    let split = session(&front, &reference);
    let all_in_one = session(&Daemon::start(), &reference);
    assert_eq!(split, all_in_one);
    assert_eq!(
        split,
        [
            "hello\n",
            "from the registry\n",
            "ran\ncopied\n",
            "copied\n",
            "ran\ncopied\n"
        ]
    );
    // Each kept what it owns: blobs in content's root, layers in the
    // snapshotter's, containers' bundles in the runtime's state.
    assert!(molde_tests::files_under(&content.root.join("content/blobs")).len() > 3);
    assert!(!front.root.join("content").exists() && !front.root.join("snapshots").exists());
    // The transfer service wrote nothing of its own: every blob went to content.
    assert!(!transfer.root.join("content").exists() && !transfer.root.join("meta.redb").exists());
    assert!(
        snapshotter
            .root
            .join("snapshots/overlayfs")
            .read_dir()
            .unwrap()
            .count()
            > 2
    );
    assert!(runtime.state.join("runtime").exists());
    assert!(builder.root.join("build-cache").read_dir().unwrap().count() > 0);
    // The front says where each service is.
    let info = front.molde(&["info"]).ok();
    for name in [
        "content",
        "snapshots",
        "transfer",
        "containers",
        "tasks",
        "runtime",
        "builder",
    ] {
        assert!(info.contains(name), "{name}: {info}");
    }
}
