//! diff.v1 Diff: the layer between a snapshot and its parent, as the builder
//! will use it.

use std::io::Read;

use molde_api::containerd::services::content::v1::{ReadContentRequest, content_client::ContentClient};
use molde_api::containerd::services::diff::v1::{DiffRequest, diff_client::DiffClient};
use molde_api::containerd::services::leases::v1::{CreateRequest, leases_client::LeasesClient};
use molde_api::containerd::services::snapshots::v1::{
    PrepareSnapshotRequest, snapshots_client::SnapshotsClient,
};
use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;
use molde_tests::{Daemon, req, sha256};

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_an_active_snapshot_is_its_changes_with_whiteouts() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let base = tar(&[
        busybox_rootfs(),
        vec![
            Entry::Dir("srv", 0o755),
            Entry::File("srv/old".into(), b"old".to_vec(), 0o644),
        ],
    ]
    .concat());
    let l = image::layout(&tmp.path().join("oci"), &[base], Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, "diff/base:1");
    let d = Daemon::start();
    d.molde(&["pull", "-q", &format!("{}/diff/base:1", reg.host)])
        .ok();
    let parent = l.layers[0].1.clone();

    let ch = d.channel().await;
    let mounts = SnapshotsClient::new(ch.clone())
        .prepare(req(
            "default",
            None,
            PrepareSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: "work".into(),
                parent: parent.clone(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    // Change the tree through a real overlay mount, as a container would.
    let mnt = tempfile::tempdir().unwrap();
    let opts = mounts[0].options.join(",");
    let st = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(mnt.path().join("srv/new"), b"new file").unwrap();
    std::fs::remove_file(mnt.path().join("srv/old")).unwrap();
    std::fs::remove_file(mnt.path().join("bin/cat")).unwrap();
    std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();

    // The diff's blob is held by a lease, as a client that keeps it holds
    // it: nothing references it, and a collection may run meanwhile.
    LeasesClient::new(ch.clone())
        .create(req(
            "default",
            None,
            CreateRequest {
                id: "diff-test".into(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap();
    let desc = DiffClient::new(ch.clone())
        .diff(req(
            "default",
            Some("diff-test"),
            DiffRequest {
                left: vec![],
                right: mounts,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                r#ref: "diff-test".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    let mut s = ContentClient::new(ch)
        .read(req(
            "default",
            None,
            ReadContentRequest {
                digest: desc.digest.clone(),
                offset: 0,
                size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut blob = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        blob.extend_from_slice(&m.data);
    }
    assert_eq!(sha256(&blob), desc.digest);
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(blob.as_slice())
        .read_to_end(&mut plain)
        .unwrap();
    let mut names = Vec::new();
    let mut a = tar::Archive::new(plain.as_slice());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "srv/new" {
            let mut c = String::new();
            e.read_to_string(&mut c).unwrap();
            assert_eq!(c, "new file");
        }
        names.push(name);
    }
    assert!(names.contains(&"srv/new".to_string()), "{names:?}");
    assert!(names.contains(&"srv/.wh.old".to_string()), "{names:?}");
    assert!(names.contains(&"bin/.wh.cat".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "bin/busybox"),
        "unchanged files are not in the diff: {names:?}"
    );
    let info = d.molde(&["content", "ls", "--format", "json"]).ok();
    assert!(
        info.contains(&sha256(&plain)),
        "the layer carries its uncompressed digest label:\n{info}"
    );
}
