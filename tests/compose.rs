//! `molde compose` against a real molded: a project of several services
//! (one built from a Dockerfile, one waited for until healthy) that find
//! each other by service name on the project's network, with `.env`
//! interpolation, env_file, a named volume that outlives `down`, and the
//! commands around it (ps, logs, exec, run, stop/start/restart, config,
//! push/pull, down -v --rmi). (Root, as the daemon runs.)

use std::path::Path;

use molde_tests::Daemon;
use molde_tests::registry::Registry;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn compose(d: &Daemon, dir: &Path, args: &[&str]) -> molde_tests::Run {
    let file = dir.join("compose.yaml");
    let mut all = vec!["compose", "-f", file.to_str().unwrap()];
    all.extend_from_slice(args);
    d.molde(&all)
}

const SHOP: &str = r#"
name: shop
services:
  db:
    image: localhost/molde/busybox
    command: ["sh", "-c", "mkdir -p /www && cat /data/count 2>/dev/null; echo $$(( $$(cat /data/count 2>/dev/null || echo 0) + 1 )) > /data/count; echo served-by-db > /www/index.html && touch /tmp/ready && exec httpd -f -p 8080 -h /www"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      retries: 30
    volumes:
      - data:/data
    ports:
      - "127.0.0.1:${DB_PORT}:8080"
    labels:
      tier: storage
  web:
    build:
      context: ./app
      args:
        GREETING: ${GREETING:-unset}
    environment:
      MODE: ${MODE:-prod}
      PLAIN: "1"
    env_file: web.env
    depends_on:
      db:
        condition: service_healthy
    command: sh -c 'cat /greeting; echo mode=$$MODE color=$$COLOR; wget -qO- http://db:8080/index.html; exec sleep 300'
    deploy:
      resources:
        limits:
          memory: 64m
  worker:
    image: localhost/molde/busybox
    entrypoint: ["sh", "-c"]
    command: ["echo worker-done; exec sleep 300"]
    depends_on: [web]
volumes:
  data:
"#;

#[test]
fn a_project_of_services_comes_up_finds_itself_by_name_and_goes_down() {
    let d = Daemon::start();
    d.load_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(dir, "compose.yaml", SHOP);
    write(
        dir,
        "app/Dockerfile",
        "FROM localhost/molde/busybox\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n",
    );
    write(dir, "web.env", "# the colour\nCOLOR=blue\n");
    let port = molde_tests::registry::free_port();
    write(dir, ".env", &format!("GREETING=bonjour\nDB_PORT={port}\n"));

    // config: interpolated from .env, defaults where unset.
    let config = compose(&d, dir, &["config"]).ok();
    assert!(
        config.contains("GREETING: bonjour") && config.contains("MODE: prod"),
        "{config}"
    );
    assert_eq!(
        compose(&d, dir, &["config", "--services"]).ok(),
        "db\nweb\nworker\n"
    );

    let up = compose(&d, dir, &["up", "-d"]);
    let err = up.stderr();
    up.ok();
    assert!(
        err.contains("Network shop_default  Created") && err.contains("Volume shop_data  Created"),
        "{err}"
    );
    // db was healthy before web started: web's first request found it.
    molde_tests::eventually(30, "web's output", || {
        compose(&d, dir, &["logs", "web"]).ok().contains("served-by-db")
    });
    let logs = compose(&d, dir, &["logs", "web"]).ok();
    assert!(
        logs.contains("shop-web-1  | bonjour"),
        "the build arg from .env: {logs}"
    );
    assert!(
        logs.contains("shop-web-1  | mode=prod color=blue"),
        "environment and env_file: {logs}"
    );
    assert!(
        logs.contains("shop-web-1  | served-by-db"),
        "db by its service name: {logs}"
    );
    molde_tests::eventually(30, "worker's output", || {
        compose(&d, dir, &["logs", "worker"]).ok().contains("worker-done")
    });

    // db's published port answers on the host.
    let page = {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    assert!(page.contains("served-by-db"), "{page}");
    let ps = compose(&d, dir, &["ps"]).ok();
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    for name in ["shop-db-1", "shop-web-1", "shop-worker-1"] {
        assert!(ps.contains(name), "{ps}");
    }
    assert!(
        ps.contains("(healthy)") && ps.lines().next().unwrap().contains("SERVICE"),
        "{ps}"
    );
    let labels = d.inspect("shop-db-1")["Config"]["Labels"].clone();
    assert_eq!(labels["com.docker.compose.project"], "shop");
    assert_eq!(labels["com.docker.compose.service"], "db");
    assert_eq!(labels["tier"], "storage");
    let web = d.inspect("shop-web-1");
    assert_eq!(web["HostConfig"]["NetworkMode"], "shop_default");
    assert_eq!(web["HostConfig"]["Resources"]["memory"]["limit"], 64 << 20);

    // exec and run: in the service's container, and in a one-off one.
    assert_eq!(
        compose(&d, dir, &["exec", "-T", "web", "cat", "/greeting"]).ok(),
        "bonjour\n"
    );
    assert_eq!(
        compose(
            &d,
            dir,
            &["exec", "-T", "web", "wget", "-qO-", "http://db:8080/index.html"]
        )
        .ok(),
        "served-by-db\n"
    );
    let run = compose(
        &d,
        dir,
        &[
            "run",
            "--rm",
            "-T",
            "web",
            "sh",
            "-c",
            "echo one-off $MODE; exit 3",
        ],
    );
    assert_eq!(
        run.out.status.code(),
        Some(3),
        "run exits with the command's status"
    );
    assert_eq!(String::from_utf8_lossy(&run.out.stdout), "one-off prod\n");
    assert_eq!(
        compose(&d, dir, &["ps", "-a", "-q"]).ok().lines().count(),
        3,
        "--rm removed the one-off"
    );

    // A second up changes nothing; a changed file recreates what changed.
    let again = compose(&d, dir, &["up", "-d"]);
    let err = again.stderr();
    again.ok();
    assert!(
        err.contains("Container shop-web-1  Running") && !err.contains("Recreate"),
        "{err}"
    );
    write(dir, "compose.yaml", &SHOP.replace("PLAIN: \"1\"", "PLAIN: \"2\""));
    let changed = compose(&d, dir, &["up", "-d", "web"]);
    let err = changed.stderr();
    changed.ok();
    assert!(err.contains("Container shop-web-1  Recreate"), "{err}");
    assert!(!err.contains("shop-db-1  Recreate"), "{err}");

    // stop, start, restart by service.
    compose(&d, dir, &["stop", "worker"]).ok();
    assert!(
        compose(&d, dir, &["ps"])
            .ok()
            .lines()
            .all(|l| !l.contains("shop-worker-1"))
    );
    compose(&d, dir, &["start", "worker"]).ok();
    compose(&d, dir, &["restart", "-t", "1", "worker"]).ok();
    assert!(compose(&d, dir, &["ps"]).ok().contains("shop-worker-1"));

    // down keeps named volumes; the next db sees what the first wrote.
    compose(&d, dir, &["down", "-t", "1"]).ok();
    assert_eq!(compose(&d, dir, &["ps", "-a", "-q"]).ok(), "");
    assert!(!d.molde(&["network", "ls"]).ok().contains("shop_default"));
    assert!(d.molde(&["volume", "ls", "-q"]).ok().contains("shop_data"));
    compose(&d, dir, &["up", "-d", "db"]).ok();
    molde_tests::eventually(30, "db's second run", || {
        compose(&d, dir, &["logs", "db"]).ok().contains("shop-db-1  | 1")
    });
    // down -v --rmi local: volumes and the built image go too.
    compose(&d, dir, &["down", "-v", "--rmi", "local", "-t", "1"]).ok();
    assert!(!d.molde(&["volume", "ls", "-q"]).ok().contains("shop_data"));
    assert!(!d.molde(&["images", "-q"]).ok().contains("shop-web"));
    assert!(
        d.molde(&["images", "-q"]).ok().contains("busybox"),
        "images from a registry stay"
    );
}

#[test]
fn up_in_the_foreground_prefixes_output_and_ends_when_the_services_do() {
    let d = Daemon::start();
    d.load_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Project");
    std::fs::create_dir_all(&dir).unwrap();
    write(
        &dir,
        "compose.yaml",
        "services:\n  a:\n    image: localhost/molde/busybox\n    command: echo from-a\n  b:\n    image: localhost/molde/busybox\n    command: sh -c 'sleep 0.3; echo from-b'\n",
    );
    // The project is named after its folder, as compose names it.
    let out = compose(&d, &dir, &["up"]).ok();
    assert!(out.contains("myproject-a-1  | from-a"), "{out}");
    assert!(out.contains("myproject-b-1  | from-b"), "{out}");
    let ps = compose(&d, &dir, &["ps", "-a"]).ok();
    assert!(ps.contains("Exited (0)"), "{ps}");
    compose(&d, &dir, &["down"]).ok();
    assert_eq!(d.molde(&["ps", "-a", "-q"]).ok(), "");
}

#[test]
fn bad_compose_files_are_refused_naming_what_is_wrong() {
    let d = Daemon::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        ("services:\n  a:\n    command: echo\n", "neither image nor build"),
        (
            "services:\n  a:\n    image: x\n    command: {a: 1}\n",
            "service a: command",
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: [b]\n",
            "depends on b",
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
            "circle",
        ),
        (
            "services:\n  a:\n    image: x\n    volumes: [\"data:/d\"]\n",
            "volume data",
        ),
        ("services:\n  a:\n    image: ${NEED:?set NEED}\n", "set NEED"),
        ("services: [\n", "not valid YAML"),
    ];
    for (text, want) in cases {
        write(dir, "compose.yaml", text);
        let err = compose(&d, dir, &["config"]).fails();
        assert!(err.contains(want), "{text}: {err}");
    }
    write(
        dir,
        "compose.yaml",
        "services:\n  a:\n    image: x\n    sysctls: {a: 1}\n",
    );
    let r = compose(&d, dir, &["config", "-q"]);
    let err = r.stderr();
    r.ok();
    assert!(
        err.contains("sysctls") && err.contains("not supported"),
        "unknown keys are named: {err}"
    );
}

#[test]
fn push_and_pull_the_services_images() {
    let d = Daemon::start();
    d.load_busybox();
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let image = format!("{}/shop/app:1", reg.host);
    write(
        dir,
        "compose.yaml",
        &format!(
            "services:\n  app:\n    build: ./app\n    image: {image}\n    command: cat /made\n  side:\n    image: {image}\n"
        ),
    );
    write(
        dir,
        "app/Dockerfile",
        "FROM localhost/molde/busybox\nRUN echo made-here > /made\n",
    );
    compose(&d, dir, &["build"]).ok();
    compose(&d, dir, &["push"]).ok();
    d.molde(&["rmi", &image]).ok();
    // `side` only has an image: pull fetches it from the registry.
    compose(&d, dir, &["pull", "-q"]).ok();
    assert!(d.molde(&["images", "-q"]).ok().contains(&image));
    let out = compose(&d, dir, &["run", "--rm", "-T", "app"]).ok();
    assert_eq!(out, "made-here\n");
}

#[test]
fn a_service_on_two_networks_reaches_both_and_they_stay_apart() {
    let d = Daemon::start();
    d.load_busybox();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write(
        dir,
        "compose.yaml",
        "name: tiers\nservices:\n  api:\n    image: localhost/molde/busybox\n    command: sleep 300\n    networks: [front, back]\n  \
         db:\n    image: localhost/molde/busybox\n    command: sleep 300\n    networks:\n      back:\n        aliases: [database]\n  \
         ui:\n    image: localhost/molde/busybox\n    command: sleep 300\n    networks: [front]\nnetworks:\n  front: {}\n  back:\n    internal: true\n",
    );
    compose(&d, dir, &["up", "-d"]).ok();
    for target in ["db", "database", "ui"] {
        let r = compose(&d, dir, &["exec", "-T", "api", "ping", "-c1", "-W2", target]);
        assert!(r.out.status.success(), "api reaches {target}: {}", r.stderr());
    }
    let r = compose(&d, dir, &["exec", "-T", "ui", "ping", "-c1", "-W1", "db"]);
    assert!(!r.out.status.success(), "ui is not on back");
    let r = compose(&d, dir, &["exec", "-T", "db", "ping", "-c1", "-W2", "api"]);
    assert!(r.out.status.success(), "db finds api on back: {}", r.stderr());
    compose(&d, dir, &["down", "-t", "1"]).ok();
    let nets = d.molde(&["network", "ls", "--format", "{{.Name}}"]).ok();
    assert!(!nets.contains("tiers_"), "{nets}");
}
