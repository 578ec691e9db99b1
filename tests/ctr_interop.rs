//! containerd's own client, `ctr`, against molded: the wire protocol is containerd's.

use molde_api::containerd::services::images::v1::{CreateImageRequest, Image, images_client::ImagesClient};
use molde_api::containerd::types::Descriptor;
use molde_tests::{Daemon, req, sha256};

#[test]
fn ctr_version_reports_molded() {
    let d = Daemon::start();
    let out = d.ctr(&["version"]).ok();
    let server = out.split("Server:").nth(1).expect("a Server section");
    assert!(server.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(server.contains("UUID:"), "{out}");
}

#[test]
fn ctr_content_ingest_ls_get_rm() {
    let d = Daemon::start();
    let data = b"bytes stored by ctr through molde's content service\n".repeat(50_000);
    let digest = sha256(&data);
    d.ctr_stdin(&["content", "ingest", "ctr-ref-1"], &data).ok();

    let ls = d.ctr(&["content", "ls"]).ok();
    assert!(ls.contains(&digest), "ctr content ls must list {digest}:\n{ls}");
    let quiet = d.ctr(&["content", "ls", "-q"]).ok();
    assert_eq!(quiet.trim(), digest);

    let got = d.ctr(&["content", "get", &digest]);
    got.ok();
    assert!(got.out.stdout == data, "ctr content get returned different bytes");

    // ctr and molde see the same store.
    assert!(d.molde(&["content", "ls", "-q"]).ok().contains(&digest));

    d.ctr(&["content", "rm", &digest]).ok();
    assert!(!d.ctr(&["content", "ls"]).ok().contains(&digest));
    let err = d.ctr(&["content", "get", &digest]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ctr_content_ingest_with_expected_digest_checks_it() {
    let d = Daemon::start();
    let data = b"checked by digest";
    let wrong = sha256(b"something else");
    let err = d
        .ctr_stdin(
            &["content", "ingest", "--expected-digest", &wrong, "r-wrong"],
            data,
        )
        .fails();
    assert!(err.contains("digest"), "{err}");
    assert!(!d.ctr(&["content", "ls"]).ok().contains(&sha256(data)));

    let right = sha256(data);
    d.ctr_stdin(
        &[
            "content",
            "ingest",
            "--expected-digest",
            &right,
            "--expected-size",
            &data.len().to_string(),
            "r-right",
        ],
        data,
    )
    .ok();
    assert!(d.ctr(&["content", "ls"]).ok().contains(&right));
}

#[test]
fn ctr_leases_create_ls_rm() {
    let d = Daemon::start();
    let id = d
        .ctr(&["leases", "create", "--id", "build-42", "owner=test"])
        .ok();
    assert_eq!(id.trim(), "build-42");
    let generated = d.ctr(&["leases", "create"]).ok().trim().to_string();
    assert!(!generated.is_empty());

    let ls = d.ctr(&["leases", "ls"]).ok();
    assert!(ls.contains("build-42") && ls.contains("owner=test"), "{ls}");
    assert!(ls.contains(&generated), "{ls}");
    // ctr sets an expiry label on leases it creates.
    assert!(ls.contains("containerd.io/gc.expire"), "{ls}");

    d.ctr(&["leases", "rm", "build-42"]).ok();
    let ls = d.ctr(&["leases", "ls", "-q"]).ok();
    assert!(!ls.contains("build-42"), "{ls}");
    assert!(ls.contains(&generated));
    d.ctr(&["leases", "rm", "--sync", &generated]).ok();
    assert!(d.ctr(&["leases", "ls", "-q"]).ok().trim().is_empty());
    let err = d.ctr(&["leases", "rm", "build-42"]).fails();
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn ctr_namespaces_ls_create_and_isolation() {
    let d = Daemon::start();
    d.ctr(&["namespaces", "create", "team-a", "tier=gold"]).ok();
    d.ctr_stdin(&["-n", "team-b", "content", "ingest", "r"], b"team b's blob")
        .ok();
    let ls = d.ctr(&["namespaces", "ls"]).ok();
    assert!(ls.contains("team-a") && ls.contains("tier=gold"), "{ls}");
    assert!(
        ls.contains("team-b"),
        "a namespace is created on first use:\n{ls}"
    );
    assert!(
        d.ctr(&["-n", "team-b", "content", "ls", "-q"])
            .ok()
            .contains(&sha256(b"team b's blob"))
    );
    assert!(
        d.ctr(&["-n", "team-a", "content", "ls", "-q"])
            .ok()
            .trim()
            .is_empty()
    );
    let err = d.ctr(&["namespaces", "rm", "team-b"]).fails();
    assert!(err.contains("must be empty"), "{err}");
    d.ctr(&["namespaces", "rm", "team-a"]).ok();
    assert!(!d.ctr(&["namespaces", "ls", "-q"]).ok().contains("team-a"));
}

#[tokio::test]
async fn ctr_images_ls_shows_image_records() {
    let d = Daemon::start();
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let digest = sha256(manifest);
    let out = d.ctr_stdin(&["content", "ingest", "m"], manifest);
    out.ok();
    let ch = d.channel().await;
    ImagesClient::new(ch)
        .create(req(
            "default",
            None,
            CreateImageRequest {
                image: Some(Image {
                    name: "example.com/app:1".into(),
                    target: Some(Descriptor {
                        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                        digest: digest.clone(),
                        size: manifest.len() as i64,
                        annotations: Default::default(),
                    }),
                    ..Default::default()
                }),
            },
        ))
        .await
        .expect("create image");
    let ls = d.ctr(&["images", "ls"]).ok();
    assert!(ls.contains("example.com/app:1") && ls.contains(&digest), "{ls}");
    let q = d.ctr(&["images", "ls", "-q"]).ok();
    assert_eq!(q.trim(), "example.com/app:1");
    d.ctr(&["images", "rm", "example.com/app:1"]).ok();
    assert!(d.ctr(&["images", "ls", "-q"]).ok().trim().is_empty());
}
