//! Garbage collection through real daemons: what roots hold survives, what
//! nothing holds goes.

use molde_api::containerd::services::content::v1::{self as api, content_client::ContentClient};
use molde_api::containerd::services::images::v1::{self as images, images_client::ImagesClient};
use molde_api::containerd::services::leases::v1::{self as leases, leases_client::LeasesClient};
use molde_api::containerd::types::Descriptor;
use molde_tests::registry::Registry;
use molde_tests::write::{Session, put};
use molde_tests::{Daemon, eventually, image, req};
use tonic::Code;

async fn exists(ch: &tonic::transport::Channel, digest: &str) -> bool {
    match ContentClient::new(ch.clone())
        .info(req(
            "default",
            None,
            api::InfoRequest {
                digest: digest.into(),
            },
        ))
        .await
    {
        Ok(_) => true,
        Err(e) if e.code() == Code::NotFound => false,
        Err(e) => panic!("info {digest}: {e:?}"),
    }
}

fn blob_file(d: &Daemon, digest: &str) -> std::path::PathBuf {
    d.root
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

async fn label(ch: &tonic::transport::Channel, digest: &str, key: &str, value: &str) {
    ContentClient::new(ch.clone())
        .update(req(
            "default",
            None,
            api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.into(),
                    labels: [(key.to_string(), value.to_string())].into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{key}")],
                }),
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn content_a_leased_writer_finds_present_joins_its_lease() {
    // An image removed a moment before a load of the same image: its blobs
    // are still there when the load writes them, so the writes find them
    // present; the collection that follows must not take them from the load.
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut leases_c = LeasesClient::new(ch.clone());
    leases_c
        .create(req(
            "default",
            None,
            leases::CreateRequest {
                id: "load-1".into(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap();
    let blob = put(&ch, "default", None, "first", b"present already")
        .await
        .unwrap();
    let e = put(&ch, "default", Some("load-1"), "second", b"present already")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    d.molde(&["gc"]).ok();
    assert!(
        exists(&ch, &blob).await,
        "held by the lease of the writer that found it"
    );
    leases_c
        .delete(req(
            "default",
            None,
            leases::DeleteRequest {
                id: "load-1".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    assert!(
        !exists(&ch, &blob).await,
        "nothing holds it once the lease is gone"
    );
}

#[tokio::test]
async fn roots_and_references_survive_collection_and_orphans_do_not() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut leases_c = LeasesClient::new(ch.clone());
    leases_c
        .create(req(
            "default",
            None,
            leases::CreateRequest {
                id: "pull-1".into(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap();

    let leased = put(&ch, "default", Some("pull-1"), "leased", b"held by a lease")
        .await
        .unwrap();
    let layer = put(&ch, "default", None, "layer", b"a layer").await.unwrap();
    let config = put(&ch, "default", None, "config", b"a config").await.unwrap();
    let manifest = put(&ch, "default", None, "manifest", b"a manifest")
        .await
        .unwrap();
    label(&ch, &manifest, "containerd.io/gc.ref.content.l.0", &layer).await;
    label(&ch, &manifest, "containerd.io/gc.ref.content.config", &config).await;
    let pinned = put(&ch, "default", None, "pinned", b"a gc root").await.unwrap();
    label(&ch, &pinned, "containerd.io/gc.root", "2026-01-01T00:00:00Z").await;
    let orphan = put(&ch, "default", None, "orphan", b"nothing holds me")
        .await
        .unwrap();

    ImagesClient::new(ch.clone())
        .create(req(
            "default",
            None,
            images::CreateImageRequest {
                image: Some(images::Image {
                    name: "example.com/app:1".into(),
                    target: Some(Descriptor {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        digest: manifest.clone(),
                        size: 10,
                        annotations: Default::default(),
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();

    let res = leases_c
        .list_resources(req(
            "default",
            None,
            leases::ListResourcesRequest { id: "pull-1".into() },
        ))
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(
        res.iter().any(|r| r.r#type == "content" && r.id == leased),
        "{res:?}"
    );

    let out = d.molde(&["gc"]).ok();
    assert!(out.contains("removed 1 content records, 1 blobs"), "{out}");
    for live in [&leased, &layer, &config, &manifest, &pinned] {
        assert!(exists(&ch, live).await, "{live} is held and must survive");
        assert!(blob_file(&d, live).is_file());
    }
    assert!(!exists(&ch, &orphan).await);
    assert!(!blob_file(&d, &orphan).exists());

    // Dropping the image releases its whole graph; deleting the lease (sync) its content.
    ImagesClient::new(ch.clone())
        .delete(req(
            "default",
            None,
            images::DeleteImageRequest {
                name: "example.com/app:1".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    for gone in [&layer, &config, &manifest] {
        assert!(!exists(&ch, gone).await, "{gone} lost its only root");
        assert!(!blob_file(&d, gone).exists());
    }
    assert!(exists(&ch, &leased).await);
    leases_c
        .delete(req(
            "default",
            None,
            leases::DeleteRequest {
                id: "pull-1".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    assert!(!exists(&ch, &leased).await);
    assert!(exists(&ch, &pinned).await);
}

#[tokio::test]
async fn content_shared_by_namespaces_stays_until_the_last_lets_go() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let digest = put(&ch, "a", None, "r", b"shared").await.unwrap();
    put(&ch, "b", None, "r", b"shared").await.unwrap();
    ContentClient::new(ch.clone())
        .update(req(
            "b",
            None,
            api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.clone(),
                    labels: [("containerd.io/gc.root".to_string(), "x".to_string())].into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels".into()],
                }),
            },
        ))
        .await
        .unwrap();
    d.molde(&["gc"]).ok();
    // Namespace a lost its record; b still holds the blob.
    assert!(
        d.molde(&["-n", "a", "content", "ls", "-q"])
            .ok()
            .trim()
            .is_empty()
    );
    assert_eq!(
        d.molde(&["-n", "b", "content", "get", &digest]).out.stdout,
        b"shared"
    );
}

#[test]
fn delete_triggers_a_collection_on_its_own() {
    let d = Daemon::start();
    let digest = d
        .molde_stdin(
            &["content", "ingest", "r", "-l", "containerd.io/gc.root=1"],
            b"soon gone",
        )
        .ok();
    let digest = digest.trim().to_string();
    let file = blob_file(&d, &digest);
    assert!(file.is_file());
    d.molde(&["content", "rm", &digest]).ok();
    eventually(20, "the scheduled collection to remove the blob file", || {
        !file.exists()
    });
}

#[tokio::test]
async fn expired_ingests_and_leases_are_collected_held_ones_are_not() {
    let d = Daemon::start_with_config("[gc]\ningest_expiry_secs = 1\n");
    let ch = d.channel().await;
    let mut leases_c = LeasesClient::new(ch.clone());
    leases_c
        .create(req(
            "default",
            None,
            leases::CreateRequest {
                id: "keep".into(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap();
    leases_c
        .create(req(
            "default",
            None,
            leases::CreateRequest {
                id: "expired".into(),
                labels: [(
                    "containerd.io/gc.expire".to_string(),
                    "2001-01-01T00:00:00Z".to_string(),
                )]
                .into(),
            },
        ))
        .await
        .unwrap();
    {
        let (mut s, _) = Session::open(&ch, "default", None, "abandoned", 0, "")
            .await
            .unwrap();
        s.write(0, b"partial").await.unwrap();
        let (mut s, _) = Session::open(&ch, "default", Some("keep"), "leased-ingest", 0, "")
            .await
            .unwrap();
        s.write(0, b"partial too").await.unwrap();
    }
    // Let the ingests pass the 1 s expiry.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let out = d.molde(&["gc"]).ok();
    assert!(out.contains("1 ingests, 1 leases"), "{out}");
    let active = d.molde(&["content", "active"]).ok();
    assert!(!active.contains("abandoned"), "{active}");
    assert!(active.contains("leased-ingest"), "{active}");
    let ids = d.ctr(&["leases", "ls", "-q"]).ok();
    assert_eq!(ids.trim(), "keep");

    let e = put(&ch, "default", Some("no-such-lease"), "r", b"x")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("no-such-lease"));
}

/// Snapshot directories under the overlay snapshotter's root (`empty` aside).
fn snapshot_dirs(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.root.join("snapshots/overlayfs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "empty")
        .collect()
}

/// The snapshotter reads only its own records: an image whose name looks
/// like a snapshot key, or a container named `snapshots`, is not one.
#[test]
fn names_that_look_like_snapshot_keys_do_not_stop_snapshot_collection() {
    let d = Daemon::start();
    d.load_busybox();
    d.molde(&[
        "tag",
        "localhost/molde/busybox",
        "reg.example/snapshots/overlayfs/app:1",
    ])
    .ok();
    d.molde(&[
        "tag",
        "localhost/molde/busybox",
        "reg.example/ns/default/snapshots/native/x:1",
    ])
    .ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "snapshots",
        "--network",
        "none",
        "localhost/molde/busybox",
        "sleep",
        "60",
    ])
    .ok();
    // A second image whose layers nothing else holds, then removed.
    let work = tempfile::tempdir().unwrap();
    let layers = vec![
        image::tar(&image::busybox_rootfs()),
        image::tar(&[image::Entry::File("other".into(), b"other\n".to_vec(), 0o644)]),
    ];
    let l = image::layout(
        &work.path().join("oci"),
        &layers,
        image::Compression::Gzip,
        image::host_arch(),
    );
    let reg = Registry::start();
    reg.push_layout(&l.dir, "other:1");
    let other = format!("{}/other:1", reg.host);
    let before = snapshot_dirs(&d);
    d.molde(&["pull", "-q", &other]).ok();
    d.molde(&["run", "--rm", "--network", "none", &other, "cat", "/other"])
        .ok();
    assert!(snapshot_dirs(&d).len() > before.len());
    d.molde(&["rmi", &other]).ok();
    d.molde(&["gc"]).ok();
    eventually(10, "the removed image's snapshots collected", || {
        snapshot_dirs(&d).len() == before.len()
    });
    let log = d.log_text();
    assert!(
        !log.contains("collection failed") && !log.contains("corrupt record"),
        "{log}"
    );
    // What is held stays: the container and its image run on.
    assert_eq!(d.molde(&["exec", "snapshots", "echo", "alive"]).ok(), "alive\n");
    d.molde(&["rm", "-f", "snapshots"]).ok();
}
