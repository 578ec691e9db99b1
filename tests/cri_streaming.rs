//! CRI streaming: the URLs Exec, Attach and PortForward return, driven as
//! kubectl drives them through the kubelet, with a SPDY/3.1 client written
//! from the draft (`molde_tests::spdy`) and a WebSocket client
//! (tokio-tungstenite).

use super::*;
use molde_tests::spdy::{self, Client, Event};

const V4: &[&str] = &["v4.channel.k8s.io", "v3.channel.k8s.io"];

impl Node {
    fn exec_url(&mut self, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
        self.rt
            .block_on(self.runtime.exec(cri::ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            }))
            .expect("Exec")
            .into_inner()
            .url
    }

    fn attach_url(&mut self, id: &str, stdin: bool) -> String {
        self.rt
            .block_on(self.runtime.attach(cri::AttachRequest {
                container_id: id.into(),
                stdin,
                tty: false,
                stdout: true,
                stderr: true,
            }))
            .expect("Attach")
            .into_inner()
            .url
    }

    fn port_forward_url(&mut self, pod: &str) -> String {
        self.rt
            .block_on(self.runtime.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![],
            }))
            .expect("PortForward")
            .into_inner()
            .url
    }
}

fn status(o: &spdy::Outcome) -> serde_json::Value {
    serde_json::from_slice(&o.error).unwrap_or_else(|e| panic!("error stream {:?}: {e}", o.error))
}

/// Sends an HTTP request through a port-forward data stream; the response.
fn get_through(client: &mut Client, data: u32) -> String {
    client.send(data, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", false);
    let mut body = Vec::new();
    while let Some(ev) = client.next_event() {
        if let Event::Data { stream, data: d, fin } = ev
            && stream == data
        {
            body.extend(d);
            if fin {
                break;
            }
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn exec_over_spdy_with_and_without_stdin_and_a_terminal() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-exec");
    let pod = n.run_pod(pc.clone());
    let id = n.run(&pod, &pc, n.container_config("box", &["sleep", "3600"]));

    // echo: stdout and stderr apart, a Success status.
    let url = n.exec_url(&id, &["sh", "-c", "echo hello; echo oops >&2"], false, false);
    let mut c = Client::connect(&url, V4).unwrap();
    assert_eq!(c.protocol, "v4.channel.k8s.io");
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    let o = spdy::collect(&mut c, &ids);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "oops\n");
    assert_eq!(status(&o)["status"], "Success");

    // The URL was good for one connection.
    let err = Client::connect(&url, V4).err().expect("a used token is refused");
    assert!(err.starts_with("HTTP/1.1 404"), "{err}");

    // stdin, closed by the client.
    let url = n.exec_url(&id, &["cat"], true, false);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdin", "stdout", "stderr"]);
    c.send(ids["stdin"], b"from ", false);
    c.send(ids["stdin"], b"stdin\n", true);
    let o = spdy::collect(&mut c, &ids);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from stdin\n");
    assert_eq!(status(&o)["status"], "Success");

    // A terminal, resized before the command asks its size.
    let url = n.exec_url(&id, &["sh", "-c", "read go; stty size"], true, true);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdin", "stdout", "resize"]);
    c.send(ids["resize"], br#"{"Width":123,"Height":45}"#, false);
    std::thread::sleep(Duration::from_millis(300));
    c.send(ids["stdin"], b"go\r", false);
    let o = spdy::collect(&mut c, &ids);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("45 123"), "{out:?}");

    // A non-zero exit code, as v4's status carries it.
    let url = n.exec_url(&id, &["sh", "-c", "exit 3"], false, false);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    let s = status(&spdy::collect(&mut c, &ids));
    assert_eq!(s["status"], "Failure");
    assert_eq!(s["reason"], "NonZeroExitCode");
    assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(s["details"]["causes"][0]["message"], "3");

    // A client that goes away mid-stream leaves no process behind.
    let url = n.exec_url(&id, &["sh", "-c", "echo started; exec sleep 987"], false, false);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    loop {
        match c.next_event() {
            Some(Event::Data { stream, .. }) if stream == ids["stdout"] => break,
            Some(_) => {}
            None => panic!("the exec's output never came"),
        }
    }
    assert!(n.sh(&id, "ps").contains("sleep 987"));
    drop(c);
    molde_tests::eventually(10, "the exec'd process to be killed", || {
        !n.sh(&id, "ps").contains("sleep 987")
    });

    // Bad requests are refused before any URL is made.
    let err =
        n.rt.block_on(n.runtime.exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stderr: true,
            stdout: true,
            stdin: false,
        }))
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    n.stop_and_remove_pod(&pod);
}

