//! What a docker user reads and types every day, through `molde` against a
//! real molded: ps/images/stats columns, filters and `--format` templates,
//! `inspect` arrays and `-f`, IDs by prefix, the socket's group, `login`
//! checking credentials and credential helpers. (Root, as the daemon runs.)

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use molde_tests::Daemon;
use molde_tests::registry::Registry;

const IMAGE: &str = "localhost/molde/busybox";

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn ps_images_inspect_and_stats_print_what_docker_prints() {
    let d = Daemon::start();
    d.load_busybox();
    d.molde(&[
        "run", "-d", "--name", "web", "--label", "team=a", "--memory", "64m", IMAGE, "sleep", "300",
    ])
    .ok();
    d.molde(&["run", "--name", "done", "--network", "none", IMAGE, "true"])
        .ok();

    // ps: docker's columns, newest first, running only unless -a.
    let ps = d.molde(&["ps"]).ok();
    let header = lines(&ps)[0];
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{ps}");
    }
    assert!(
        ps.contains("Up ") && ps.contains("\"sleep 300\"") && !ps.contains("done"),
        "{ps}"
    );
    let all = d.molde(&["ps", "-a"]).ok();
    assert!(all.contains("Exited (0) ") && all.contains(" ago"), "{all}");
    assert_eq!(d.molde(&["ps", "--format", "{{.Names}}"]).ok(), "web\n");
    assert_eq!(
        d.molde(&[
            "ps",
            "-a",
            "-f",
            "status=exited",
            "--format",
            "{{.Names}} {{.State}}"
        ])
        .ok(),
        "done exited\n"
    );
    assert_eq!(
        d.molde(&["ps", "-a", "--last", "1", "--format", "{{.Names}}"])
            .ok(),
        "done\n"
    );
    assert_eq!(d.molde(&["ps", "-a", "-l", "-q"]).ok(), "done\n");
    assert_eq!(d.molde(&["ps", "-a", "-f", "label=team=a", "-q"]).ok(), "web\n");
    assert_eq!(d.molde(&["ps", "-a", "-f", "label=team=b", "-q"]).ok(), "");
    assert_eq!(
        d.molde(&["ps", "-a", "-f", "name=we", "--format", "{{json .Labels}}"])
            .ok(),
        "\"team=a\"\n"
    );
    let table = d
        .molde(&["ps", "-a", "--format", "table {{.Names}}\\t{{.Status}}"])
        .ok();
    let rows = lines(&table);
    assert!(
        rows[0].starts_with("NAMES") && rows[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("web ") && r.contains("Up ")),
        "{table}"
    );
    let err = d.molde(&["ps", "--format", "{{.Names"]).fails();
    assert!(err.contains("--format"), "{err}");
    let err = d.molde(&["ps", "-f", "colour=red"]).fails();
    assert!(err.contains("colour=red") && err.contains("status"), "{err}");

    // images: docker's columns with the image's config as its ID.
    let images = d.molde(&["images"]).ok();
    assert!(
        lines(&images)[0].split_whitespace().collect::<Vec<_>>()
            == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"],
        "{images}"
    );
    assert!(
        images.contains("localhost/molde/busybox") && images.contains("latest"),
        "{images}"
    );
    let image = d.inspect(IMAGE);
    let config_id = image["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    assert_eq!(
        d.molde(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .ok(),
        format!("localhost/molde/busybox:latest {}\n", &config_id[..12])
    );

    // inspect: an array; -f templates; any kind of object; IDs by prefix.
    let out = d.molde(&["inspect", "web", "done"]).ok();
    let both: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert_eq!(both[0]["Name"], "/web");
    assert_eq!(both[0]["State"]["Running"], true);
    assert_eq!(both[1]["State"]["ExitCode"], 0);
    assert!(
        both[0]["Created"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {}",
        both[0]["Created"]
    );
    assert_eq!(
        d.molde(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.HostConfig.NetworkMode}} {{json .Config.Labels}}",
            "web",
            "done"
        ])
        .ok(),
        "true bridge {\"team\":\"a\"}\nfalse none {}\n"
    );
    assert_eq!(
        d.molde(&["inspect", "-f", "{{.Id}}", &config_id[..8]]).ok(),
        format!("sha256:{config_id}\n"),
        "an image by a prefix of its ID"
    );
    d.molde(&["volume", "create", "keep"]).ok();
    assert_eq!(
        d.molde(&[
            "inspect",
            "--type",
            "volume",
            "-f",
            "{{.Name}} {{.Driver}}",
            "keep"
        ])
        .ok(),
        "keep local\n"
    );
    let err = d.molde(&["inspect", "--type", "network", "keep"]).fails();
    assert!(err.contains("no such network: keep"), "{err}");

    // stats: docker's columns; every running container without arguments.
    let stats = d.molde(&["stats", "--no-stream"]).ok();
    let rows = lines(&stats);
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(rows[0].contains(col), "{stats}");
    }
    assert_eq!(rows.len(), 2, "only the running container: {stats}");
    assert!(
        rows[1].starts_with("web") && rows[1].contains("/ 64MiB"),
        "{stats}"
    );
    assert_eq!(
        d.molde(&["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "web"])
            .ok(),
        "web 1\n"
    );
    let err = d.molde(&["stats", "--no-stream", "done"]).fails();
    assert!(err.contains("not running"), "{err}");
    // Streaming: a new sample every second until interrupted.
    let mut child = Command::new(molde_tests::bin("molde"))
        .env("MOLDE_ADDRESS", &d.sock)
        .args(["stats", "--format", "{{.Name}}"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut out, &mut l).unwrap();
        seen.push(l);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen, ["web\n", "web\n"]);

    // Prefixes: unique ones name the container, ambiguous ones list the matches.
    for n in ["abc1", "abc2"] {
        d.molde(&["create", "--name", n, "--network", "none", IMAGE, "true"])
            .ok();
    }
    d.molde(&["rm", "abc2"]).ok();
    d.molde(&["create", "--name", "abc2", "--network", "none", IMAGE, "true"])
        .ok();
    let err = d.molde(&["start", "abc"]).fails();
    assert!(
        err.contains("abc1") && err.contains("abc2"),
        "the matches are named: {err}"
    );

    // run, tag and rmi take an image by a prefix of its ID.
    assert_eq!(
        d.molde(&[
            "run",
            "--rm",
            "--network",
            "none",
            &config_id[..12],
            "echo",
            "by-id"
        ])
        .ok(),
        "by-id\n"
    );
    d.molde(&["tag", &config_id[..12], "localhost/other:1"]).ok();
    let out = d.molde(&["rmi", &config_id[..10]]).ok();
    assert!(
        out.contains("localhost/other:1") && out.contains("busybox"),
        "{out}"
    );
    assert_eq!(d.molde(&["images", "-q"]).ok(), "");
    d.molde(&["rm", "-f", "web"]).ok();
}

#[test]
fn the_socket_group_lets_its_members_in_and_tells_others_how() {
    let d = Daemon::start_with(&["--group", "4243"]);
    let dir = d.sock.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let meta = std::fs::metadata(&d.sock).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 4243);
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let as_user = |groups: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=4242", "--regid=4242"]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg(format!("--groups={}", groups.join(",")));
        }
        c.arg(molde_tests::bin("molde"))
            .args(["--address", d.sock.to_str().unwrap(), "ps"])
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let member = as_user(&["4243"]);
    assert!(
        member.status.success(),
        "{}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert!(String::from_utf8_lossy(&member.stdout).starts_with("CONTAINER ID"));
    let other = as_user(&[]);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("permission denied") && err.contains("[grpc] gid") && !err.contains("is molded running"),
        "{err}"
    );
}

