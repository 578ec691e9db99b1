//! Images: pulls through molded by containerd's ctr and by molde itself, from a
//! real registry filled by skopeo; unpacked trees checked file by file.

use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;
use molde_tests::{Daemon, sha256};

/// containerd's chain IDs of a list of diff IDs.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Mounts a read-only view of snapshot `key` made by ctr and runs `f` on its root.
fn with_view<T>(d: &Daemon, key: &str, f: impl FnOnce(&std::path::Path) -> T) -> T {
    let mnt = tempfile::tempdir().unwrap();
    let view = format!("view-{}", &key[7..19]);
    let cmd = d
        .ctr(&[
            "snapshots",
            "view",
            "--target",
            mnt.path().to_str().unwrap(),
            &view,
            key,
        ])
        .ok();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .status()
        .unwrap();
    assert!(status.success(), "mounting the view failed: {cmd}");
    let out = f(mnt.path());
    let _ = std::process::Command::new("umount").arg(mnt.path()).status();
    d.ctr(&["snapshots", "rm", &view]).ok();
    out
}

#[test]
fn ctr_pulls_and_unpacks_through_molded() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layers = vec![
        tar(&busybox_rootfs()),
        tar(&[
            Entry::Dir("etc", 0o755),
            Entry::File("etc/motd".into(), b"layer two\n".to_vec(), 0o644),
            Entry::File("etc/.wh.group".into(), Vec::new(), 0o644),
        ]),
    ];
    let l = image::layout(&tmp.path().join("oci"), &layers, Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, "test/busybox:1");
    let d = Daemon::start();
    let reference = format!("{}/test/busybox:1", reg.host);
    d.ctr(&["images", "pull", "--plain-http", &reference]).ok();
    let images = d.ctr(&["images", "ls", "-q"]).ok();
    assert!(images.contains(&reference), "{images}");

    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    let snaps = d.ctr(&["snapshots", "ls"]).ok();
    for c in &chain {
        assert!(snaps.contains(c), "snapshot {c} missing:\n{snaps}");
    }
    with_view(&d, &chain[1], |root| {
        assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"layer two\n");
        assert!(root.join("etc/passwd").is_file());
        assert!(
            !root.join("etc/group").exists(),
            "the whiteout hides the lower file"
        );
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            std::path::Path::new("busybox")
        );
    });
}

/// Requests molde made to the registry, from the registry's access log.
fn molde_requests(reg: &Registry) -> Vec<String> {
    reg.log()
        .lines()
        .filter(|l| l.contains("HTTP/1.1\"") && l.contains("\"molde/"))
        .map(str::to_string)
        .collect()
}

fn multi_layer_layout(dir: &std::path::Path, compression: Compression) -> image::Layout {
    let layers = vec![
        tar(&busybox_rootfs()),
        tar(&[
            Entry::Dir("etc", 0o755),
            Entry::File("etc/motd".into(), b"two\n".to_vec(), 0o644),
            Entry::Dir("data", 0o750),
            Entry::File(
                "data/big".into(),
                (0..3_000_000u32).map(|i| (i % 251) as u8).collect(),
                0o600,
            ),
            Entry::Hardlink("data/big-link".into(), "data/big".into()),
        ]),
        tar(&[
            Entry::Dir("etc", 0o755),
            Entry::File("etc/.wh.motd".into(), Vec::new(), 0o644),
            Entry::Dir("data", 0o750),
            Entry::File("data/.wh..wh..opq".into(), Vec::new(), 0o644),
            Entry::File("data/fresh".into(), b"fresh".to_vec(), 0o644),
            Entry::Hardlink("bin/sh-again".into(), "bin/busybox".into()),
        ]),
    ];
    image::layout(dir, &layers, compression, host_arch())
}