#[test]
fn attach_to_a_talking_container_and_to_one_reading_stdin() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-attach");
    let pod = n.run_pod(pc.clone());
    let ticker = n.run(
        &pod,
        &pc,
        n.container_config(
            "ticker",
            &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        ),
    );
    let url = n.attach_url(&ticker, false);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    let mut seen = Vec::new();
    while seen.windows(4).filter(|w| w == b"tick").count() < 2 {
        match c.next_event() {
            Some(Event::Data { stream, data, .. }) if stream == ids["stdout"] => seen.extend(data),
            Some(_) => {}
            None => panic!("attach ended: {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    drop(c);

    // A shell reading its stdin (stdin_once): commands in, output out, and
    // closing stdin ends it.
    // No log path, as critest's: its stdin still comes from attach.
    let mut cfg = n.container_config("shell", &["sh"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    cfg.log_path = String::new();
    let shell = n.run(&pod, &pc, cfg);
    let url = n.attach_url(&shell, true);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdin", "stdout", "stderr"]);
    c.send(ids["stdin"], b"echo hello from attach\n", false);
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("hello from attach") {
        match c.next_event() {
            Some(Event::Data { stream, data, .. }) if stream == ids["stdout"] => out.extend(data),
            Some(_) => {}
            None => panic!("attach ended: {:?}", String::from_utf8_lossy(&out)),
        }
    }
    c.send(ids["stdin"], b"exit 0\n", true);
    let o = spdy::collect(&mut c, &ids);
    assert_eq!(status(&o)["status"], "Success");
    let s = n.wait_exited(&shell);
    assert_eq!(s.exit_code, 0);

    // A container with a terminal: attach with one, resize it, type.
    let mut cfg = n.container_config("tty", &["sh"]);
    cfg.stdin = true;
    cfg.tty = true;
    let tty = n.run(&pod, &pc, cfg);
    let url =
        n.rt.block_on(n.runtime.attach(cri::AttachRequest {
            container_id: tty.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        }))
        .expect("Attach")
        .into_inner()
        .url;
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdin", "stdout", "resize"]);
    c.send(ids["resize"], br#"{"Width":77,"Height":11}"#, false);
    std::thread::sleep(Duration::from_millis(300));
    c.send(ids["stdin"], b"stty size; echo done-$((6*7))\r", false);
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("done-42") {
        match c.next_event() {
            Some(Event::Data { stream, data, .. }) if stream == ids["stdout"] => out.extend(data),
            Some(_) => {}
            None => panic!("attach ended: {:?}", String::from_utf8_lossy(&out)),
        }
    }
    assert!(
        String::from_utf8_lossy(&out).contains("11 77"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    drop(c);
    n.stop_and_remove_pod(&pod);
}

#[test]
fn port_forward_into_a_pod_and_a_host_network_pod_two_at_once() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-pf");
    let pod = n.run_pod(pc.clone());
    // Ports inside the pod only: nothing published on the host.
    n.run(
        &pod,
        &pc,
        n.container_config(
            "a",
            &server(8081, "served-a")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    );
    n.run(
        &pod,
        &pc,
        n.container_config(
            "b",
            &server(8082, "served-b")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    let url = n.port_forward_url(&pod);
    let mut c = Client::connect(&url, &["portforward.k8s.io"]).unwrap();
    assert_eq!(c.protocol, "portforward.k8s.io");
    // Two connections at once, to two ports.
    let mut data = Vec::new();
    for (req, port) in [("0", "8081"), ("1", "8082")] {
        c.open(&[("streamType", "error"), ("port", port), ("requestID", req)]);
        data.push(c.open(&[("streamType", "data"), ("port", port), ("requestID", req)]));
    }
    for (d, want) in data.iter().zip(["served-a", "served-b"]) {
        let body = get_through(&mut c, *d);
        assert!(body.contains(want), "{body}");
    }
    // A port nobody listens on: the error stream says so.
    let err = c.open(&[("streamType", "error"), ("port", "8089"), ("requestID", "2")]);
    c.open(&[("streamType", "data"), ("port", "8089"), ("requestID", "2")]);
    let mut msg = Vec::new();
    while let Some(ev) = c.next_event() {
        if let Event::Data { stream, data, fin } = ev
            && stream == err
        {
            msg.extend(data);
            if fin {
                break;
            }
        }
    }
    assert!(String::from_utf8_lossy(&msg).contains("8089"), "{msg:?}");
    drop(c);

    // A host-network pod: its loopback is the host's.
    let mut hc = n.pod_config("stream-pf-host");
    hc.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hpod = n.run_pod(hc.clone());
    let port = free_port_outside_ephemeral();
    n.run(
        &hpod,
        &hc,
        cri::ContainerConfig {
            command: server(port, "served-host"),
            ..n.container_config("h", &[])
        },
    );
    eventually_get(&format!("127.0.0.1:{port}"));
    let url = n.port_forward_url(&hpod);
    let mut c = Client::connect(&url, &["portforward.k8s.io"]).unwrap();
    let p = port.to_string();
    c.open(&[("streamType", "error"), ("port", &p), ("requestID", "0")]);
    let d = c.open(&[("streamType", "data"), ("port", &p), ("requestID", "0")]);
    assert!(get_through(&mut c, d).contains("served-host"));
    n.stop_and_remove_pod(&hpod);
    n.stop_and_remove_pod(&pod);
}

#[test]
fn exec_and_port_forward_over_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-ws");
    let pod = n.run_pod(pc.clone());
    let id = n.run(
        &pod,
        &pc,
        n.container_config(
            "box",
            &server(8083, "served-ws")
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ),
    );
    std::thread::sleep(Duration::from_millis(300));

    let connect = |url: &str, proto: &str| {
        let mut req = url.replace("http://", "ws://").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", proto.parse().unwrap());
        req
    };
    // v5: stdin closed with the close signal; stdout, stderr and the status.
    let url = n.exec_url(&id, &["sh", "-c", "cat; echo err >&2; exit 4"], true, false);
    let (out, err, status) = n.rt.block_on(async {
        let (mut ws, resp) = tokio_tungstenite::connect_async(connect(&url, "v5.channel.k8s.io"))
            .await
            .unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "v5.channel.k8s.io");
        ws.send(Message::binary(b"\x00typed".to_vec())).await.unwrap();
        ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
        let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) if !b.is_empty() => match b[0] {
                    1 => out.extend_from_slice(&b[1..]),
                    2 => err.extend_from_slice(&b[1..]),
                    3 => status.extend_from_slice(&b[1..]),
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        (out, err, status)
    });
    assert_eq!(String::from_utf8_lossy(&out), "typed");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    let s: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(s["details"]["causes"][0]["message"], "4");

    // base64.channel.k8s.io: text messages, the channel as a digit.
    let url = n.exec_url(&id, &["echo", "in base64"], false, false);
    let out = n.rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(connect(&url, "base64.channel.k8s.io"))
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Text(t) if t.starts_with('1') => {
                    use base64::Engine;
                    out.extend(
                        base64::engine::general_purpose::STANDARD
                            .decode(&t.as_bytes()[1..])
                            .unwrap(),
                    );
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        out
    });
    assert_eq!(String::from_utf8_lossy(&out), "in base64\n");

    // Port forward: the port comes first on each channel, then the bytes.
    let url = n.port_forward_url(&pod) + "?port=8083";
    let body = n.rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(connect(&url, "v4.portforward.k8s.io"))
            .await
            .unwrap();
        let mut body = Vec::new();
        let mut prefixes = 0;
        while let Some(Ok(m)) = ws.next().await {
            let Message::Binary(b) = m else { continue };
            if b.len() == 3 && prefixes < 2 {
                assert_eq!(u16::from_le_bytes([b[1], b[2]]), 8083);
                prefixes += 1;
                if prefixes == 2 {
                    ws.send(Message::binary(b"\x00GET / HTTP/1.0\r\n\r\n".to_vec()))
                        .await
                        .unwrap();
                }
                continue;
            }
            if b[0] == 0 {
                body.extend_from_slice(&b[1..]);
                if String::from_utf8_lossy(&body).contains("served-ws") {
                    break;
                }
            }
        }
        body
    });
    assert!(String::from_utf8_lossy(&body).contains("served-ws"));
    n.stop_and_remove_pod(&pod);
}

/// `kubectl logs -f` reads the file the shim writes; the kubelet rotates it
/// (rename, then ReopenContainerLog). Read the way the kubelet follows a
/// log, the old file then the new one hold every line once, in order.
#[test]
fn logs_follow_across_a_rotation() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-logs");
    let pod = n.run_pod(pc.clone());
    let id = n.run(
        &pod,
        &pc,
        n.container_config(
            "counter",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.02; done",
            ],
        ),
    );
    let log = n.logs.join("stream-logs/counter/0.log");
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let (time, stream, tag, msg) = (f.next(), f.next(), f.next(), f.next());
                assert!(time.is_some_and(|t| t.ends_with('Z')), "{l}");
                assert_eq!((stream, tag), (Some("stdout"), Some("F")), "{l}");
                msg.unwrap_or_default().to_string()
            })
            .collect()
    };
    molde_tests::eventually(10, "some lines", || lines(&log).len() >= 10);
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    n.rt.block_on(n.runtime.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    }))
    .expect("ReopenContainerLog");
    molde_tests::eventually(10, "lines in the new file", || lines(&log).len() >= 10);
    let mut all = lines(&rotated);
    let old = all.len();
    all.extend(lines(&log));
    let want: Vec<String> = (0..all.len()).map(|i| format!("line{i}")).collect();
    assert_eq!(all, want, "{old} lines before the rotation");
    n.stop_and_remove_pod(&pod);
}

