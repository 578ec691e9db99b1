//! Cluster mode: molded nodes on "hosts" of their own — network namespaces
//! on a bridge of the test's (`molde_tests::hosts`), each with its own
//! molded, root and state — a real etcd (Debian's etcd-server) on a fourth,
//! and a registry on the machine's side of the bridge.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use molde_meta::{Compare, EtcdStore, Event, Store, Txn, TxnOutcome};
use molde_tests::Daemon;
use molde_tests::faults::FaultProxy;
use molde_tests::hosts::{Host, Lan};
use molde_tests::image::{self, Compression, Entry, Layout, busybox_rootfs, host_arch, tar};
use molde_tests::registry::{Registry, free_port};

/// An etcd member of its own: a data directory, a client and a peer port,
/// on loopback or on a host of a `Lan`.
struct Etcd {
    dir: tempfile::TempDir,
    host: Option<Host>,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    fn start() -> Etcd {
        Self::start_on(None)
    }

    fn start_on(host: Option<Host>) -> Etcd {
        let (client, peer) = match host {
            Some(_) => (2379, 2380),
            None => (free_port(), free_port()),
        };
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            host,
            client,
            peer,
            child: None,
        };
        e.spawn();
        e
    }

    fn ip(&self) -> String {
        self.host.as_ref().map_or("127.0.0.1".into(), |h| h.ip.clone())
    }

    fn url(&self) -> String {
        format!("http://{}:{}", self.ip(), self.client)
    }

    fn store(&self) -> EtcdStore {
        EtcdStore::connect(&[self.url()]).unwrap()
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://{}:{}", self.ip(), self.peer);
        let data: PathBuf = self.dir.path().join("data");
        let etcd = molde_tests::require("etcd");
        let mut c = match &self.host {
            Some(h) => h.command(etcd),
            None => Command::new(etcd),
        };
        let child = c
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
        let addr = format!("{}:{}", self.ip(), self.client);
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

/// The port each node's peers reach it on (each node has its own address).
const PEER_PORT: u16 = 7443;
/// Where each node serves its metrics, on its own host's address.
const METRICS_PORT: u16 = 1338;

/// A molded on a host of its own.
struct Node {
    d: Daemon,
    host: Host,
}

impl Deref for Node {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

impl DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.d
    }
}

impl Node {
    fn address(&self) -> String {
        format!("{}:{PEER_PORT}", self.host.ip)
    }
}

/// Hosts on one LAN: etcd on one of them, the registry on the machine's
/// side (behind a proxy that counts what it is asked for), a cluster CA,
/// and the nodes the test adds.
struct Cluster {
    etcd: Etcd,
    /// Where every node sends its traces.
    traces: molde_tests::otlp::Collector,
    proxy: FaultProxy,
    reg: Registry,
    certs: tempfile::TempDir,
    hosts_dir: tempfile::TempDir,
    tmp: tempfile::TempDir,
    /// Last: dropped after everything that runs on it.
    lan: Lan,
}

