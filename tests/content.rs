//! The content service through its gRPC API and the molde CLI: ingests, reads,
//! labels, images, namespaces, bad input and crashes.

use futures::StreamExt;
use molde_api::containerd::services::content::v1::{self as api, content_client::ContentClient};
use molde_api::containerd::services::images::v1::{self as images, images_client::ImagesClient};
use molde_api::containerd::types::Descriptor;
use molde_tests::write::{Session, put};
use molde_tests::{Daemon, files_under, req, sha256};
use tonic::Code;

fn blob(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed as u32) as u8)
        .collect()
}

async fn read_all(
    ch: &tonic::transport::Channel,
    ns: &str,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = ContentClient::new(ch.clone())
        .read(req(
            ns,
            None,
            api::ReadContentRequest {
                digest: digest.into(),
                offset,
                size,
            },
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        let m = m?;
        assert_eq!(
            m.offset as usize,
            offset as usize + out.len(),
            "chunks arrive in order with their offsets"
        );
        out.extend(m.data);
    }
    Ok(out)
}

async fn info(ch: &tonic::transport::Channel, ns: &str, digest: &str) -> Result<api::Info, tonic::Status> {
    Ok(ContentClient::new(ch.clone())
        .info(req(
            ns,
            None,
            api::InfoRequest {
                digest: digest.into(),
            },
        ))
        .await?
        .into_inner()
        .info
        .unwrap())
}

/// Paths under the daemon's committed-blob directory.
fn blob_files(d: &Daemon) -> Vec<std::path::PathBuf> {
    files_under(&d.root.join("content/blobs"))
}

#[tokio::test]
async fn ingest_then_read_whole_and_ranges() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let data = blob(3 << 20, 1);
    let digest = put(&ch, "default", None, "r1", &data).await.unwrap();
    assert_eq!(digest, sha256(&data));
    assert_eq!(read_all(&ch, "default", &digest, 0, 0).await.unwrap(), data);
    assert_eq!(
        read_all(&ch, "default", &digest, 1000, 10).await.unwrap(),
        &data[1000..1010]
    );
    assert_eq!(
        read_all(&ch, "default", &digest, (3 << 20) - 5, 0).await.unwrap(),
        &data[(3 << 20) - 5..]
    );
    let i = info(&ch, "default", &digest).await.unwrap();
    assert_eq!(i.size, data.len() as i64);
    let past = read_all(&ch, "default", &digest, (4 << 20) as i64, 0)
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange);
}

#[tokio::test]
async fn digest_mismatch_at_commit_stores_nothing() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let data = b"the real bytes";
    let wrong = sha256(b"other bytes");
    let (mut s, _) = Session::open(&ch, "default", None, "mismatch", 0, "")
        .await
        .unwrap();
    s.write(0, data).await.unwrap();
    let err = s.commit(data.len() as i64, 0, &wrong).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("digest") && err.message().contains(&wrong),
        "{}",
        err.message()
    );
    assert_eq!(
        info(&ch, "default", &sha256(data)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        blob_files(&d).is_empty(),
        "no blob may be visible: {:?}",
        blob_files(&d)
    );
}