/// A credential helper as docker's are: `docker-credential-NAME get|store|erase`,
/// keeping what it is given in a file beside it.
fn helper(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let store = dir.join("store.json");
    let script = format!(
        "#!/bin/sh\nset -e\nstore={store}\ncase \"$1\" in\n\
         store) cat > \"$store\" ;;\n\
         get) url=$(cat); if [ -s \"$store\" ] && grep -q \"\\\"ServerURL\\\":\\\"$url\\\"\" \"$store\"; then cat \"$store\"; \
         else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
         erase) url=$(cat); rm -f \"$store\"; echo \"erase $url\" >> {log} ;;\n\
         *) exit 2 ;;\nesac\n",
        store = store.display(),
        log = dir.join("erased").display()
    );
    let path = bin.join("docker-credential-molde-test");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn login_checks_credentials_and_credential_helpers_keep_them() {
    let d = Daemon::start();
    d.load_busybox();
    let reg = Registry::start_with_auth("alice", "s3cret");
    let home = tempfile::tempdir().unwrap();
    let bin = helper(home.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let molde = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(molde_tests::bin("molde"))
            .env("MOLDE_ADDRESS", &d.sock)
            .env("HOME", home.path())
            .env("PATH", &path)
            .env_remove("DOCKER_CONFIG")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let config = home.path().join(".docker/config.json");
    let login = ["login", reg.host.as_str(), "-u", "alice", "--password-stdin"];

    // A wrong password is refused by the registry and nothing is stored.
    let out = molde(&login, b"wrong\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reg.host) && err.contains("wrong username or password"),
        "{err}"
    );
    assert!(!config.exists(), "nothing stored for a refused login");
    // A registry that is not there is named.
    let gone = molde_tests::registry::free_port();
    let gone = format!("127.0.0.1:{gone}");
    let out = molde(&["login", &gone, "-u", "alice", "--password-stdin"], b"s3cret\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot reach registry {gone}")), "{err}");

    // With credsStore, the helper keeps the secret; config.json does not.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, r#"{"credsStore": "molde-test"}"#).unwrap();
    let out = molde(&login, b"s3cret\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("docker-credential-molde-test"));
    let kept = std::fs::read_to_string(home.path().join("store.json")).unwrap();
    assert!(kept.contains("s3cret") && kept.contains(&reg.host), "{kept}");
    let cfg = std::fs::read_to_string(&config).unwrap();
    assert!(
        cfg.contains(&reg.host) && !cfg.contains("auth\""),
        "only an empty entry: {cfg}"
    );

    // Push and pull take the credentials from the helper.
    let reference = format!("{}/private/busybox:1", reg.host);
    let out = molde(&["push", IMAGE, &reference], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = molde(&["pull", "-q", &reference], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Logout erases them in the helper; the next pull has none.
    assert!(molde(&["logout", &reg.host], b"").status.success());
    let erased = std::fs::read_to_string(home.path().join("erased")).unwrap();
    assert_eq!(erased.trim(), format!("erase {}", reg.host));
    d.molde(&["rmi", &reference]).ok();
    let out = molde(&["pull", "-q", &reference], b"");
    assert!(!out.status.success(), "pulled without credentials");
}

// Container names unlike the other tests': cgroup paths are namespace/name,
// the same for every molded on the host.
#[test]
fn network_connect_puts_a_running_container_on_a_second_network() {
    let d = Daemon::start();
    d.load_busybox();
    d.molde(&["network", "create", "front"]).ok();
    d.molde(&["network", "create", "back"]).ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "fweb",
        "--network",
        "front",
        IMAGE,
        "sleep",
        "300",
    ])
    .ok();
    d.molde(&[
        "run",
        "-d",
        "--name",
        "bdb",
        "--network",
        "back",
        IMAGE,
        "sleep",
        "300",
    ])
    .ok();
    // Isolated networks: web cannot even name db.
    assert!(!d.molde(&["exec", "fweb", "nslookup", "bdb"]).out.status.success());

    d.molde(&["network", "connect", "--alias", "cache", "back", "fweb"])
        .ok();
    let addrs = d.molde(&["exec", "fweb", "ip", "-o", "-4", "addr"]).ok();
    assert!(addrs.contains("eth0") && addrs.contains("eth1"), "{addrs}");
    // web reaches db by name through its first network's DNS; db finds web's alias.
    assert!(
        d.molde(&["exec", "fweb", "ping", "-c1", "-W2", "bdb"])
            .ok()
            .contains("1 packets received")
    );
    let found = d.molde(&["exec", "bdb", "nslookup", "cache"]).ok();
    let on_back = d.inspect("fweb")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !on_back.is_empty() && found.contains(&on_back),
        "{found} names {on_back}"
    );
    let members = d
        .molde(&[
            "network",
            "inspect",
            "-f",
            "{{range $k, $v := .Containers}}{{$v.Name}} {{end}}",
            "back",
        ])
        .ok();
    assert!(members.contains("fweb") && members.contains("bdb"), "{members}");
    let err = d.molde(&["network", "rm", "back"]).fails();
    assert!(err.contains("fweb"), "a network in use is kept: {err}");
    let err = d.molde(&["network", "connect", "back", "fweb"]).fails();
    assert!(err.contains("already on network back"), "{err}");

    // Kept across a restart of the container.
    d.molde(&["restart", "-t", "1", "fweb"]).ok();
    assert!(
        d.molde(&["exec", "fweb", "ip", "-o", "-4", "addr"])
            .ok()
            .contains("eth1")
    );
    assert!(
        d.molde(&["exec", "fweb", "ping", "-c1", "-W2", "bdb"])
            .out
            .status
            .success()
    );

    d.molde(&["network", "disconnect", "back", "fweb"]).ok();
    assert!(
        !d.molde(&["exec", "fweb", "ip", "-o", "-4", "addr"])
            .ok()
            .contains("eth1")
    );
    assert!(
        !d.molde(&["exec", "fweb", "ping", "-c1", "-W1", "bdb"])
            .out
            .status
            .success()
    );
    let err = d.molde(&["network", "disconnect", "front", "fweb"]).fails();
    assert!(err.contains("created on network front"), "{err}");
    let events = d
        .molde(&[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            "type=network",
        ])
        .ok();
    assert!(
        events.contains("network connect back") && events.contains("network disconnect back"),
        "{events}"
    );
    d.molde(&["rm", "-f", "fweb", "bdb"]).ok();
    d.molde(&["network", "rm", "front", "back"]).ok();
}