impl Cluster {
    fn new() -> Cluster {
        let mut lan = Lan::new();
        let etcd = Etcd::start_on(Some(lan.host("etcd")));
        let certs = tempfile::tempdir().unwrap();
        molde_cli(&["cluster", "init", "--dir", &certs.path().display().to_string()]);
        let reg = Registry::start();
        let proxy = FaultProxy::start_on(&lan.gateway(), &reg.host);
        let traces = molde_tests::otlp::Collector::start_on(&lan.gateway());
        // The registry is not on loopback for the nodes: plain HTTP by configuration.
        let hosts_dir = tempfile::tempdir().unwrap();
        let d = hosts_dir.path().join(&proxy.host);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("hosts.toml"), "plain_http = true\n").unwrap();
        Cluster {
            etcd,
            traces,
            proxy,
            reg,
            certs,
            hosts_dir,
            tmp: tempfile::tempdir().unwrap(),
            lan,
        }
    }

    fn certs(&self) -> String {
        self.certs.path().display().to_string()
    }

    /// A new host on the LAN with a molded of the cluster on it (its
    /// certificate from the cluster's CA unless `certs` names another).
    fn node(&mut self, name: &str) -> Node {
        let certs = self.certs();
        self.node_with(name, &certs)
    }

    fn node_with(&mut self, name: &str, certs: &str) -> Node {
        self.node_with_args(name, certs, &[])
    }

    fn node_with_args(&mut self, name: &str, certs: &str, extra: &[&str]) -> Node {
        if !Path::new(certs).join(format!("{name}.key")).exists() {
            molde_cli(&["cluster", "join", "--dir", certs, "--node-name", name]);
        }
        let host = self.lan.host(name);
        let mut d = Daemon::prepare(&[]);
        let config = d.dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[registry]\nconfig_path = {:?}\n[metrics]\naddress = \"{}:{METRICS_PORT}\"\n\
                 [tracing]\notlp_endpoint = \"{}\"\n",
                self.hosts_dir.path(),
                host.ip,
                self.traces.endpoint
            ),
        )
        .unwrap();
        d.args(&[
            "--config".into(),
            config.display().to_string(),
            "--cluster".into(),
            format!("etcd={}", self.etcd.url()),
            "--node-name".into(),
            name.into(),
            "--advertise".into(),
            format!("{}:{PEER_PORT}", host.ip),
            "--cluster-certs".into(),
            certs.into(),
        ]);
        d.args(&extra.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        d.on_host(&host);
        d.spawn();
        Node { d, host }
    }

    /// A molded on a new host `host` calling itself `name` (advertising
    /// `advertise`, its host's address by default) that is expected to
    /// fail at start: its log.
    fn failing_node(&mut self, host: &str, name: &str, advertise: Option<String>) -> String {
        let host = self.lan.host(host);
        let mut d = Daemon::prepare(&[]);
        d.args(&[
            "--cluster".into(),
            format!("etcd={}", self.etcd.url()),
            "--node-name".into(),
            name.into(),
            "--advertise".into(),
            advertise.unwrap_or_else(|| format!("{}:{PEER_PORT}", host.ip)),
            "--cluster-certs".into(),
            self.certs(),
        ]);
        d.on_host(&host);
        d.spawn_failing()
    }

    /// Pushes an image of `layers` (busybox first) as `repo_tag`; returns
    /// its layout and the reference the nodes pull.
    fn push(&self, repo_tag: &str, layers: &[Vec<u8>]) -> (Layout, String) {
        let mut all = vec![tar(&busybox_rootfs())];
        all.extend_from_slice(layers);
        let dir = self.tmp.path().join(repo_tag.replace([':', '/'], "-"));
        let l = image::layout(&dir, &all, Compression::Gzip, host_arch());
        self.reg.push_layout(&l.dir, repo_tag);
        (l, format!("{}/{repo_tag}", self.proxy.host))
    }

    /// The registry's blob requests that moved bytes (not HEADs).
    fn blob_gets(&self) -> Vec<String> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| r.starts_with("GET ") && r.contains("/blobs/"))
            .collect()
    }

    /// The registry's blob requests for `digest` that moved bytes.
    fn gets_of(&self, digest: &str) -> Vec<String> {
        self.blob_gets()
            .into_iter()
            .filter(|r| r.contains(digest))
            .collect()
    }

    /// `digest` left the registry twice: a first download, then the rest of
    /// it from where a broken copy stopped (a range request).
    fn assert_resumed(&self, digest: &str) {
        let gets = self.gets_of(digest);
        assert_eq!(gets.len(), 2, "{gets:#?}");
        assert!(
            gets[1].to_ascii_lowercase().contains("range: bytes="),
            "{gets:#?}"
        );
    }

    /// Whether node `name` is listed in the index as holding `digest`.
    fn indexed(&self, digest: &str, name: &str) -> bool {
        self.etcd
            .store()
            .get(&format!("/molde/blobs/{digest}/{name}"))
            .is_ok_and(|e| e.is_some())
    }
}

/// A layer with one file of `len` bytes that do not compress (`seed` picks them).
fn noise_layer(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed as u64 | 1 << 40;
    let data: Vec<u8> = (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(len)
        .collect();
    tar(&[
        Entry::Dir("data", 0o755),
        Entry::File(format!("data/{seed}"), data, 0o644),
    ])
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
    // Many at once: more than one transaction's worth.
    let many: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("/molde/t/many/{i:03}"), vec![1]))
        .collect();
    let (put, r) = s.put_leased_many(&many, lease);
    r.unwrap();
    assert_eq!(put, 300);
    assert_eq!(s.range("/molde/t/many/").unwrap().len(), 300);
    s.revoke(lease).unwrap();
    assert!(s.get("/molde/t/leased").unwrap().is_none());
    assert!(s.range("/molde/t/many/").unwrap().is_empty());
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

/// The nodes `molde node ls` lists, or the error it gives.
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

