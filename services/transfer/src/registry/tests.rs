use super::*;

#[test]
fn loopback_registries_are_recognised() {
    for h in [
        "localhost:5000",
        "127.0.0.1:5000",
        "127.1.2.3",
        "[::1]:5000",
        "localhost",
    ] {
        assert!(is_loopback(h), "{h}");
    }
    for h in ["docker.io", "10.0.0.1:5000", "registry.local:5000"] {
        assert!(!is_loopback(h), "{h}");
    }
}

#[test]
fn hosts_toml_parses() {
    let c = parse_hosts(
        "plain_http = true\nskip_verify = true\nca = [\"/x.pem\"]\n",
        Path::new("h"),
        "r.example",
    )
    .unwrap();
    let server = &c.endpoints[0];
    assert!(server.plain_http && server.skip_verify);
    assert_eq!(server.ca, [PathBuf::from("/x.pem")]);
    assert!(
        parse_hosts("mirrors = []", Path::new("h"), "r").is_err(),
        "unknown keys are refused"
    );
    assert!(parse_hosts("plain_http = 3", Path::new("h"), "r").is_err());
}

#[test]
fn mirrors_come_first_in_file_order_then_the_server() {
    let c = parse_hosts(
        r#"server = "https://upstream.example"

[host."http://127.0.0.1:5001"]
  capabilities = ["pull", "resolve"]

[host."https://a-mirror.example/v2/cache"]
  capabilities = ["pull"]
  override_path = true
  skip_verify = true
  ca = "/m.pem"
"#,
        Path::new("h"),
        "registry.k8s.io",
    )
    .unwrap();
    let hosts: Vec<&str> = c.endpoints.iter().map(|e| e.host.as_str()).collect();
    assert_eq!(hosts, ["127.0.0.1:5001", "a-mirror.example", "upstream.example"]);
    let (m1, m2, s) = (&c.endpoints[0], &c.endpoints[1], &c.endpoints[2]);
    assert!(m1.plain_http && m1.resolve && m1.pull && !m1.push);
    assert!(!m2.plain_http && !m2.resolve && m2.skip_verify && m2.prefix == "cache");
    assert_eq!(m2.ca, [PathBuf::from("/m.pem")]);
    assert!(s.push && s.resolve && !s.plain_http);
    // A path without override_path cannot be served, and says so.
    assert!(parse_hosts("[host.\"https://m/x\"]\n", Path::new("h"), "r").is_err());
    assert!(parse_hosts("[host.\"ftp://m\"]\n", Path::new("h"), "r").is_err());
    assert!(
        parse_hosts(
            "[host.\"http://m\"]\ncapabilities = [\"fly\"]\n",
            Path::new("h"),
            "r"
        )
        .is_err()
    );
}

#[test]
fn the_default_directory_serves_registries_without_their_own() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("_default")).unwrap();
    std::fs::write(
        d.path().join("_default/hosts.toml"),
        "[host.\"http://127.0.0.1:5002\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
    )
    .unwrap();
    let hosts = Hosts {
        dir: d.path().to_path_buf(),
    };
    let c = hosts.config_for("docker.io").unwrap();
    assert_eq!(c.endpoints[0].host, "127.0.0.1:5002");
    assert_eq!(c.endpoints.last().unwrap().host, "docker.io");
}
