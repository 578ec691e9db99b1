//! Pulls that go wrong: missing tags, auth, corrupt blobs, registry errors,
//! broken and slow connections, bad manifests, a daemon killed mid-pull, and
//! platform choice in an index. The registry is real; faults are injected by a
//! proxy in front of it (`harness/faults.rs`).

use std::time::Duration;

use molde_tests::faults::{FaultProxy, Faults};
use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
use molde_tests::registry::Registry;
use molde_tests::{Daemon, eventually, files_under, sha256};

fn pushed(reg: &Registry, repo: &str) -> image::Layout {
    let tmp = tempfile::tempdir().unwrap().keep();
    let big: Vec<u8> = (0..4_000_000u32)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let layers = vec![
        tar(&busybox_rootfs()),
        tar(&[
            Entry::Dir("data", 0o755),
            Entry::File("data/big".into(), big, 0o644),
        ]),
    ];
    let l = image::layout(&tmp.join("oci"), &layers, Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, repo);
    l
}

#[test]
fn unknown_tag_is_not_found_naming_the_reference() {
    let reg = Registry::start();
    let d = Daemon::start();
    let reference = format!("{}/nothing/here:1", reg.host);
    let err = d.molde(&["pull", &reference]).fails();
    assert!(err.contains(&reference), "{err}");
    assert!(
        err.to_lowercase().contains("unknown") || err.contains("not found"),
        "{err}"
    );
    assert!(d.molde(&["images", "-q"]).ok().is_empty());
}

#[test]
fn registry_with_basic_auth_needs_login() {
    let reg = Registry::start_with_auth("alice", "s3cret");
    pushed(&reg, "private/app:1");
    let d = Daemon::start();
    let home = tempfile::tempdir().unwrap();
    let reference = format!("{}/private/app:1", reg.host);
    let molde = |args: &[&str], stdin: &[u8]| {
        let mut c = std::process::Command::new(molde_tests::bin("molde"));
        c.env("MOLDE_ADDRESS", &d.sock)
            .env("HOME", home.path())
            .args(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = molde(&["pull", &reference], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reference) && err.to_lowercase().contains("auth"),
        "{err}"
    );

    let out = molde(
        &["login", &reg.host, "-u", "alice", "--password-stdin"],
        b"wrong\n",
    );
    assert!(
        !out.status.success(),
        "the registry refuses a wrong password at login"
    );
    let out = molde(&["pull", &reference], b"");
    assert!(!out.status.success(), "nothing was stored to pull with");

    assert!(
        molde(
            &["login", &reg.host, "-u", "alice", "--password-stdin"],
            b"s3cret\n"
        )
        .status
        .success()
    );
    let cfg = std::fs::read_to_string(home.path().join(".docker/config.json")).unwrap();
    assert!(cfg.contains(&reg.host));
    let out = molde(&["pull", &reference], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(molde(&["logout", &reg.host], b"").status.success());
    assert!(
        !std::fs::read_to_string(home.path().join(".docker/config.json"))
            .unwrap()
            .contains(&reg.host)
    );
}

#[test]
fn corrupt_layer_in_the_registry_fails_the_pull_and_commits_nothing() {
    let reg = Registry::start();
    let l = pushed(&reg, "bad/app:1");
    // Flip bytes of the big layer where the registry stores it.
    let (bad, _) = &l.layers[1];
    let data = files_under(&reg.data_dir())
        .into_iter()
        .find(|p| p.ends_with("data") && p.parent().unwrap().ends_with(&bad[7..]))
        .expect("the layer's file in the registry");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let d = Daemon::start();
    let reference = format!("{}/bad/app:1", reg.host);
    let err = d.molde(&["pull", &reference]).fails();
    assert!(err.contains(&reference) && err.contains(bad.as_str()), "{err}");
    assert!(d.molde(&["images", "-q"]).ok().is_empty(), "no image record");
    assert!(
        !d.molde(&["content", "ls", "-q"]).ok().contains(bad.as_str()),
        "the bad blob is not committed"
    );
    let blobs = files_under(&d.root.join("content/blobs"));
    assert!(
        !blobs.iter().any(|p| p.ends_with(&bad[7..])),
        "nothing visible under blobs/"
    );
}

#[test]
fn registry_errors_are_reported_after_retries() {
    let reg = Registry::start();
    pushed(&reg, "flaky/app:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.set(Faults {
        blob_status: Some(500),
        ..Default::default()
    });
    let d = Daemon::start();
    let reference = format!("{}/flaky/app:1", proxy.host);
    let err = d.molde(&["pull", &reference]).fails();
    assert!(err.contains(&reference) && err.contains("500"), "{err}");
    let blob_gets = proxy.requests().iter().filter(|r| r.contains("/blobs/")).count();
    assert!(
        blob_gets > 2,
        "the failing blob is retried: {:#?}",
        proxy.requests()
    );
    assert!(d.molde(&["images", "-q"]).ok().is_empty());
}

#[test]
fn broken_downloads_resume_with_range_requests() {
    let reg = Registry::start();
    let l = pushed(&reg, "cut/app:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.set(Faults {
        cut_blobs: Some((2, 300_000)),
        ..Default::default()
    });
    let d = Daemon::start();
    let reference = format!("{}/cut/app:1", proxy.host);
    d.molde(&["pull", "-q", &reference]).ok();
    let resumed: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| {
            r.contains("/blobs/") && r.to_lowercase().contains("range: bytes=") && !r.contains("bytes=0-")
        })
        .collect();
    assert!(
        !resumed.is_empty(),
        "a broken download continues where it broke: {:#?}",
        proxy.requests()
    );
    assert!(d.molde(&["content", "ls", "-q"]).ok().contains(&l.layers[1].0));
}