#[test]
fn molde_pull_unpacks_every_layer_and_a_repull_costs_one_request() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "test/multi:1");
    let d = Daemon::start();
    let reference = format!("{}/test/multi:1", reg.host);
    let out = d.molde(&["pull", &reference]).ok();
    assert!(out.contains(&l.manifest_digest), "{out}");
    assert!(d.molde(&["images", "-q"]).ok().contains(&reference));

    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    let snaps = d.ctr(&["snapshots", "ls"]).ok();
    for c in &chain {
        assert!(snaps.contains(c), "{c} missing:\n{snaps}");
    }
    with_view(&d, &chain[2], |root| {
        use std::os::unix::fs::MetadataExt;
        assert!(
            !root.join("etc/motd").exists(),
            "whiteout of layer 3 hides layer 2's file"
        );
        assert!(root.join("etc/passwd").is_file());
        assert!(
            !root.join("data/big").exists(),
            "opaque dir hides the layer below"
        );
        assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh");
        assert_eq!(
            std::fs::metadata(root.join("data")).unwrap().mode() & 0o777,
            0o750
        );
        assert_eq!(
            std::fs::read(root.join("bin/sh-again")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
    });
    with_view(&d, &chain[1], |root| {
        use std::os::unix::fs::MetadataExt;
        let big = std::fs::metadata(root.join("data/big")).unwrap();
        assert_eq!(big.len(), 3_000_000);
        assert_eq!(big.mode() & 0o777, 0o600);
        assert_eq!(
            big.ino(),
            std::fs::metadata(root.join("data/big-link")).unwrap().ino()
        );
        assert_eq!(std::fs::read(root.join("etc/motd")).unwrap(), b"two\n");
    });

    // Inspect reads the config and manifest back.
    let inspect: serde_json::Value = d.inspect(&reference);
    assert_eq!(inspect["Id"], l.config_digest);
    assert_eq!(inspect["RootFS"]["diff_ids"].as_array().unwrap().len(), 3);

    let before = molde_requests(&reg).len();
    d.molde(&["pull", &reference]).ok();
    let after = molde_requests(&reg);
    let repull = &after[before..];
    assert_eq!(repull.len(), 1, "a re-pull is one request: {repull:#?}");
    assert!(repull[0].contains("/manifests/1"), "{repull:#?}");
}

#[test]
fn molde_pull_handles_zstd_and_uncompressed_layers() {
    for compression in [Compression::Zstd, Compression::None] {
        let reg = Registry::start();
        let tmp = tempfile::tempdir().unwrap();
        let l = multi_layer_layout(&tmp.path().join("oci"), compression);
        reg.push_layout(&l.dir, "test/c:1");
        let d = Daemon::start();
        d.molde(&["pull", "-q", &format!("{}/test/c:1", reg.host)]).ok();
        let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
        let top = chain_ids(&diff_ids).pop().unwrap();
        with_view(&d, &top, |root| {
            assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh")
        });
    }
}

#[test]
fn molde_push_is_read_by_skopeo_and_mounts_across_repositories() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "src/app:1");
    let d = Daemon::start();
    let src = format!("{}/src/app:1", reg.host);
    d.molde(&["pull", "-q", &src]).ok();

    // Same registry, another repository: every blob is mounted, none uploaded.
    let dst = format!("{}/dst/app:2", reg.host);
    let run = d.molde(&["push", &src, &dst]);
    let out = run.ok();
    assert!(out.contains(&l.manifest_digest), "{out}");
    let progress = run.stderr();
    assert_eq!(
        progress.matches("mounted").count(),
        4,
        "config and 3 layers are mounted:\n{progress}"
    );
    assert!(!progress.contains("pushed"), "{progress}");

    // skopeo, an independent client, reads what molde pushed.
    let inspect = reg.skopeo(&["inspect", "--tls-verify=false", &format!("docker://{dst}")]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], l.manifest_digest);
    assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
    let copied = tmp.path().join("copied");
    let copy = reg.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{dst}"),
        &format!("oci:{}:x", copied.display()),
    ]);
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));
    for (layer, _) in &l.layers {
        assert!(
            copied.join("blobs/sha256").join(&layer[7..]).is_file(),
            "skopeo copied {layer}"
        );
    }

    // A push to another registry uploads; a second push finds everything there.
    let other = Registry::start();
    let third = format!("{}/copy/app:3", other.host);
    let run = d.molde(&["push", &src, &third]);
    run.ok();
    assert_eq!(run.stderr().matches("pushed").count(), 4, "{}", run.stderr());
    let again = d.molde(&["push", &src, &third]);
    again.ok();
    assert_eq!(again.stderr().matches("exists").count(), 4, "{}", again.stderr());
    let inspect = other.skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{third}"),
    ]);
    assert_eq!(sha256(&inspect.stdout), l.manifest_digest);
}

