//! Cluster mode: molded nodes registered in a real etcd (Debian's
//! etcd-server, on loopback ports of the test's own).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use molde_meta::{Compare, EtcdStore, Event, Store, Txn, TxnOutcome};
use molde_tests::Daemon;
use molde_tests::registry::free_port;

/// An etcd member of its own: a data directory, a client and a peer port.
struct Etcd {
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    fn start() -> Etcd {
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            client: free_port(),
            peer: free_port(),
            child: None,
        };
        e.spawn();
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let data: PathBuf = self.dir.path().join("data");
        let child = Command::new(molde_tests::require("etcd"))
            .args(["--name", "t", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.client);
        molde_tests::eventually(20, "etcd to answer", || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn etcd_behind_the_store_trait_gets_ranges_compares_and_watches() {
    let etcd = Etcd::start();
    let s = EtcdStore::connect(&[etcd.url()]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut watch = s.watch("/molde/t/");
    // Writes only when the key is absent, then only at its revision.
    let first = s
        .txn(
            Txn::new()
                .when(Compare::absent("/molde/t/a"))
                .put("/molde/t/a", b"1".to_vec()),
        )
        .unwrap();
    let TxnOutcome::Committed { revision } = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        s.txn(
            Txn::new()
                .when(Compare::absent("/molde/t/a"))
                .put("/molde/t/a", b"x".to_vec())
        )
        .unwrap(),
        TxnOutcome::CompareFailed
    );
    let a = s.get("/molde/t/a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (b"1".as_slice(), revision));
    s.txn(
        Txn::new()
            .when(Compare::ModRevision("/molde/t/a".into(), revision))
            .put("/molde/t/a", b"2".to_vec())
            .put("/molde/t/c", b"3".to_vec())
            .put("/molde/t/b", b"4".to_vec()),
    )
    .unwrap();
    let keys: Vec<String> = s.range("/molde/t/").unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, ["/molde/t/a", "/molde/t/b", "/molde/t/c"]);
    s.txn(Txn::new().delete_prefix("/molde/t/")).unwrap();
    assert!(s.range("/molde/t/").unwrap().is_empty());
    assert!(s.get("/molde/t/a").unwrap().is_none());
    // The watch saw each write and the deletes, in order.
    let seen: Vec<String> = rt.block_on(async {
        let mut seen = Vec::new();
        while seen.len() < 7 {
            match tokio::time::timeout(Duration::from_secs(10), watch.recv()).await {
                Ok(Some(Event::Put(e))) => seen.push(format!("put {}", e.key)),
                Ok(Some(Event::Delete { key, .. })) => seen.push(format!("delete {key}")),
                _ => break,
            }
        }
        seen
    });
    assert_eq!(
        seen,
        [
            "put /molde/t/a",
            "put /molde/t/a",
            "put /molde/t/c",
            "put /molde/t/b",
            "delete /molde/t/a",
            "delete /molde/t/b",
            "delete /molde/t/c"
        ]
    );
    // A lease's keys go with it.
    let lease = s.grant(Duration::from_secs(5)).unwrap();
    s.put_leased("/molde/t/leased", b"x".to_vec(), lease).unwrap();
    assert!(s.keep_alive(lease).unwrap());
    s.revoke(lease).unwrap();
    assert!(s.get("/molde/t/leased").unwrap().is_none());
    assert!(!s.keep_alive(lease).unwrap(), "a revoked lease is gone");
}

/// `molde ARGS` with no daemon (the cluster's certificates), which must succeed.
fn molde_cli(args: &[&str]) {
    let out = Command::new(molde_tests::bin("molde"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "molde {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node(etcd: &Etcd, name: &str) -> Daemon {
    let mut d = Daemon::prepare(&[]);
    d.args(&[
        "--cluster".into(),
        format!("etcd={}", etcd.url()),
        "--node-name".into(),
        name.into(),
        "--advertise".into(),
        format!("127.0.0.1:{}", free_port()),
    ]);
    d.spawn();
    d
}

fn names(d: &Daemon) -> Vec<String> {
    let r = d.molde(&["node", "ls"]);
    if !r.out.status.success() {
        return vec![format!("error: {}", r.stderr())];
    }
    r.stdout()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn nodes_register_drop_out_and_register_again_after_an_etcd_outage() {
    let mut etcd = Etcd::start();
    let a = node(&etcd, "node-a");
    let mut b = node(&etcd, "node-b");
    molde_tests::eventually(20, "both nodes listed", || names(&a) == ["node-a", "node-b"]);
    let table = a.molde(&["node", "ls"]).ok();
    assert!(table.contains("node-a *"), "this node is marked:\n{table}");

    // A node that stops renewing drops out by itself.
    b.kill9();
    molde_tests::eventually(30, "node-b to drop out", || names(&a) == ["node-a"]);

    // etcd away: local work goes on; cluster commands say what is wrong.
    etcd.stop();
    let err = a.molde(&["node", "ls"]).fails();
    assert!(err.contains("etcd"), "{err}");
    a.molde(&["images"]).ok();
    a.molde(&["content", "ls"]).ok();
    // Away for longer than a lease: the node's record is gone with it.
    std::thread::sleep(Duration::from_secs(12));
    etcd.spawn();
    molde_tests::eventually(30, "node-a to register again", || names(&a) == ["node-a"]);

    // A molded on its own is no cluster's node.
    let alone = Daemon::start();
    let err = alone.molde(&["node", "ls"]).fails();
    assert!(err.contains("not part of a cluster"), "{err}");
}

#[test]
fn peers_read_content_over_mutual_tls_and_strangers_are_refused() {
    use molde_api::containerd::services::content::v1::ReadContentRequest;
    use molde_api::containerd::services::content::v1::content_client::ContentClient;
    use molde_cluster::certs::Identity;

    let etcd = Etcd::start();
    let dirs = tempfile::tempdir().unwrap();
    let (ours, theirs) = (dirs.path().join("ours"), dirs.path().join("theirs"));
    let s = |p: &std::path::Path| p.display().to_string();
    molde_cli(&["cluster", "init", "--dir", &s(&ours)]);
    for n in ["node-a", "node-x"] {
        molde_cli(&["cluster", "join", "--dir", &s(&ours), "--node-name", n]);
    }
    // Another cluster's CA, and a node of it with the same name.
    molde_cli(&["cluster", "init", "--dir", &s(&theirs)]);
    molde_cli(&["cluster", "join", "--dir", &s(&theirs), "--node-name", "node-x"]);

    let addr = format!("127.0.0.1:{}", free_port());
    let mut a = Daemon::prepare(&[]);
    a.args(&[
        "--cluster".into(),
        format!("etcd={}", etcd.url()),
        "--node-name".into(),
        "node-a".into(),
        "--advertise".into(),
        addr.clone(),
        "--cluster-certs".into(),
        s(&ours),
    ]);
    a.spawn();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let digest = a
        .molde_stdin(
            &[
                "content",
                "ingest",
                "-l",
                "containerd.io/gc.root=test",
                "peer-blob",
            ],
            &data,
        )
        .ok()
        .trim()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = |id: &Identity, offset: i64, size: i64| -> Result<Vec<u8>, String> {
        rt.block_on(async {
            let ch = molde_cluster::peer::channel(id, "node-a", &addr)?;
            let mut stream = ContentClient::new(ch)
                .read(molde_api::client::namespaced(
                    "default",
                    ReadContentRequest {
                        digest: digest.clone(),
                        offset,
                        size,
                    },
                ))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = stream.message().await.map_err(|e| e.to_string())? {
                out.extend_from_slice(&m.data);
            }
            Ok(out)
        })
    };
    // A node of this cluster reads the blob, whole and by range.
    let member = Identity::load(&ours, "node-x").unwrap();
    assert!(read(&member, 0, 0).unwrap() == data, "the whole blob");
    assert_eq!(
        read(&member, 1 << 20, 1000).unwrap(),
        &data[1 << 20..(1 << 20) + 1000]
    );
    // A node of another cluster is refused.
    let stranger = Identity::load(&theirs, "node-x").unwrap();
    let err = read(&stranger, 0, 0).unwrap_err();
    assert!(!err.is_empty());
    // And so is a client with no certificate at all.
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_rustls::rustls;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(member.ca[0].clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("node-a").unwrap();
        // TLS 1.3: the server's refusal comes with the first read.
        let refused = match tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
        {
            Err(_) => true,
            Ok(mut tls) => {
                let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let mut buf = [0u8; 64];
                !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
            }
        };
        assert!(refused, "a client without a certificate got an answer");
    });
}

/// A cluster of two whose nodes hold certificates of its CA.
fn certified_node(etcd: &Etcd, certs: &std::path::Path, name: &str) -> Daemon {
    molde_cli(&[
        "cluster",
        "join",
        "--dir",
        &certs.display().to_string(),
        "--node-name",
        name,
    ]);
    let mut d = Daemon::prepare(&[]);
    d.args(&[
        "--cluster".into(),
        format!("etcd={}", etcd.url()),
        "--node-name".into(),
        name.into(),
        "--advertise".into(),
        format!("127.0.0.1:{}", free_port()),
        "--cluster-certs".into(),
        certs.display().to_string(),
    ]);
    d.spawn();
    d
}

/// The registry's blob requests that moved bytes (not HEADs).
fn blob_gets(proxy: &molde_tests::faults::FaultProxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
        .collect()
}

#[test]
fn a_layer_another_node_holds_comes_from_it_not_from_the_registry() {
    use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
    let etcd = Etcd::start();
    let certs = tempfile::tempdir().unwrap();
    molde_cli(&["cluster", "init", "--dir", &certs.path().display().to_string()]);
    let reg = molde_tests::registry::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..2_000_000u32)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    let layers = vec![
        tar(&busybox_rootfs()),
        tar(&[
            Entry::Dir("data", 0o755),
            Entry::File("data/big".into(), big, 0o644),
        ]),
    ];
    let l = image::layout(&tmp.path().join("oci"), &layers, Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, "shared/app:1");
    let proxy = molde_tests::faults::FaultProxy::start(&reg.host);
    let reference = format!("{}/shared/app:1", proxy.host);

    let a = certified_node(&etcd, certs.path(), "node-a");
    let b = certified_node(&etcd, certs.path(), "node-b");
    a.molde(&["pull", "-q", &reference]).ok();
    let from_registry = blob_gets(&proxy);
    for (digest, _) in &l.layers {
        assert!(
            from_registry.iter().any(|r| r.contains(digest.as_str())),
            "node-a took {digest} from the registry: {from_registry:#?}"
        );
    }
    // node-a's index reaches etcd on its next renewal.
    molde_tests::eventually(20, "node-a to publish its layers", || {
        let s = EtcdStore::connect(&[etcd.url()]).unwrap();
        l.layers.iter().all(|(d, _)| {
            s.get(&format!("/molde/blobs/{d}/node-a"))
                .is_ok_and(|e| e.is_some())
        })
    });
    b.molde(&["pull", "-q", &reference]).ok();
    let after = blob_gets(&proxy);
    let layer_gets = |reqs: &[String]| {
        reqs.iter()
            .filter(|r| l.layers.iter().any(|(d, _)| r.contains(d.as_str())))
            .count()
    };
    assert_eq!(
        layer_gets(&after),
        layer_gets(&from_registry),
        "node-b asked the registry for a layer node-a holds: {after:#?}"
    );
    // What node-b got is the image: it runs, and the big file is whole.
    let sum = |d: &Daemon| {
        d.molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            &reference,
            "sh",
            "-c",
            "ls -l /data/big",
        ])
        .ok()
    };
    let expected = sum(&a);
    assert_eq!(sum(&b), expected);
    assert!(
        b.log_text().contains("blob taken from a peer"),
        "{}",
        b.log_text()
    );

    // Any command on another node, through the peer transport.
    let certs_dir = certs.path().display().to_string();
    let digest_on_a = a
        .molde_stdin(
            &["content", "ingest", "-l", "containerd.io/gc.root=t", "only-on-a"],
            b"only on node-a",
        )
        .ok();
    let listed = b
        .molde(&[
            "--node",
            "node-a",
            "--cluster-certs",
            &certs_dir,
            "content",
            "ls",
            "-q",
        ])
        .ok();
    assert!(listed.contains(digest_on_a.trim()), "{listed}");
    assert!(
        !b.molde(&["content", "ls", "-q"])
            .ok()
            .contains(digest_on_a.trim())
    );
    let all = b
        .molde(&["--all-nodes", "--cluster-certs", &certs_dir, "images"])
        .ok();
    assert!(
        all.contains("== node-a ==") && all.contains("== node-b =="),
        "{all}"
    );
    assert_eq!(all.matches("shared/app").count(), 2, "{all}");
    let err = b
        .molde(&["--node", "node-z", "--cluster-certs", &certs_dir, "images"])
        .fails();
    assert!(err.contains("node-z"), "{err}");

    // A peer that serves wrong bytes: node-a's copy of the big layer is
    // damaged on disk, node-b is gone; node-c catches it at the digest and
    // takes the layer from the registry.
    let mut b = b;
    b.kill9();
    let (big, _) = &l.layers[1];
    molde_tests::eventually(30, "node-b's index entries to expire", || {
        let s = EtcdStore::connect(&[etcd.url()]).unwrap();
        s.get(&format!("/molde/blobs/{big}/node-b"))
            .is_ok_and(|e| e.is_none())
    });
    let file = a
        .root
        .join("content/blobs/sha256")
        .join(big.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let before = layer_gets(&blob_gets(&proxy));
    let c = certified_node(&etcd, certs.path(), "node-c");
    c.molde(&["pull", "-q", &reference]).ok();
    assert!(
        c.log_text().contains("do not match the digest"),
        "node-c did not see the bad copy: {}",
        c.log_text()
    );
    assert_eq!(
        layer_gets(&blob_gets(&proxy)),
        before + 1,
        "the bad layer came from the registry"
    );
    assert_eq!(sum(&c), expected);
}

/// Three nodes pull the same image at the same moment: each layer leaves the
/// registry once; the nodes that did not download it read it from the one
/// that did.
#[test]
fn three_nodes_pulling_at_once_take_each_layer_from_the_registry_once() {
    use molde_tests::image::{self, Compression, Entry, busybox_rootfs, host_arch, tar};
    let etcd = Etcd::start();
    let certs = tempfile::tempdir().unwrap();
    molde_cli(&["cluster", "init", "--dir", &certs.path().display().to_string()]);
    let reg = molde_tests::registry::Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let layer = |seed: u32| -> Vec<u8> {
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i ^ seed).wrapping_mul(2654435761).to_le_bytes())
            .collect();
        tar(&[
            Entry::Dir("data", 0o755),
            Entry::File(format!("data/{seed}"), data, 0o644),
        ])
    };
    let layers = vec![tar(&busybox_rootfs()), layer(1), layer(2)];
    let l = image::layout(&tmp.path().join("oci"), &layers, Compression::Gzip, host_arch());
    reg.push_layout(&l.dir, "together/app:1");
    let proxy = molde_tests::faults::FaultProxy::start(&reg.host);
    // Slow enough that the three pulls overlap.
    proxy.set(molde_tests::faults::Faults {
        slow: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let reference = format!("{}/together/app:1", proxy.host);
    let nodes: Vec<Daemon> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| certified_node(&etcd, certs.path(), n))
        .collect();
    molde_tests::eventually(20, "three nodes registered", || names(&nodes[0]).len() == 3);
    std::thread::scope(|s| {
        for d in &nodes {
            let r = reference.clone();
            s.spawn(move || d.molde(&["pull", "-q", &r]).ok());
        }
    });
    let gets = blob_gets(&proxy);
    for (digest, _) in &l.layers {
        let n = gets.iter().filter(|r| r.contains(digest.as_str())).count();
        assert_eq!(n, 1, "{digest} left the registry {n} times: {gets:#?}");
    }
    for d in &nodes {
        d.molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            &reference,
            "ls",
            "/data/1",
            "/data/2",
        ])
        .ok();
    }
}