#[test]
fn manifests_with_a_wrong_media_type_or_too_big_are_refused() {
    let reg = Registry::start();
    pushed(&reg, "m/app:1");
    let proxy = FaultProxy::start(&reg.host);
    let d = Daemon::start();
    let reference = format!("{}/m/app:1", proxy.host);
    proxy.set(Faults {
        manifest: Some((
            "text/html".into(),
            br#"{"mediaType":"text/html","config":{}}"#.to_vec(),
        )),
        ..Default::default()
    });
    let err = d.molde(&["pull", &reference]).fails();
    assert!(err.contains(&reference) && err.contains("text/html"), "{err}");
    let huge = format!(
        r#"{{"schemaVersion":2,"config":{{}},"pad":"{}"}}"#,
        "x".repeat(5 << 20)
    );
    proxy.set(Faults {
        manifest: Some((
            "application/vnd.oci.image.manifest.v1+json".into(),
            huge.into_bytes(),
        )),
        ..Default::default()
    });
    let err = d.molde(&["pull", &reference]).fails();
    assert!(err.contains(&reference) && err.contains("limit"), "{err}");
}

#[test]
fn kill9_mid_pull_then_the_pull_completes_reusing_what_was_verified() {
    let reg = Registry::start();
    let l = pushed(&reg, "slow/app:1");
    let proxy = FaultProxy::start(&reg.host);
    proxy.set(Faults {
        slow: Some(Duration::from_millis(30)),
        ..Default::default()
    });
    let mut d = Daemon::start();
    let reference = format!("{}/slow/app:1", proxy.host);
    let pull = std::process::Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &d.sock)
        .args(["pull", "-q", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the big layer is partly downloaded, then crash the daemon.
    eventually(60, "a partial download", || {
        files_under(&d.root.join("content/ingest"))
            .iter()
            .any(|p| p.ends_with("data") && std::fs::metadata(p).map(|m| m.len() > 100_000).unwrap_or(false))
    });
    d.kill9();
    let out = pull.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("molded went away") && said.contains("resumes") && !said.contains("h2 protocol"),
        "the CLI says what happened and what to do: {said}"
    );
    let blobs_before: Vec<_> = files_under(&d.root.join("content/blobs"));
    proxy.set(Faults::default());
    d.restart();
    let before = proxy.requests().len();
    d.molde(&["pull", "-q", &reference]).ok();
    let after: Vec<String> = proxy.requests()[before..].to_vec();
    for b in &blobs_before {
        let digest = b.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            !after.iter().any(|r| r.contains(&digest)),
            "{digest} was verified before the crash and is not fetched again: {after:#?}"
        );
    }
    assert!(
        after.iter().any(|r| r.contains("/blobs/")
            && r.to_lowercase().contains("range: bytes=")
            && !r.contains("bytes=0-")),
        "the partial layer resumes from its offset: {after:#?}"
    );
    assert!(d.molde(&["content", "ls", "-q"]).ok().contains(&l.layers[1].0));
    assert!(d.log_text().contains("resuming download"));
    assert!(d.molde(&["images", "-q"]).ok().contains(&reference));
}