#[test]
fn save_then_load_round_trips_and_skopeo_reads_the_archive() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "save/app:1");
    let a = Daemon::start();
    let reference = format!("{}/save/app:1", reg.host);
    a.molde(&["pull", "-q", &reference]).ok();
    let archive = tmp.path().join("app.tar");
    a.molde(&["save", "-o", archive.to_str().unwrap(), &reference])
        .ok();

    let inspect = reg.skopeo(&["inspect", &format!("oci-archive:{}", archive.display())]);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["Digest"], l.manifest_digest);

    let b = Daemon::start();
    let out = b.molde(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert!(out.contains(&format!("Loaded image: {reference}")), "{out}");
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let top = chain_ids(&diff_ids).pop().unwrap();
    with_view(&b, &top, |root| {
        assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh")
    });
}

#[test]
fn load_reads_a_docker_archive() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    let archive = tmp.path().join("docker.tar");
    let out = reg.skopeo(&[
        "copy",
        &format!("oci:{}:latest", l.dir.display()),
        &format!("docker-archive:{}:example/app:7", archive.display()),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = Daemon::start();
    let bytes = std::fs::read(&archive).unwrap();
    let out = d.molde_stdin(&["load", "-q"], &bytes).ok();
    assert_eq!(out.trim(), "docker.io/example/app:7");
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let top = chain_ids(&diff_ids).pop().unwrap();
    with_view(&d, &top, |root| {
        assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh");
        assert!(root.join("bin/busybox").is_file());
    });
    let err = d.molde_stdin(&["load"], b"not a tar at all").fails();
    assert!(err.contains("archive"), "{err}");
}

#[test]
fn pull_through_split_content_and_snapshotter_daemons() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "split/app:1");
    // Each daemon hosts one service and reaches the other by address: layers
    // reach the snapshotter over content.v1 Read, not the local fast path.
    let mut content = Daemon::prepare(&["--service", "content", "--service", "transfer"]);
    let mut snap = Daemon::prepare(&["--service", "snapshotter"]);
    content.args(&[
        "--remote".into(),
        format!("snapshotter=unix://{}", snap.sock.display()),
    ]);
    snap.args(&[
        "--remote".into(),
        format!("content=unix://{}", content.sock.display()),
    ]);
    content.spawn();
    snap.spawn();
    let reference = format!("{}/split/app:1", reg.host);
    content.molde(&["pull", "-q", &reference]).ok();
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let top = chain_ids(&diff_ids).pop().unwrap();
    assert!(snap.root.join("snapshots/overlayfs").is_dir());
    assert!(
        !content.root.join("snapshots/overlayfs").exists(),
        "the content daemon holds no snapshots"
    );
    // ctr against the content daemon reaches the snapshotter through its forwarder.
    with_view(&content, &top, |root| {
        assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh")
    });
}