/// What `ls -l` says of `files` in `reference` run on node `d` (size and name).
fn listing(d: &Daemon, reference: &str, files: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", reference, "ls", "-l"];
    args.extend_from_slice(files);
    d.molde(&args)
        .ok()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[4], f[f.len() - 1])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn nodes_register_drop_out_and_local_work_goes_on_while_etcd_is_down() {
    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    let mut b = cl.node("node-b");
    molde_tests::eventually(20, "both nodes listed", || names(&a) == ["node-a", "node-b"]);
    let table = a.molde(&["node", "ls"]).ok();
    assert!(table.contains("node-a *"), "this node is marked:\n{table}");
    assert!(table.contains(&a.address()), "{table}");

    // A node that stops renewing drops out by itself.
    b.kill9();
    molde_tests::eventually(30, "node-b to drop out", || names(&a) == ["node-a"]);

    // etcd away: pulls and runs go on; cluster commands say what is wrong.
    let (l, reference) = cl.push("outage/app:1", &[noise_layer(1, 300_000)]);
    cl.etcd.stop();
    let err = a.molde(&["node", "ls"]).fails();
    assert!(err.contains("etcd"), "{err}");
    a.molde(&["pull", "-q", &reference]).ok();
    assert_eq!(listing(&a, &reference, &["/data/1"]), "300000 /data/1");
    a.molde(&["images"]).ok();
    // Away for longer than a lease: the node's record and index go with it.
    std::thread::sleep(Duration::from_secs(12));
    a.molde(&["run", "--rm", "--network", "none", &reference, "true"])
        .ok();
    cl.etcd.spawn();
    molde_tests::eventually(30, "node-a to register again", || names(&a) == ["node-a"]);
    // Its index is back, with what it pulled while etcd was away.
    molde_tests::eventually(20, "node-a's index to come back", || {
        l.layers.iter().all(|(d, _)| cl.indexed(d, "node-a"))
    });

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

    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    let ours = cl.certs.path().to_path_buf();
    molde_cli(&["cluster", "join", "--dir", &cl.certs(), "--node-name", "node-x"]);
    // Another cluster's CA, and a node of it with the same name.
    let theirs = cl.tmp.path().join("theirs");
    let s = |p: &Path| p.display().to_string();
    molde_cli(&["cluster", "init", "--dir", &s(&theirs)]);
    molde_cli(&["cluster", "join", "--dir", &s(&theirs), "--node-name", "node-x"]);

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

    let addr = a.address();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let read = |id: &Identity, offset: i64, size: i64| -> Result<Vec<u8>, String> {
        rt.block_on(async {
            let ch = molde_cluster::peer::channel(id, "node-a", &addr).map_err(|e| e.to_string())?;
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

    // A molded whose certificate is another CA's joins etcd, but its peers
    // refuse it: its pull of a layer node-a holds goes to the registry.
    let (l, reference) = cl.push("stranger/app:1", &[noise_layer(9, 500_000)]);
    a.molde(&["pull", "-q", &reference]).ok();
    molde_tests::eventually(20, "node-a to publish the layer", || {
        cl.indexed(&l.layers[1].0, "node-a")
    });
    let x = cl.node_with("node-x", &s(&theirs));
    molde_tests::eventually(20, "node-x registered", || names(&x) == ["node-a", "node-x"]);
    let before = cl.blob_gets().len();
    x.molde(&["pull", "-q", &reference]).ok();
    let took: Vec<String> = cl.blob_gets().split_off(before);
    assert!(
        took.iter().any(|r| r.contains(l.layers[1].0.as_str())),
        "node-x was not refused by node-a: {took:#?}"
    );
    let log = x.log_text();
    assert!(
        log.contains("a peer could not serve a blob") || log.contains("a peer broke off"),
        "{log}"
    );
    assert!(!log.contains("blob taken from a peer"), "{log}");
}

#[test]
fn a_layer_another_node_holds_comes_from_it_not_from_the_registry() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push("shared/app:1", &[noise_layer(2, 8_000_000)]);
    let a = cl.node("node-a");
    let b = cl.node("node-b");
    a.molde(&["pull", "-q", &reference]).ok();
    let from_registry = cl.blob_gets();
    for (digest, _) in &l.layers {
        assert!(
            from_registry.iter().any(|r| r.contains(digest.as_str())),
            "node-a took {digest} from the registry: {from_registry:#?}"
        );
    }
    // node-a's index reaches etcd on its next renewal.
    molde_tests::eventually(20, "node-a to publish its layers", || {
        l.layers.iter().all(|(d, _)| cl.indexed(d, "node-a"))
    });
    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    b.molde_env(
        &[("TRACEPARENT", &format!("00-{trace}-{caller}-01"))],
        &["pull", "-q", &reference],
    )
    .ok();
    let layer_gets = |reqs: &[String]| {
        reqs.iter()
            .filter(|r| l.layers.iter().any(|(d, _)| r.contains(d.as_str())))
            .count()
    };
    assert_eq!(
        layer_gets(&cl.blob_gets()),
        layer_gets(&from_registry),
        "node-b asked the registry for a layer node-a holds: {:#?}",
        cl.blob_gets()
    );
    // What node-b got is the image: it runs, and the big file is whole.
    let expected = listing(&a, &reference, &["/data/2"]);
    assert_eq!(expected, "8000000 /data/2");
    assert_eq!(listing(&b, &reference, &["/data/2"]), expected);
    assert!(
        b.log_text().contains("blob taken from a peer"),
        "{}",
        b.log_text()
    );
    // The pull from the peer is one trace: node-a's read of the layer is
    // the child of node-b's span taking it from a peer.
    let on = |s: &molde_tests::otlp::Span, n: &Node| {
        s.resource.get("service.instance.id") == Some(&n.d.sock.display().to_string())
    };
    let spans = cl
        .traces
        .wait_for(20, "node-a's read in node-b's trace", |spans| {
            let ours = |n: &Node, name: &str| {
                spans
                    .iter()
                    .any(|s| s.trace_id == trace && on(s, n) && s.name.ends_with(name))
            };
            ours(&a, "Content/Read") && ours(&b, "blob from a peer") && ours(&b, "Transfer/Pull")
        });
    let taking: Vec<&str> = spans
        .iter()
        .filter(|s| s.trace_id == trace && on(s, &b) && s.name == "blob from a peer")
        .map(|s| s.span_id.as_str())
        .collect();
    assert!(!taking.is_empty(), "{spans:#?}");
    let read = spans
        .iter()
        .find(|s| s.trace_id == trace && on(s, &a) && s.name.ends_with("Content/Read"))
        .unwrap();
    assert!(
        taking.contains(&read.parent_span_id.as_str()),
        "{read:#?} / {taking:?}"
    );
    assert!(spans.iter().any(|s| s.trace_id == trace
        && on(s, &b)
        && s.name == "molde.services.transfer.v1.Transfer/Pull"
        && s.parent_span_id == caller));

    // Any command on another node, through the peer transport, with an
    // admin's certificate.
    let certs = cl.certs();
    molde_cli(&["cluster", "join", "--dir", &certs, "--admin", "ops"]);
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
            &certs,
            "--cluster-identity",
            "ops",
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
        .molde(&[
            "--all-nodes",
            "--cluster-certs",
            &certs,
            "--cluster-identity",
            "ops",
            "images",
        ])
        .ok();
    assert!(
        all.contains("== node-a ==") && all.contains("== node-b =="),
        "{all}"
    );
    assert_eq!(all.matches("shared/app").count(), 2, "{all}");
    let err = b
        .molde(&[
            "--node",
            "node-z",
            "--cluster-certs",
            &certs,
            "--cluster-identity",
            "ops",
            "images",
        ])
        .fails();
    assert!(err.contains("node-z"), "{err}");

    // A peer that serves wrong bytes: node-a's copy of the big layer is
    // damaged on disk, node-b is gone; node-c catches it at the digest and
    // takes the layer from the registry.
    let mut b = b;
    b.kill9();
    let (big, _) = &l.layers[1];
    molde_tests::eventually(30, "node-b's index entries to expire", || {
        !cl.indexed(big, "node-b")
    });
    let file = a
        .root
        .join("content/blobs/sha256")
        .join(big.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let before = layer_gets(&cl.blob_gets());
    let c = cl.node("node-c");
    c.molde(&["pull", "-q", &reference]).ok();
    assert!(
        c.log_text().contains("do not match the digest"),
        "node-c did not see the bad copy: {}",
        c.log_text()
    );
    assert_eq!(
        layer_gets(&cl.blob_gets()),
        before + 1,
        "the bad layer came from the registry"
    );
    assert_eq!(listing(&c, &reference, &["/data/2"]), expected);
}

/// Three nodes pull the same image at the same moment: each layer leaves the
/// registry once; the nodes that did not download it read it from the one
/// that did.
#[test]
fn three_nodes_pulling_at_once_take_each_layer_from_the_registry_once() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push(
        "together/app:1",
        &[noise_layer(1, 3_000_000), noise_layer(2, 3_000_000)],
    );
    // Slow enough that the three pulls overlap.
    cl.proxy.set(molde_tests::faults::Faults {
        slow: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| cl.node(n)).collect();
    molde_tests::eventually(20, "three nodes registered", || names(&nodes[0]).len() == 3);
    std::thread::scope(|s| {
        for d in &nodes {
            let r = reference.clone();
            s.spawn(move || d.molde(&["pull", "-q", &r]).ok());
        }
    });
    let gets = cl.blob_gets();
    for (digest, _) in &l.layers {
        let n = gets.iter().filter(|r| r.contains(digest.as_str())).count();
        assert_eq!(n, 1, "{digest} left the registry {n} times: {gets:#?}");
    }
    for d in &nodes {
        assert_eq!(
            listing(d, &reference, &["/data/1", "/data/2"]),
            "3000000 /data/1\n3000000 /data/2"
        );
    }
    // The others read each layer from its downloader as it arrived there,
    // not after it was whole.
    let followed = nodes
        .iter()
        .map(|n| {
            n.log_text()
                .matches("blob taken from a peer as it downloaded it")
                .count()
        })
        .sum::<usize>();
    assert!(followed >= 2, "{followed}");
    // Each node's metrics: two peers; the claims taken and deferred.
    let (mut taken, mut deferred) = (0.0, 0.0);
    for n in &nodes {
        let scrape = molde_tests::http_get(&format!("{}:{METRICS_PORT}", n.host.ip), "/metrics");
        assert!(scrape.lines().any(|l| l == "molde_cluster_peers 2"), "{scrape}");
        taken += molde_tests::sample(&scrape, "molde_cluster_claims_total", "outcome=\"taken\"").unwrap();
        deferred +=
            molde_tests::sample(&scrape, "molde_cluster_claims_total", "outcome=\"deferred\"").unwrap();
    }
    assert!(taken >= 2.0, "a claim per layer at least: {taken}");
    assert!(deferred >= 2.0, "the followers deferred: {deferred}");
}

/// `molde pull -q REFERENCE` on node `n`, on a thread of its own.
fn pull_in_background(n: &Node, reference: &str) -> std::thread::JoinHandle<std::process::Output> {
    let (sock, r) = (n.sock.clone(), reference.to_string());
    std::thread::spawn(move || {
        Command::new(molde_tests::bin("molde"))
            .env("MOLDE_ADDRESS", sock)
            .args(["pull", "-q", &r])
            .output()
            .unwrap()
    })
}

/// The bytes of ingests in progress under a node's content store.
fn ingesting(d: &Daemon) -> u64 {
    molde_tests::files_under(&d.root.join("content/ingest"))
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_pull_whose_peer_is_killed_mid_transfer_completes() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push("killed/app:1", &[noise_layer(3, 24_000_000)]);
    let (big, _) = &l.layers[1];
    let mut a = cl.node("node-a");
    let b = cl.node("node-b");
    a.molde(&["pull", "-q", &reference]).ok();
    molde_tests::eventually(20, "node-a to publish the layer", || cl.indexed(big, "node-a"));
    // node-a sends slowly (24 MB take ~5 s); it is killed once node-b has
    // part of the layer.
    a.host.throttle(40);
    let pulling = pull_in_background(&b, &reference);
    molde_tests::eventually(30, "node-b to be reading the layer from node-a", || {
        ingesting(&b) > 2_000_000
    });
    a.kill9();
    let out = pulling.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&b, &reference, &["/data/3"]), "24000000 /data/3");
    // The rest came from the registry, from where node-a stopped.
    cl.assert_resumed(big);
    assert!(b.log_text().contains("a peer broke off"), "{}", b.log_text());
}

#[test]
fn after_a_partition_heals_the_index_names_no_blob_the_node_removed() {
    let mut cl = Cluster::new();
    let (la, first) = cl.push("part/a:1", &[noise_layer(4, 200_000)]);
    let (lb, second) = cl.push("part/b:1", &[noise_layer(5, 200_000)]);
    let a = cl.node("node-a");
    let watcher = cl.node("node-w");
    a.molde(&["pull", "-q", &first]).ok();
    a.molde(&["pull", "-q", &second]).ok();
    let (gone, kept) = (&la.layers[1].0, &lb.layers[1].0);
    molde_tests::eventually(20, "node-a to publish both", || {
        cl.indexed(gone, "node-a") && cl.indexed(kept, "node-a")
    });
    // Cut off for less than a lease: its entries stay in etcd meanwhile, and
    // the blob it removes cannot be taken out of the index then.
    a.host.cut();
    a.molde(&["rmi", &first]).ok();
    a.molde(&["gc"]).ok();
    assert!(!a.molde(&["content", "ls", "-q"]).ok().contains(gone.as_str()));
    std::thread::sleep(Duration::from_secs(4));
    assert!(cl.indexed(gone, "node-a"), "the lease outlived the partition");
    a.host.heal();
    molde_tests::eventually(20, "the removed blob to leave the index", || {
        !cl.indexed(gone, "node-a")
    });
    assert!(cl.indexed(kept, "node-a"));
    assert_eq!(names(&watcher), ["node-a", "node-w"]);
}

#[test]
fn a_build_on_one_node_runs_no_step_when_another_node_builds_it() {
    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    let b = cl.node("node-b");
    for n in [&a, &b] {
        n.load_busybox();
    }
    let ctx = cl.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/molde/busybox\n\
         COPY a.txt /a.txt\n\
         RUN echo ran-the-step && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /random\n\
         COPY b.txt /b.txt\n",
    )
    .unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    std::fs::write(ctx.join("b.txt"), "b\n").unwrap();
    let ctx = ctx.display().to_string();
    let build = |n: &Node| n.molde(&["build", "-t", "localhost/test/shared", &ctx]);
    let cached = |log: &str| log.lines().filter(|l| l.contains(" CACHED ")).count();
    let ran = |log: &str| log.lines().any(|l| l == "ran-the-step");

    let on_a = build(&a);
    assert!(on_a.out.status.success(), "{}", on_a.stderr());
    assert!(
        ran(&on_a.stderr()) && cached(&on_a.stderr()) == 0,
        "{}",
        on_a.stderr()
    );
    // node-a's three steps reach the index on its next renewal.
    molde_tests::eventually(20, "node-a to publish its steps", || {
        cl.etcd
            .store()
            .range("/molde/build-cache/")
            .is_ok_and(|es| es.iter().filter(|e| e.key.ends_with("/node-a")).count() == 3)
    });
    let on_b = build(&b);
    assert!(on_b.out.status.success(), "{}", on_b.stderr());
    assert_eq!(cached(&on_b.stderr()), 3, "node-b ran a step:\n{}", on_b.stderr());
    assert!(!ran(&on_b.stderr()), "{}", on_b.stderr());
    assert!(
        b.log_text()
            .contains("build step taken from the cluster's build cache")
    );
    // The same image: the RUN's random bytes are node-a's.
    let show = |n: &Node| n.run_image("localhost/test/shared", &["cat", "/random", "/a.txt", "/b.txt"]);
    let (x, y) = (show(&a), show(&b));
    assert_eq!(x, y);
    assert_eq!(x.len(), 64 + 4, "{x:?}");
    // And node-b's own cache now has the steps: a rebuild there runs none.
    let again = build(&b);
    assert_eq!(cached(&again.stderr()), 3, "{}", again.stderr());

    // Records that lie about what their layers unpack to are caught: node-c
    // runs the steps itself.
    drop(b);
    let s = cl.etcd.store();
    molde_tests::eventually(30, "node-b's records to expire", || {
        s.range("/molde/build-cache/")
            .is_ok_and(|es| es.iter().all(|e| e.key.ends_with("/node-a")))
    });
    for e in s.range("/molde/build-cache/").unwrap() {
        let mut rec: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        rec["diff_id"] = format!("sha256:{}", "0".repeat(64)).into();
        s.txn(Txn::new().put(e.key, serde_json::to_vec(&rec).unwrap()))
            .unwrap();
    }
    let c = cl.node("node-c");
    c.load_busybox();
    let on_c = build(&c);
    assert!(on_c.out.status.success(), "{}", on_c.stderr());
    assert!(
        ran(&on_c.stderr()) && cached(&on_c.stderr()) == 0,
        "{}",
        on_c.stderr()
    );
    assert!(c.log_text().contains("not to its diff ID"), "{}", c.log_text());
}