#[test]
fn an_index_pulls_the_requested_platform() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    // Two single-platform layouts, combined into one multi-platform index.
    let mut manifests = Vec::new();
    let dir = tmp.path().join("index");
    for arch in ["amd64", "arm64"] {
        let layer = tar(&[
            Entry::Dir("etc", 0o755),
            Entry::File("etc/arch".into(), arch.as_bytes().to_vec(), 0o644),
        ]);
        let l = image::layout(&dir, &[layer], Compression::Gzip, arch);
        let size = std::fs::metadata(dir.join("blobs/sha256").join(&l.manifest_digest[7..]))
            .unwrap()
            .len();
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": l.manifest_digest,
            "size": size,
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index_digest = push_index(&reg, &dir, manifests, "multi/app:1");

    let d = Daemon::start();
    let reference = format!("{}/multi/app:1", reg.host);
    let other = if host_arch() == "amd64" { "arm64" } else { "amd64" };
    d.molde(&["pull", "-q", "--platform", &format!("linux/{other}"), &reference])
        .ok();
    let inspect = d.molde(&["inspect", &reference]);
    // inspect shows the host platform's manifest, which was not pulled…
    assert!(!inspect.out.status.success());
    // …while the requested platform's layer was: the image points at the index.
    let images: serde_json::Value =
        serde_json::from_str(&d.molde(&["images", "--format", "json"]).ok()).unwrap();
    assert_eq!(images[0]["target"]["digest"], index_digest);
    let layer_other = sha256(&image::gzip(&tar(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/arch".into(), other.as_bytes().to_vec(), 0o644),
    ])));
    assert!(d.molde(&["content", "ls", "-q"]).ok().contains(&layer_other));
    let err = d
        .molde(&["pull", "--platform", "linux/s390x", &reference])
        .fails();
    assert!(
        err.contains("linux/s390x") && err.contains("amd64") && err.contains("arm64"),
        "{err}"
    );
}

/// An index of `linux/arm/v6`, `linux/arm/v7`, `linux/arm64/v8` and the host's
/// platform, in that order: pull, run, FROM in a build and inspect all pick
/// the host's manifest; `--platform linux/arm/v7` picks v7, never v6.
#[test]
fn every_part_of_molde_picks_the_same_manifest_from_an_index() {
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let host = format!("linux/{}", host_arch());
    let mut entries = Vec::new();
    let mut digests = std::collections::HashMap::new();
    for (arch, variant) in [
        ("arm", Some("v6")),
        ("arm", Some("v7")),
        ("arm64", Some("v8")),
        (host_arch(), None),
    ] {
        let name = match variant {
            Some(v) => format!("linux/{arch}/{v}"),
            None => host.clone(),
        };
        if name != host && arch == host_arch() {
            continue;
        }
        let marker = tar(&[
            Entry::Dir("etc", 0o755),
            Entry::File("etc/platform".into(), format!("{name}\n").into_bytes(), 0o644),
        ]);
        let layers = if name == host {
            vec![tar(&busybox_rootfs()), marker]
        } else {
            vec![marker]
        };
        let l = image::layout(&dir, &layers, Compression::Gzip, arch);
        let size = std::fs::metadata(dir.join("blobs/sha256").join(&l.manifest_digest[7..]))
            .unwrap()
            .len();
        let mut platform = serde_json::json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": l.manifest_digest,
            "size": size,
            "platform": platform,
        }));
        digests.insert(name, l.manifest_digest);
    }
    push_index(&reg, &dir, entries, "many/app:1");
    let reference = format!("{}/many/app:1", reg.host);

    let d = Daemon::start();
    d.molde(&["pull", "-q", &reference]).ok();
    let content = d.molde(&["content", "ls", "-q"]).ok();
    assert!(content.contains(&digests[&host]), "pull took the host's manifest");
    for (name, digest) in &digests {
        if *name != host {
            assert!(
                !content.contains(digest.as_str()),
                "pull took {name}'s manifest too"
            );
        }
    }
    assert_eq!(
        d.run_image(&reference, &["cat", "/etc/platform"]),
        format!("{host}\n")
    );
    let inspect: serde_json::Value = d.inspect(&reference);
    assert_eq!(inspect["ManifestDigest"], digests[&host]);
    let ctx = d.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {reference}\nRUN cp /etc/platform /seen\n"),
    )
    .unwrap();
    d.molde(&["build", "-q", "-t", "localhost/from-index", ctx.to_str().unwrap()])
        .ok();
    assert_eq!(
        d.run_image("localhost/from-index", &["cat", "/seen"]),
        format!("{host}\n")
    );

    d.molde(&["pull", "-q", "--platform", "linux/arm/v7", &reference])
        .ok();
    let content = d.molde(&["content", "ls", "-q"]).ok();
    assert!(content.contains(&digests["linux/arm/v7"]), "v7 asked, v7 taken");
    assert!(
        !content.contains(&digests["linux/arm/v6"]),
        "v6 never taken for v7"
    );
}

/// Writes an OCI index of `manifests` into the layout at `dir` (tagged
/// `latest`) and pushes every platform of it to `reg` as `repo`; returns the
/// index's digest.
fn push_index(
    reg: &Registry,
    dir: &std::path::Path,
    manifests: Vec<serde_json::Value>,
    repo: &str,
) -> String {
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let index_digest = sha256(&index);
    std::fs::write(dir.join("blobs/sha256").join(&index_digest[7..]), &index).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
        .unwrap(),
    )
    .unwrap();
    let out = reg.skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", dir.display()),
        &format!("docker://{}/{repo}", reg.host),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    index_digest
}