#[test]
fn pull_without_the_content_fast_path() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "slow/app:1");
    let d = Daemon::start_with_config("[snapshotter]\ncontent_fast_path = false\n");
    d.molde(&["pull", "-q", &format!("{}/slow/app:1", reg.host)]).ok();
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let top = chain_ids(&diff_ids).pop().unwrap();
    with_view(&d, &top, |root| {
        assert_eq!(std::fs::read(root.join("data/fresh")).unwrap(), b"fresh");
        assert_eq!(
            std::fs::read(root.join("bin/sh-again")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
    });
}

#[test]
fn tag_and_rmi_and_ctr_pull_into_the_native_snapshotter() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "tag/app:1");
    let d = Daemon::start();
    let reference = format!("{}/tag/app:1", reg.host);
    d.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &reference,
    ])
    .ok();
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    let snaps = d.ctr(&["snapshots", "--snapshotter", "native", "ls"]).ok();
    assert!(snaps.contains(&chain[2]), "{snaps}");
    // A native snapshot is a full tree: whiteouts were carried out, nothing hidden.
    let (dir, _) = molde_tests::files_under(&d.root.join("snapshots/native"))
        .into_iter()
        .filter_map(|p| p.to_str().map(|s| (p.clone(), s.to_string())))
        .find(|(_, s)| s.ends_with("/fs/data/fresh"))
        .expect("the top native snapshot has data/fresh");
    let top = dir.parent().unwrap().parent().unwrap();
    assert!(!top.join("etc/motd").exists() && !top.join("data/big").exists());
    assert!(top.join("bin/busybox").is_file());

    d.molde(&["tag", &reference, "example.com/copy:2"]).ok();
    let names = d.molde(&["images", "-q"]).ok();
    assert!(
        names.contains("example.com/copy:2") && names.contains(&reference),
        "{names}"
    );
    d.molde(&["rmi", &reference]).ok();
    let names = d.molde(&["images", "-q"]).ok();
    assert_eq!(names.trim(), "example.com/copy:2");
    let err = d.molde(&["rmi", "no/such:image"]).fails();
    assert!(
        err.contains("no/such:image") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn concurrent_pulls_share_one_download() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "share/app:1");
    reg.push_layout(&l.dir, "share/other:1");
    let proxy = molde_tests::faults::FaultProxy::start(&reg.host);
    proxy.set(molde_tests::faults::Faults {
        slow: Some(std::time::Duration::from_millis(5)),
        ..Default::default()
    });
    let d = Daemon::start();
    let refs = [
        format!("{}/share/app:1", proxy.host),
        format!("{}/share/other:1", proxy.host),
    ];
    let children: Vec<_> = refs
        .iter()
        .map(|r| {
            std::process::Command::new(molde_tests::bin("molde"))
                .env("MOLDE_ADDRESS", &d.sock)
                .args(["pull", "-q", r])
                .output()
        })
        .collect();
    for c in children {
        assert!(c.unwrap().status.success());
    }
    let big = &l.layers[1].0;
    let fetches = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains(&big[7..]))
        .count();
    assert_eq!(
        fetches,
        1,
        "one download of the shared layer: {:#?}",
        proxy.requests()
    );
}

