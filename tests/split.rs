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

/// `[tracing] otlp_endpoint` on a front and the services it forwards to:
/// `molde pull` (its `TRACEPARENT` the caller's) is one trace whose spans
/// link across the processes, CLI → front → transfer → content, checked at
/// an OTLP collector.
#[test]
fn a_pull_through_the_front_is_one_trace_across_processes() {
    use molde_tests::otlp::{Collector, Span};
    let collector = Collector::start();
    let work = tempfile::tempdir().unwrap();
    let l = image::layout(
        &work.path().join("oci"),
        &[tar(&busybox_rootfs())],
        Compression::Gzip,
        host_arch(),
    );
    let reg = Registry::start();
    reg.push_layout(&l.dir, "traced/app:1");
    let reference = format!("{}/traced/app:1", reg.host);
    let config = work.path().join("tracing.toml");
    std::fs::write(
        &config,
        format!("[tracing]\notlp_endpoint = \"{}\"\n", collector.endpoint),
    )
    .unwrap();
    let with_config = |service: &[&str]| {
        let mut d = Daemon::prepare(service);
        d.args(&["--config".to_string(), config.display().to_string()]);
        d
    };
    let mut content = with_config(&["--service", "content"]);
    let mut snapshotter = with_config(&["--service", "snapshotter"]);
    let mut transfer = with_config(&["--service", "transfer"]);
    let mut front = with_config(&[]);
    let at = |name: &str, d: &Daemon| {
        vec![
            "--remote".to_string(),
            format!("{name}=unix://{}", d.sock.display()),
        ]
    };
    let (c, s, t) = (
        at("content", &content),
        at("snapshotter", &snapshotter),
        at("transfer", &transfer),
    );
    content.args(&s);
    snapshotter.args(&c);
    transfer.args(&[c.clone(), s.clone()].concat());
    front.args(&[c, s, t].concat());
    for d in [&mut content, &mut snapshotter, &mut transfer, &mut front] {
        d.spawn();
    }

    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let pulled = std::process::Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &front.sock)
        .env("TRACEPARENT", format!("00-{trace}-{caller}-01"))
        .args(["pull", "-q", &reference])
        .output()
        .unwrap();
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );

    let of = |d: &Daemon| d.sock.display().to_string();
    let (front_id, transfer_id, content_id) = (of(&front), of(&transfer), of(&content));
    let in_process =
        |s: &Span, id: &str| s.resource.get("service.instance.id").map(String::as_str) == Some(id);
    const PULL: &str = "molde.services.transfer.v1.Transfer/Pull";
    // Each process exports in batches of its own: wait for every span the
    // assertions below name, not merely for each process's first.
    let spans = collector.wait_for(20, "the pull's spans from front, transfer and content", |spans| {
        let has = |id: &str, name: &str| spans.iter().any(|s| in_process(s, id) && s.name == name);
        spans
            .iter()
            .any(|s| s.trace_id == trace && in_process(s, &content_id))
            && has(&front_id, PULL)
            && has(&transfer_id, PULL)
            && has(&transfer_id, "pull")
            && has(&transfer_id, "blob from the registry")
    });
    let one = |id: &str, name: &str| -> Span {
        spans
            .iter()
            .find(|s| in_process(s, id) && s.name == name)
            .unwrap_or_else(|| panic!("{name} from {id}: {spans:#?}"))
            .clone()
    };
    // The front's span for the call is the CLI's child.
    let front_pull = one(&front_id, PULL);
    assert_eq!(front_pull.trace_id, trace, "{front_pull:#?}");
    assert_eq!(front_pull.parent_span_id, caller);
    assert_eq!(
        front_pull.resource.get("molde.services").map(String::as_str),
        Some("runtime,builder,cri")
    );
    assert_eq!(
        front_pull.attributes.get("rpc.method").map(String::as_str),
        Some("Pull")
    );
    // The transfer process's span for the same call is the front's child...
    let transfer_pull = one(&transfer_id, PULL);
    assert_eq!(transfer_pull.trace_id, trace);
    assert_eq!(transfer_pull.parent_span_id, front_pull.span_id);
    assert_eq!(
        transfer_pull.resource.get("molde.services").map(String::as_str),
        Some("transfer")
    );
    // ... with the pull's work beneath it ...
    let work_span = one(&transfer_id, "pull");
    assert_eq!(work_span.parent_span_id, transfer_pull.span_id);
    let blob = one(&transfer_id, "blob from the registry");
    assert_eq!(blob.trace_id, trace);
    assert_eq!(blob.parent_span_id, work_span.span_id);
    // ... and the calls it made to the content and snapshotter processes
    // (and theirs to content) are in the trace: one tree, every span's
    // parent in it but the front's, whose parent is the CLI's.
    let spans = collector.wait_for(20, "the trace whole", |spans| {
        let ids: Vec<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| s.span_id.as_str())
            .collect();
        spans
            .iter()
            .filter(|s| s.trace_id == trace && s.span_id != front_pull.span_id)
            .all(|s| ids.contains(&s.parent_span_id.as_str()))
    });
    let transfer_spans: Vec<&str> = spans
        .iter()
        .filter(|s| in_process(s, &transfer_id) && s.trace_id == trace)
        .map(|s| s.span_id.as_str())
        .collect();
    let content_calls: Vec<&Span> = spans
        .iter()
        .filter(|s| in_process(s, &content_id) && s.trace_id == trace)
        .collect();
    assert!(
        content_calls
            .iter()
            .any(|s| s.name.starts_with("containerd.services.content.v1.Content/")
                && transfer_spans.contains(&s.parent_span_id.as_str())),
        "no content call is a transfer span's child: {content_calls:#?}"
    );
    // A command without TRACEPARENT is a trace of its own, begun by the CLI.
    front.molde(&["images", "-q"]).ok();
    let spans = collector.wait_for(10, "the images call's span", |spans| {
        spans
            .iter()
            .any(|s| s.name == "containerd.services.images.v1.Images/List")
    });
    let list = spans
        .iter()
        .find(|s| s.name == "containerd.services.images.v1.Images/List")
        .unwrap();
    assert_ne!(list.trace_id, trace);
    assert_eq!(list.parent_span_id.len(), 16, "the CLI's span is its parent");
}
