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