#[test]
fn with_the_registry_away_a_tag_the_cluster_holds_still_resolves() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push("offline/app:1", &[noise_layer(6, 500_000)]);
    let a = cl.node("node-a");
    let b = cl.node("node-b");
    a.molde(&["pull", "-q", &reference]).ok();
    molde_tests::eventually(20, "node-a to publish the image's blobs", || {
        [&l.manifest_digest, &l.config_digest]
            .into_iter()
            .chain(l.layers.iter().map(|(d, _)| d))
            .all(|d| cl.indexed(d, "node-a"))
    });
    // A node that resolves in the cluster whenever its registry is away.
    let certs = cl.certs();
    let c = cl.node_with_args("node-c", &certs, &["--cluster-resolve"]);
    cl.reg.stop();
    // The registry is authoritative: without the flag the pull fails.
    let err = b.molde(&["pull", "-q", &reference]).fails();
    assert!(err.contains(&cl.proxy.host), "{err}");
    b.molde(&["pull", "-q", "--cluster-resolve", &reference]).ok();
    assert_eq!(listing(&b, &reference, &["/data/6"]), "500000 /data/6");
    assert!(
        b.log_text().contains("tag resolved in the cluster"),
        "{}",
        b.log_text()
    );
    let digest = |n: &Node| {
        n.molde(&["images"])
            .ok()
            .lines()
            .find(|l| l.contains("offline/app"))
            .map(str::to_string)
    };
    let on_a = digest(&a).and_then(|l| l.split_whitespace().nth(2).map(str::to_string));
    assert!(on_a.is_some());
    assert_eq!(
        on_a,
        digest(&b).and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    );
    c.molde(&["pull", "-q", &reference]).ok();
    assert_eq!(listing(&c, &reference, &["/data/6"]), "500000 /data/6");
    // A tag no node holds says so.
    let missing = format!("{}/offline/none:1", cl.proxy.host);
    let err = b.molde(&["pull", "--cluster-resolve", &missing]).fails();
    assert!(err.contains("no node of the cluster holds"), "{err}");
}