#[test]
fn metrics_serve_grpc_calls_and_each_containers_cgroup_readings() {
    let port = molde_tests::registry::free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with_config(&format!("[metrics]\naddress = \"{addr}\"\n"));
    d.load_busybox();
    d.molde(&["run", "-d", "--name", "metered", IMAGE, "sleep", "300"])
        .ok();
    let scrape = molde_tests::http_get(&addr, "/metrics");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
    // The calls molde made, by service, method and code.
    assert!(
        molde_tests::sample(&scrape, "grpc_server_handled_total", "grpc_method=\"Run\"")
            .is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert!(
        scrape.contains("grpc_server_handling_seconds_bucket{"),
        "{scrape}"
    );
    // The container, under cAdvisor's names, read from its cgroup.
    let me = "name=\"metered\"";
    assert_eq!(
        molde_tests::sample(&scrape, "container_processes", me),
        Some(1.0),
        "{scrape}"
    );
    let rss = molde_tests::sample(&scrape, "container_memory_rss", me).expect("rss");
    let usage = molde_tests::sample(&scrape, "container_memory_usage_bytes", me).expect("usage");
    assert!(rss > 0.0 && rss <= usage, "{rss} {usage}");
    assert!(molde_tests::sample(&scrape, "container_cpu_usage_seconds_total", me).is_some());
    let id = scrape
        .lines()
        .find(|l| l.starts_with("container_processes{") && l.contains(me))
        .and_then(|l| l.split("id=\"").nth(1)?.split('"').next().map(str::to_string))
        .unwrap();
    let cg = format!("molde/default-{id}");
    let from_cgroup = std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{cg}/memory.usage_in_bytes"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{cg}/memory.current")))
        .unwrap();
    let from_cgroup: f64 = from_cgroup.trim().parse().unwrap();
    assert!(
        (from_cgroup - usage).abs() < (1 << 20) as f64,
        "cgroup {from_cgroup}, metrics {usage}"
    );
    // What it writes into its rootfs is its writable layer's usage.
    let before = molde_tests::sample(&scrape, "container_fs_usage_bytes", me).expect("fs usage");
    d.molde(&[
        "exec",
        "metered",
        "dd",
        "if=/dev/zero",
        "of=/written",
        "bs=1024",
        "count=3072",
    ])
    .ok();
    let after = molde_tests::sample(
        &molde_tests::http_get(&addr, "/metrics"),
        "container_fs_usage_bytes",
        me,
    )
    .unwrap();
    assert!(after - before >= (3 << 20) as f64, "{before} -> {after}");
    // A pull counts: the image, its blob and bytes from the registry, the
    // layer unpacked.
    let reg = Registry::start();
    let work = d.dir.path().join("pulled");
    let l = molde_tests::image::layout(
        &work,
        &[molde_tests::image::tar(&molde_tests::image::busybox_rootfs())],
        molde_tests::image::Compression::Gzip,
        molde_tests::image::host_arch(),
    );
    reg.push_layout(&l.dir, "metered/busybox:1");
    d.molde(&["pull", &format!("{}/metered/busybox:1", reg.host)])
        .ok();
    let scrape = molde_tests::http_get(&addr, "/metrics");
    let count = |name: &str, label: &str| {
        molde_tests::sample(&scrape, name, label).unwrap_or_else(|| panic!("{name}: {scrape}"))
    };
    assert_eq!(
        scrape.lines().find(|l| l.starts_with("molde_pulls_total ")),
        Some("molde_pulls_total 1"),
        "{scrape}"
    );
    assert_eq!(count("molde_pull_blobs_total", "source=\"registry\""), 1.0);
    assert!(count("molde_pull_bytes_total", "source=\"registry\"") > 100_000.0);
    assert_eq!(count("molde_pull_blobs_total", "source=\"peer\""), 0.0);
    let unpacked: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("molde_layers_unpacked_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(unpacked >= 1.0, "{scrape}");
    // The namespace's stores: the pulled blobs, the image's layer and the
    // running container's snapshots, one shim.
    let ns = "namespace=\"default\"";
    assert!(count("molde_content_bytes", ns) > 100_000.0, "{scrape}");
    assert!(count("molde_content_blobs", ns) >= 3.0, "{scrape}");
    assert!(count("molde_snapshots", "kind=\"committed\"") >= 1.0, "{scrape}");
    assert!(count("molde_snapshots", "kind=\"active\"") >= 1.0, "{scrape}");
    assert!(
        count("molde_snapshot_bytes", "kind=\"active\"") >= (3 << 20) as f64,
        "the container's writable layer holds what it wrote: {scrape}"
    );
    assert_eq!(count("molde_shims_running", ns), 1.0, "{scrape}");
    assert!(!scrape.contains("molde_cluster_peers"), "no cluster, no peers");
    // A push counts: the image, and its two blobs (config and layer)
    // uploaded, mounted or found at the registry.
    let pushed = format!("{}/metered/copy:1", reg.host);
    d.molde(&["tag", &format!("{}/metered/busybox:1", reg.host), &pushed])
        .ok();
    d.molde(&["push", &pushed]).ok();
    let scrape = molde_tests::http_get(&addr, "/metrics");
    let count = |name: &str, label: &str| {
        molde_tests::sample(&scrape, name, label).unwrap_or_else(|| panic!("{name}: {scrape}"))
    };
    assert_eq!(
        scrape.lines().find(|l| l.starts_with("molde_pushes_total ")),
        Some("molde_pushes_total 1"),
        "{scrape}"
    );
    let blobs: f64 = ["uploaded", "mounted", "present"]
        .iter()
        .map(|o| count("molde_push_blobs_total", &format!("outcome=\"{o}\"")))
        .sum();
    assert_eq!(blobs, 2.0, "{scrape}");
    // containerd's path too; anything else is not found.
    assert!(molde_tests::http_get(&addr, "/v1/metrics").contains("container_processes{"));
    assert!(molde_tests::http_get(&addr, "/nothing").starts_with("HTTP/1.1 404"));
}