/// With a certificate and key in `[cri]`, the URLs are https and the
/// streams run over TLS.
#[test]
fn the_streaming_server_speaks_tls_when_given_a_certificate() {
    use futures::StreamExt;
    use tokio_rustls::rustls;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = ca.cert.pem();
    let key_pem = ca.signing_key.serialize_pem();
    let mut n = Node::start_full(true, Registry::start(), |dir, _| {
        std::fs::write(dir.join("stream.crt"), &cert_pem).unwrap();
        std::fs::write(dir.join("stream.key"), &key_pem).unwrap();
        format!(
            "stream_tls_cert = \"{}\"\nstream_tls_key = \"{}\"\n",
            dir.join("stream.crt").display(),
            dir.join("stream.key").display()
        )
    });
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-tls");
    let pod = n.run_pod(pc.clone());
    let id = n.run(&pod, &pc, n.container_config("box", &["sleep", "3600"]));
    let url = n.exec_url(&id, &["echo", "over tls"], false, false);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // A plain-text client gets no stream.
    assert!(Client::connect(&url.replace("https://", "http://"), V4).is_err());

    let url = n.exec_url(&id, &["echo", "over tls"], false, false);
    let out = n.rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let addr = url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("a TLS handshake with the server's certificate");
        let mut req = url.replace("https://", "wss://").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) if b.first() == Some(&1) => out.extend_from_slice(&b[1..]),
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = ws.close(None).await;
        out
    });
    assert_eq!(String::from_utf8_lossy(&out), "over tls\n");
    n.stop_and_remove_pod(&pod);
}