#[test]
fn a_node_following_a_download_finishes_it_when_the_downloader_is_killed() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push("followed/app:1", &[noise_layer(7, 6_000_000)]);
    let (big, _) = &l.layers[1];
    // ~3 MB/s out of the registry: the download takes a few seconds.
    cl.proxy.set(molde_tests::faults::Faults {
        slow: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let mut a = cl.node("node-a");
    let b = cl.node("node-b");
    molde_tests::eventually(20, "both registered", || names(&b).len() == 2);
    let _on_a = pull_in_background(&a, &reference);
    molde_tests::eventually(30, "node-a to be downloading", || ingesting(&a) > 1_000_000);
    let on_b = pull_in_background(&b, &reference);
    molde_tests::eventually(30, "node-b to be following node-a", || ingesting(&b) > 1_500_000);
    a.kill9();
    let out = on_b.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&b, &reference, &["/data/7"]), "6000000 /data/7");
    let log = b.log_text();
    assert!(log.contains("reading it from there as it arrives"), "{log}");
    // node-b took over the download from where its copy stopped.
    cl.assert_resumed(big);
}

/// A node's certificate has the peer role: it reads from other nodes and
/// runs nothing there; an admin's certificate runs any command; a revoked
/// certificate is refused by every node within a lease period.
#[test]
fn node_certificates_only_read_admins_run_and_revoked_certificates_are_refused() {
    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    let b = cl.node("node-b");
    molde_tests::eventually(20, "both registered", || names(&b).len() == 2);
    let certs = cl.certs();
    // With node-b's own certificate (the default identity): refused, naming the role.
    let err = b
        .molde(&[
            "--node",
            "node-a",
            "--cluster-certs",
            &certs,
            "run",
            "--rm",
            "-v",
            "/:/host",
            "x",
            "true",
        ])
        .fails();
    assert!(err.contains("peer role") && err.contains("admin"), "{err}");
    let err = b
        .molde(&["--node", "node-a", "--cluster-certs", &certs, "content", "ls"])
        .fails();
    assert!(
        err.contains("PermissionDenied") || err.contains("peer role"),
        "{err}"
    );
    // An admin's certificate runs commands there.
    molde_cli(&[
        "cluster", "join", "--dir", &certs, "--admin", "ops", "--days", "30",
    ]);
    let admin = [
        "--node",
        "node-a",
        "--cluster-certs",
        certs.as_str(),
        "--cluster-identity",
        "ops",
    ];
    let out = b.molde(&[&admin[..], &["version"]].concat()).ok();
    assert!(out.contains("Server:"), "{out}");
    let certified = molde_cluster::certs::Presented::load(&Path::new(&certs).join("ops.crt")).unwrap();
    let days = (certified.not_after
        - std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64)
        / 86_400;
    assert!((29..=30).contains(&days), "{days}");
    // Revoked through node-b's molded: node-a refuses it within a lease.
    let said = b.molde(&["cluster", "revoke", "--dir", &certs, "ops"]).ok();
    assert!(said.contains("revoked ops"), "{said}");
    molde_tests::eventually(15, "node-a to refuse the revoked certificate", || {
        let r = b.molde(&[&admin[..], &["version"]].concat());
        !r.out.status.success() && r.stderr().contains("revoked")
    });
    // Renewed, it is a new certificate, and it is accepted again.
    molde_cli(&["cluster", "renew", "--dir", &certs, "ops"]);
    b.molde(&[&admin[..], &["version"]].concat()).ok();
    drop(a);
}