#[test]
fn removing_an_image_lets_gc_remove_its_blobs_and_snapshots() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let l = multi_layer_layout(&tmp.path().join("oci"), Compression::Gzip);
    reg.push_layout(&l.dir, "gc/app:1");
    let d = Daemon::start();
    let reference = format!("{}/gc/app:1", reg.host);
    d.molde(&["pull", "-q", &reference]).ok();
    let diff_ids: Vec<String> = l.layers.iter().map(|(_, id)| id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    // While the image exists, a collection keeps everything.
    d.molde(&["gc"]).ok();
    let snaps = d.ctr(&["snapshots", "ls"]).ok();
    assert!(chain.iter().all(|c| snaps.contains(c)), "{snaps}");
    assert!(d.molde(&["content", "ls", "-q"]).ok().contains(&l.layers[1].0));
    // A snapshot a container would use stays too.
    d.ctr(&["snapshots", "prepare", "keep-me", &chain[0]]).ok();

    d.molde(&["rmi", &reference]).ok();
    d.molde(&["gc"]).ok();
    assert!(d.molde(&["content", "ls", "-q"]).ok().trim().is_empty());
    let snaps = d.ctr(&["snapshots", "ls"]).ok();
    assert!(
        snaps.contains("keep-me") && snaps.contains(&chain[0]),
        "the active snapshot holds its parent:\n{snaps}"
    );
    assert!(
        !snaps.contains(&chain[2]) && !snaps.contains(&chain[1]),
        "{snaps}"
    );
    d.ctr(&["snapshots", "rm", "keep-me"]).ok();
    d.molde(&["gc"]).ok();
    assert!(!d.ctr(&["snapshots", "ls"]).ok().contains(&chain[0]));
    let dirs: Vec<_> = std::fs::read_dir(d.root.join("snapshots/overlayfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dirs, ["empty"], "no snapshot directory is left");
}

/// 128 layers (Docker's limit is 127) on top of a busybox layer: the overlay
/// options of that many absolute lower directories are longer than a page,
/// which the kernel cuts.
#[test]
fn an_image_of_128_layers_runs_and_sees_every_layer() {
    let work = tempfile::tempdir().unwrap();
    let mut layers = vec![tar(&busybox_rootfs())];
    for i in 1..128 {
        layers.push(tar(&[
            Entry::Dir("layers", 0o755),
            Entry::File(format!("layers/{i:03}"), format!("{i}\n").into_bytes(), 0o644),
        ]));
    }
    let l = image::layout(&work.path().join("oci"), &layers, Compression::Gzip, host_arch());
    let reg = Registry::start();
    reg.push_layout(&l.dir, "test/tall:1");
    let reference = format!("{}/test/tall:1", reg.host);
    let d = Daemon::start();
    d.molde(&["pull", "-q", &reference]).ok();
    let out = d.run_image(&reference, &["sh", "-c", "cat /layers/*"]);
    let want: String = (1..128).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, want, "every layer's file, from the one container");
    // ctr runs it the same way, through the same shim.
    let out = d
        .ctr(&[
            "run",
            "--rm",
            &reference,
            "tall",
            "sh",
            "-c",
            "ls /layers | wc -l",
        ])
        .ok();
    assert_eq!(out.trim(), "127");
}

/// Bytes that do not compress: what real layers mostly hold.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a node does when a deployment starts many pods of one image: N
/// pulls at once. Each reports every layer, all succeed, and each layer is
/// unpacked once.
#[test]
fn concurrent_pulls_of_one_image_unpack_it_once() {
    let work = tempfile::tempdir().unwrap();
    let mut layers = vec![tar(&busybox_rootfs())];
    for i in 1..5u64 {
        layers.push(tar(&[
            Entry::Dir("data", 0o755),
            Entry::File(format!("data/{i}"), noise(i, 6 << 20), 0o644),
        ]));
    }
    let l = image::layout(&work.path().join("oci"), &layers, Compression::Gzip, host_arch());
    let reg = Registry::start();
    reg.push_layout(&l.dir, "test/popular:1");
    let reference = format!("{}/test/popular:1", reg.host);
    let d = Daemon::start();
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            std::process::Command::new(molde_tests::bin("molde"))
                .env("MOLDE_ADDRESS", &d.sock)
                .args(["pull", &reference])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in pulls {
        let out = p.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a pull failed: {err}\n{}", d.log_text());
        let reported = err
            .lines()
            .filter(|l| l.ends_with(" applied") || l.ends_with(" unpacked by a concurrent pull"))
            .count();
        assert_eq!(reported, 5, "every layer reported: {err}");
    }
    let log = d.log_text();
    let applied = log.lines().filter(|l| l.contains("layer applied")).count();
    assert_eq!(applied, 5, "each layer unpacked once:\n{log}");
    let out = d.run_image(&reference, &["sh", "-c", "ls /data | wc -l"]);
    assert_eq!(out.trim(), "4");
}

/// Names longer than the distribution spec allows are refused by molded, and
/// the CLI lists whatever names a daemon returns without failing.
#[test]
fn names_past_the_distribution_limits_are_refused() {
    let d = Daemon::start();
    d.load_busybox();
    let long = format!("localhost/{}", "a".repeat(100_000));
    let err = d.molde(&["tag", "localhost/molde/busybox", &long]).fails();
    assert!(
        err.contains("over the limit of 255"),
        "{}",
        &err[..err.len().min(400)]
    );
    let err = d
        .ctr(&[
            "images",
            "tag",
            "localhost/molde/busybox:latest",
            &format!("{long}:1"),
        ])
        .fails();
    assert!(err.contains("limit"), "{}", &err[..err.len().min(400)]);
    let tag = format!("localhost/app:{}", "t".repeat(129));
    assert!(
        d.molde(&["tag", "localhost/molde/busybox", &tag])
            .fails()
            .contains("tag")
    );
    let listed = d.molde(&["images"]).ok();
    assert!(listed.contains("localhost/molde/busybox") && !listed.contains(&long));
}