/// A URL is good for a minute: one not used within it is refused.
#[test]
fn an_expired_streaming_url_is_refused() {
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-expiry");
    let pod = n.run_pod(pc.clone());
    let id = n.run(&pod, &pc, n.container_config("box", &["sleep", "3600"]));
    let url = n.exec_url(&id, &["echo", "late"], false, false);
    std::thread::sleep(Duration::from_secs(61));
    let err = Client::connect(&url, V4)
        .err()
        .expect("an expired token is refused");
    assert!(err.starts_with("HTTP/1.1 404"), "{err}");
    // A fresh one still works.
    let url = n.exec_url(&id, &["echo", "in time"], false, false);
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    assert_eq!(
        String::from_utf8_lossy(&spdy::collect(&mut c, &ids).stdout),
        "in time\n"
    );
    n.stop_and_remove_pod(&pod);
}

/// molded's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Connections that never present a token are closed (HEAD_TIMEOUT, 10 s),
/// and a molded out of descriptors waits instead of spinning on accept; once
/// the idle connections are gone, streaming works again.
#[test]
fn idle_streaming_connections_are_closed_and_running_out_of_descriptors_is_survived() {
    use std::io::Read;
    let mut n = Node::start();
    n.pull(&n.busybox.clone());
    let pc = n.pod_config("stream-limits");
    let pod = n.run_pod(pc.clone());
    let id = n.run(&pod, &pc, n.container_config("box", &["sleep", "3600"]));
    let url = n.exec_url(&id, &["echo", "after"], false, false);
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    // Leave molded about 40 descriptors to spare (its soft limit: the hard
    // one could not be raised again without CAP_SYS_RESOURCE).
    let pid = n.daemon.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = open + 40;
    let before = String::from_utf8(
        std::process::Command::new(molde_tests::require("prlimit"))
            .args([
                "--pid",
                &pid.to_string(),
                "--nofile",
                "--raw",
                "--noheadings",
                "-o",
                "SOFT",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let out = std::process::Command::new(molde_tests::require("prlimit"))
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let started = std::time::Instant::now();
    let ticks = cpu_ticks(pid);
    let conns: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection was not closed: {other:?}"),
        }
    }
    // Waiting for descriptors is not spinning: far less CPU than time passed.
    let cpu = (cpu_ticks(pid) - ticks) as f64 / 100.0;
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        cpu < elapsed / 2.0,
        "molded used {cpu:.1} s of CPU in {elapsed:.1} s"
    );

    // The limit given back (an exec's shim inherits it, and the container
    // asks for more), the server serves again.
    let out = std::process::Command::new(molde_tests::require("prlimit"))
        .args(["--pid", &pid.to_string(), &format!("--nofile={before}:")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = Client::connect(&url, V4).unwrap();
    let ids = spdy::open_remote(&mut c, &["error", "stdout", "stderr"]);
    let o = spdy::collect(&mut c, &ids);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "after\n", "{o:?}");
    n.stop_and_remove_pod(&pod);
}