/// One molded per node name: a second one with the name fails at start
/// naming the first, and a certificate under another name is refused.
#[test]
fn a_node_name_is_held_by_one_molded_and_bound_to_its_certificate() {
    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    molde_tests::eventually(20, "node-a registered", || names(&a) == ["node-a"]);
    let record = |cl: &Cluster| {
        cl.etcd
            .store()
            .get("/molde/nodes/node-a")
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
            .unwrap_or_default()
    };
    assert!(record(&cl).contains(&a.address()));
    // A second molded calling itself node-a, on another host.
    let log = cl.failing_node("node-a2", "node-a", None);
    assert!(
        log.contains("node name \"node-a\" is registered by another molded"),
        "{log}"
    );
    assert!(log.contains(&a.address()), "names the holder: {log}");
    assert!(record(&cl).contains(&a.address()), "the record is node-a's still");
    // node-a's certificate copied under another name.
    let certs = PathBuf::from(cl.certs());
    std::fs::copy(certs.join("node-a.crt"), certs.join("node-q.crt")).unwrap();
    std::fs::copy(certs.join("node-a.key"), certs.join("node-q.key")).unwrap();
    let log = cl.failing_node("node-q", "node-q", None);
    assert!(log.contains("issued to \"node-a\""), "{log}");
    assert!(cl.etcd.store().get("/molde/nodes/node-q").unwrap().is_none());
}