#[tokio::test]
async fn size_mismatch_at_commit_stores_nothing() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let data = b"twelve bytes";
    let (mut s, _) = Session::open(&ch, "default", None, "size", 0, "").await.unwrap();
    s.write(0, data).await.unwrap();
    let err = s.commit(data.len() as i64, 99, "").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("size"), "{}", err.message());
    assert_eq!(
        info(&ch, "default", &sha256(data)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(blob_files(&d).is_empty());

    // Writing past the announced total is refused too.
    let (mut s, _) = Session::open(&ch, "default", None, "small", 4, "").await.unwrap();
    let err = s.write(0, data).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn second_writer_on_a_busy_ref_gets_an_error_naming_it() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let (mut first, _) = Session::open(&ch, "default", None, "busy-ref", 0, "")
        .await
        .unwrap();
    first.write(0, b"held").await.unwrap();
    let err = match Session::open(&ch, "default", None, "busy-ref", 0, "").await {
        Ok(_) => panic!("a second writer must be refused"),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("busy-ref"), "{}", err.message());
    // Another ref, or the same ref in another namespace, is independent.
    Session::open(&ch, "default", None, "other-ref", 0, "")
        .await
        .unwrap();
    Session::open(&ch, "elsewhere", None, "busy-ref", 0, "")
        .await
        .unwrap();
    drop(first);
    // Once the first stream is gone the ref is free again and resumes at its offset.
    let mut stat = None;
    for _ in 0..100 {
        match Session::open(&ch, "default", None, "busy-ref", 0, "").await {
            Ok((_, st)) => {
                stat = Some(st);
                break;
            }
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(stat.expect("ref released").offset, 4);
}

#[tokio::test]
async fn missing_content_is_not_found() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let missing = sha256(b"never stored");
    let mut c = ContentClient::new(ch.clone());
    assert_eq!(
        info(&ch, "default", &missing).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        read_all(&ch, "default", &missing, 0, 0).await.unwrap_err().code(),
        Code::NotFound
    );
    let e = c
        .delete(req(
            "default",
            None,
            api::DeleteContentRequest {
                digest: missing.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&missing));
    let e = c
        .status(req(
            "default",
            None,
            api::StatusRequest {
                r#ref: "no-such-ref".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let err = d.molde(&["content", "get", &missing]).fails();
    assert!(err.contains("not found") && err.contains(&missing), "{err}");
}

#[tokio::test]
async fn malformed_digests_and_filters_are_invalid_argument() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut c = ContentClient::new(ch.clone());
    for bad in [
        "",
        "sha256",
        "sha256:xyz",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "SHA256:abc",
    ] {
        let e = info(&ch, "default", bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e:?}");
    }
    let e = Session::open(&ch, "default", None, "r", 0, "sha256:nothex")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    for bad in ["name==", "labels.\"open", "==x", "digest~=("] {
        let mut s = c
            .list(req(
                "default",
                None,
                api::ListContentRequest {
                    filters: vec![bad.into()],
                },
            ))
            .await;
        let code = match &mut s {
            Err(e) => e.code(),
            Ok(r) => r.get_mut().next().await.unwrap().unwrap_err().code(),
        };
        assert_eq!(code, Code::InvalidArgument, "filter {bad:?}");
        let e = ImagesClient::new(ch.clone())
            .list(req(
                "default",
                None,
                images::ListImagesRequest {
                    filters: vec![bad.into()],
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains(bad),
            "the error names the filter: {}",
            e.message()
        );
    }
    let e = info(&ch, "bad/namespace", &sha256(b"x")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let err = d.molde(&["content", "ls", "size=="]).fails();
    assert!(err.contains("invalid filter"), "{err}");
}

#[tokio::test]
async fn ingest_resumes_from_the_reported_offset() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let data = blob(2 << 20, 7);
    let digest = sha256(&data);
    {
        let (mut s, st) = Session::open(&ch, "default", None, "resume", data.len() as i64, &digest)
            .await
            .unwrap();
        assert_eq!(st.offset, 0);
        let r = s.write(0, &data[..1 << 20]).await.unwrap();
        assert_eq!(r.offset, 1 << 20);
    }
    // The status of the abandoned ingest is visible…
    let statuses = ContentClient::new(ch.clone())
        .list_statuses(req("default", None, api::ListStatusesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .statuses;
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].r#ref.as_str(), statuses[0].offset, statuses[0].total),
        ("resume", 1 << 20, 2 << 20)
    );
    assert_eq!(statuses[0].expected, digest);
    // …and a new stream continues where it stopped.
    let (mut s, st) = loop {
        match Session::open(&ch, "default", None, "resume", 0, "").await {
            Ok(x) => break x,
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(st.offset, 1 << 20);
    assert_eq!(st.total, 2 << 20);
    let e = s.write(5, b"x").await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::OutOfRange,
        "a write away from the current offset is refused"
    );
    drop(s);
    let (mut s, _) = loop {
        match Session::open(&ch, "default", None, "resume", 0, "").await {
            Ok(x) => break x,
            Err(e) if e.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    s.write(1 << 20, &data[1 << 20..]).await.unwrap();
    let done = s.commit(2 << 20, 0, "").await.unwrap();
    assert_eq!(done.digest, digest);
    assert_eq!(read_all(&ch, "default", &digest, 0, 0).await.unwrap(), data);
}

#[tokio::test]
async fn many_refs_ingest_at_once() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut tasks = Vec::new();
    for i in 0..12u8 {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let data = blob(300_000 + i as usize * 1000, i);
            let (mut s, _) =
                Session::open(&ch, "default", None, &format!("par-{i}"), data.len() as i64, "").await?;
            let mut off = 0;
            for chunk in data.chunks(64 << 10) {
                s.write(off, chunk).await?;
                off += chunk.len() as i64;
            }
            let done = s.commit(off, 0, "").await?;
            Ok::<_, tonic::Status>((done.digest, sha256(&data)))
        }));
    }
    for t in tasks {
        let (got, want) = t.await.unwrap().unwrap();
        assert_eq!(got, want);
    }
    assert_eq!(d.molde(&["content", "ls", "-q"]).ok().lines().count(), 12);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let digest = put(&ch, "ns-a", None, "r", b"only in a").await.unwrap();
    assert!(info(&ch, "ns-a", &digest).await.is_ok());
    assert_eq!(
        info(&ch, "ns-b", &digest).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        read_all(&ch, "ns-b", &digest, 0, 0).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(
        d.molde(&["-n", "ns-b", "content", "ls", "-q"])
            .ok()
            .trim()
            .is_empty()
    );
    assert_eq!(
        d.molde(&["-n", "ns-a", "content", "ls", "-q"]).ok().trim(),
        digest
    );
    // The same bytes committed in b become visible there too, stored once on disk.
    let again = put(&ch, "ns-b", None, "r", b"only in a").await.unwrap();
    assert_eq!(again, digest);
    assert_eq!(blob_files(&d).len(), 1);
    // Committing what a namespace already has is AlreadyExists, as containerd clients expect.
    let e = put(&ch, "ns-b", None, "r2", b"only in a").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn kill9_mid_ingest_then_resume_after_restart() {
    let mut d = Daemon::start();
    let ch = d.channel().await;
    let data = blob(5 << 20, 3);
    let digest = sha256(&data);
    let (mut s, _) = Session::open(&ch, "default", None, "crash", data.len() as i64, &digest)
        .await
        .unwrap();
    s.write(0, &data[..3 << 20]).await.unwrap();
    d.kill9();
    drop(s);
    assert!(blob_files(&d).is_empty(), "a partial blob is never visible");
    d.restart();
    let ch = d.channel().await;
    let st = ContentClient::new(ch.clone())
        .status(req(
            "default",
            None,
            api::StatusRequest {
                r#ref: "crash".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.offset, 3 << 20);
    assert_eq!(
        info(&ch, "default", &digest).await.unwrap_err().code(),
        Code::NotFound
    );
    let (mut s, stat) = Session::open(&ch, "default", None, "crash", 0, "").await.unwrap();
    assert_eq!(stat.offset, 3 << 20);
    s.write(3 << 20, &data[3 << 20..]).await.unwrap();
    let done = s.commit(5 << 20, 0, "").await.unwrap();
    assert_eq!(done.digest, digest);
    assert_eq!(read_all(&ch, "default", &digest, 0, 0).await.unwrap(), data);
}

#[tokio::test]
async fn kill9_mid_ingest_then_abort_after_restart() {
    let mut d = Daemon::start();
    let ch = d.channel().await;
    let (mut s, _) = Session::open(&ch, "default", None, "doomed", 0, "")
        .await
        .unwrap();
    s.write(0, &blob(1 << 20, 9)).await.unwrap();
    d.kill9();
    drop(s);
    d.restart();
    assert!(d.molde(&["content", "active"]).ok().contains("doomed"));
    d.molde(&["content", "abort", "doomed"]).ok();
    assert!(!d.molde(&["content", "active"]).ok().contains("doomed"));
    assert!(files_under(&d.root.join("content/ingest")).is_empty());
    assert!(blob_files(&d).is_empty());
}

#[test]
fn cli_ingest_resumes_a_file_and_labels_filter() {
    let d = Daemon::start();
    let data = blob(3 << 20, 5);
    let file = d.dir.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = d.channel().await;
        let (mut s, _) = Session::open(&ch, "default", None, "cli-ref", 0, "")
            .await
            .unwrap();
        s.write(0, &data[..1 << 20]).await.unwrap();
    });
    let mut run = d.molde(&[
        "content",
        "ingest",
        "cli-ref",
        "--file",
        file.to_str().unwrap(),
        "-l",
        "team=a",
    ]);
    for _ in 0..50 {
        if run.out.status.success() || !run.stderr().contains("locked") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        run = d.molde(&[
            "content",
            "ingest",
            "cli-ref",
            "--file",
            file.to_str().unwrap(),
            "-l",
            "team=a",
        ]);
    }
    let out = run.ok();
    assert_eq!(out.trim(), sha256(&data));
    assert!(
        run.stderr().contains("resuming at byte 1048576"),
        "{}",
        run.stderr()
    );
    assert_eq!(d.molde(&["content", "get", &sha256(&data)]).out.stdout, data);

    let small = d.molde_stdin(&["content", "ingest", "small"], b"small").ok();
    let small = small.trim();
    assert_eq!(
        d.molde(&["content", "ls", "-q", "labels.team==a"]).ok().trim(),
        sha256(&data)
    );
    d.molde(&["content", "label", small, "team=b", "tier=1"]).ok();
    assert_eq!(
        d.molde(&["content", "ls", "-q", "labels.team==b"]).ok().trim(),
        small
    );
    d.molde(&["content", "label", small, "team="]).ok();
    assert!(
        d.molde(&["content", "ls", "-q", "labels.team==b"])
            .ok()
            .trim()
            .is_empty()
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.molde(&["content", "ls", "--format", "json"]).ok()).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["digest"] == small)
        .unwrap()
        .clone();
    assert_eq!(entry["size"], 5);
    assert_eq!(entry["labels"]["tier"], "1");
    assert!(entry["labels"].get("team").is_none());
    d.molde(&["content", "rm", small]).ok();
    assert!(!d.molde(&["content", "ls", "-q"]).ok().contains(small));
}

fn image(name: &str, digest: &str) -> images::Image {
    images::Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.into(),
            size: 10,
            annotations: Default::default(),
        }),
        labels: [("stage".to_string(), "test".to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn image_records_create_update_list_delete() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let mut c = ImagesClient::new(ch.clone());
    let d1 = sha256(b"one");
    let d2 = sha256(b"two");
    c.create(req(
        "default",
        None,
        images::CreateImageRequest {
            image: Some(image("example.com/a:1", &d1)),
        },
    ))
    .await
    .unwrap();
    c.create(req(
        "default",
        None,
        images::CreateImageRequest {
            image: Some(image("example.com/b:1", &d2)),
        },
    ))
    .await
    .unwrap();
    let e = c
        .create(req(
            "default",
            None,
            images::CreateImageRequest {
                image: Some(image("example.com/a:1", &d2)),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = c
        .create(req(
            "default",
            None,
            images::CreateImageRequest {
                image: Some(image("x:1", "sha256:bad")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut upd = image("example.com/a:1", &d2);
    upd.labels = [("stage".to_string(), "prod".to_string())].into();
    let got = c
        .update(req(
            "default",
            None,
            images::UpdateImageRequest {
                image: Some(upd),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.stage".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(got.labels["stage"], "prod");
    assert_eq!(
        got.target.unwrap().digest,
        d1,
        "the mask limits the update to the label"
    );

    let list = |filters: Vec<&str>| {
        let mut c = c.clone();
        let filters = filters.into_iter().map(String::from).collect();
        async move {
            c.list(req("default", None, images::ListImagesRequest { filters }))
                .await
                .unwrap()
                .into_inner()
                .images
                .into_iter()
                .map(|i| i.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(vec!["labels.stage==prod"]).await, vec!["example.com/a:1"]);
    assert_eq!(
        list(vec![&format!("target.digest=={d2}")]).await,
        vec!["example.com/b:1"]
    );
    assert_eq!(list(vec!["name~=^example.com/"]).await.len(), 2);
    assert!(list(vec![]).await.len() == 2);

    assert_eq!(
        d.molde(&["images", "ls", "-q"]).ok(),
        "example.com/a:1\nexample.com/b:1\n"
    );
    let table = d.molde(&["images", "ls"]).ok();
    assert!(
        table.starts_with("REPOSITORY") && table.contains("example.com/b") && table.contains("N/A"),
        "docker's columns; a config-less record has no created time: {table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.molde(&["images", "ls", "--format", "json"]).ok()).unwrap();
    assert_eq!(json[0]["name"], "example.com/a:1");
    assert_eq!(json[0]["target"]["digest"], d1);
    assert!(d.molde(&["-n", "other", "images", "ls", "-q"]).ok().is_empty());

    c.delete(req(
        "default",
        None,
        images::DeleteImageRequest {
            name: "example.com/a:1".into(),
            sync: false,
        },
    ))
    .await
    .unwrap();
    let e = c
        .get(req(
            "default",
            None,
            images::GetImageRequest {
                name: "example.com/a:1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .delete(req(
            "default",
            None,
            images::DeleteImageRequest {
                name: "example.com/a:1".into(),
                sync: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn a_read_past_the_end_reads_to_the_end_and_negative_ranges_are_refused() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let data = blob(3 << 20, 7);
    let digest = put(&ch, "default", None, "big-read", &data).await.unwrap();
    assert_eq!(
        read_all(&ch, "default", &digest, 1, i64::MAX).await.unwrap(),
        &data[1..]
    );
    assert_eq!(
        read_all(&ch, "default", &digest, (2 << 20) + 5, i64::MAX - 3)
            .await
            .unwrap(),
        &data[(2 << 20) + 5..]
    );
    for (offset, size) in [(-1, 0), (0, -5), (i64::MIN, i64::MAX)] {
        let err = read_all(&ch, "default", &digest, offset, size).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{offset} {size}: {err:?}");
    }
}

/// Labels are bounded per record as a whole, so a List always fits in a
/// message: ctr content ls keeps working whatever a client labelled.
#[tokio::test]
async fn the_labels_of_one_record_are_bounded_in_total() {
    let d = Daemon::start();
    let ch = d.channel().await;
    let digest = put(&ch, "default", None, "labelled", b"labelled bytes")
        .await
        .unwrap();
    let mut refused = None;
    for i in 0..100 {
        let key = format!("example.com/k{i}");
        let r = ContentClient::new(ch.clone())
            .update(req(
                "default",
                None,
                api::UpdateRequest {
                    info: Some(api::Info {
                        digest: digest.clone(),
                        labels: [(key.clone(), "v".repeat(4000))].into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec![format!("labels.{key}")],
                    }),
                },
            ))
            .await;
        if let Err(e) = r {
            refused = Some((i, e));
            break;
        }
    }
    let (i, err) = refused.expect("a limit on the labels of one record");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("65536"), "{}", err.message());
    assert!(i > 10, "ordinary label sets fit: refused after {i}");
    let info = info(&ch, "default", &digest).await.unwrap();
    assert_eq!(info.labels.len(), i, "the refused update changed nothing");
    let out = d.ctr(&["content", "ls"]).ok();
    assert!(out.contains(&digest), "{out}");
}