/// A molded that cannot serve its peers fails at start without ever
/// registering, and says why once, without a backtrace.
#[test]
fn a_molded_that_cannot_bind_its_peer_port_never_registers() {
    let mut cl = Cluster::new();
    let a = cl.node("node-a");
    molde_tests::eventually(20, "node-a registered", || names(&a) == ["node-a"]);
    molde_cli(&["cluster", "join", "--dir", &cl.certs(), "--node-name", "node-c"]);
    // node-a's address: not this host's, so the peer listener cannot bind.
    let log = cl.failing_node("node-c", "node-c", Some(a.address()));
    assert_eq!(log.matches("listening for peers").count(), 1, "said once: {log}");
    assert!(!log.contains("backtrace") && !log.contains("Error: "), "{log}");
    assert!(cl.etcd.store().get("/molde/nodes/node-c").unwrap().is_none());
    assert_eq!(names(&a), ["node-a"]);
}

/// A download that fails drops its claim at once; a claim whose node is not
/// registered has lapsed; a peer frozen mid-transfer (SIGSTOP) is left for
/// the registry.
#[test]
fn failed_downloads_drop_their_claims_and_frozen_peers_are_left_behind() {
    let mut cl = Cluster::new();
    let (l, reference) = cl.push("claims/app:1", &[noise_layer(5, 8_000_000)]);
    let (big, _) = &l.layers[1];
    let a = cl.node("node-a");
    let b = cl.node("node-b");
    molde_tests::eventually(20, "both registered", || names(&b).len() == 2);
    let claim = format!("/molde/claims/{big}");
    // node-a's registry download fails: its claim goes with it.
    cl.proxy.set(molde_tests::faults::Faults {
        blob_status: Some(500),
        ..Default::default()
    });
    a.molde(&["pull", "-q", &reference]).fails();
    assert!(
        cl.etcd.store().get(&claim).unwrap().is_none(),
        "node-a kept its claim"
    );
    cl.proxy.set(Default::default());

    // A claim of a node that is not registered, under a long lease.
    let store = cl.etcd.store();
    let lease = store.grant(Duration::from_secs(300)).unwrap();
    assert!(store.claim(&claim, b"ghost".to_vec(), lease).unwrap());
    let pulling = pull_in_background(&b, &reference);
    molde_tests::eventually(60, "node-b's pull past the ghost's claim", || {
        pulling.is_finished()
    });
    let out = pulling.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(b.log_text().contains("has lapsed"), "{}", b.log_text());

    // node-b serves the layer slowly and freezes mid-transfer: node-c
    // notices within the stall limit and takes the rest from the registry.
    molde_tests::eventually(20, "node-b to publish the layer", || cl.indexed(big, "node-b"));
    let c = cl.node("node-c");
    molde_tests::eventually(20, "node-c registered", || names(&c).len() == 3);
    b.host.throttle(40);
    let pulling = pull_in_background(&c, &reference);
    molde_tests::eventually(30, "node-c to be reading from node-b", || {
        ingesting(&c) > 1_000_000
    });
    let pid = nix::unistd::Pid::from_raw(b.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    molde_tests::eventually(60, "node-c's pull past the frozen peer", || pulling.is_finished());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let out = pulling.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(listing(&c, &reference, &["/data/5"]), "8000000 /data/5");
    assert!(c.log_text().contains("sent nothing"), "{}", c.log_text());
}

/// Certificates for an etcd that wants TLS and client certificates, as
/// kubeadm's does: a CA, etcd's own (for 127.0.0.1), and a client's.
fn etcd_pki(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "etcd-ca");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    for (name, sans) in [
        ("server", vec!["127.0.0.1".to_string(), "localhost".into()]),
        ("client", vec!["molde".into()]),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// molded joins a cluster whose etcd speaks TLS, wants a client certificate
/// and, with auth on, a user and password.
#[test]
fn a_node_joins_an_etcd_with_tls_client_certificates_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    etcd_pki(pki);
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let s = |p: &str| pki.join(p).display().to_string();
    let mut etcd = Command::new(molde_tests::require("etcd"))
        .args(["--name", "t", "--data-dir", &s("data")])
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("t=http://127.0.0.1:{peer}")])
        .args(["--client-cert-auth", "--trusted-ca-file", &s("ca.crt")])
        .args(["--cert-file", &s("server.crt"), "--key-file", &s("server.key")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(pki.join("etcd.log")).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _etcd = Kill(&mut etcd);
    molde_tests::eventually(20, "etcd to answer", || {
        std::net::TcpStream::connect(("127.0.0.1", client)).is_ok()
    });
    let tls = [
        "--etcd-ca".to_string(),
        s("ca.crt"),
        "--etcd-cert".into(),
        s("client.crt"),
        "--etcd-key".into(),
        s("client.key"),
    ];
    let node_args = |name: &str| -> Vec<String> {
        vec![
            "--cluster".into(),
            format!("etcd={url}"),
            "--node-name".into(),
            name.into(),
            "--advertise".into(),
            format!("127.0.0.1:{}", free_port()),
        ]
    };
    // TLS and a client certificate.
    let mut d = Daemon::prepare(&[]);
    d.args(&[node_args("tls-node"), tls.to_vec()].concat());
    d.spawn();
    molde_tests::eventually(20, "tls-node registered", || names(&d) == ["tls-node"]);
    drop(d);
    // An https endpoint without the CA is refused at start, saying what is missing.
    let mut bare = Daemon::prepare(&[]);
    bare.args(&node_args("bare"));
    let log = bare.spawn_failing();
    assert!(log.contains("--etcd-ca"), "{log}");

    // etcd's auth on: a root user with a password.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let opts = etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(
                    std::fs::read(pki.join("ca.crt")).unwrap(),
                ))
                .identity(etcd_client::Identity::from_pem(
                    std::fs::read(pki.join("client.crt")).unwrap(),
                    std::fs::read(pki.join("client.key")).unwrap(),
                )),
        );
        let mut c = etcd_client::Client::connect([url.clone()], Some(opts))
            .await
            .unwrap();
        c.user_add("root", "s3cret", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();
    });
    std::fs::write(pki.join("password"), "s3cret\n").unwrap();
    let mut d = Daemon::prepare(&[]);
    let config = d.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\netcd_user = \"root\"\netcd_password_file = {:?}\n",
            pki.join("password")
        ),
    )
    .unwrap();
    d.args(
        &[
            vec!["--config".into(), config.display().to_string()],
            node_args("auth-node"),
            tls.to_vec(),
        ]
        .concat(),
    );
    d.spawn();
    molde_tests::eventually(20, "auth-node registered", || names(&d) == ["auth-node"]);
}
