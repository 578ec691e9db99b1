//! The same Dockerfiles built by buildah (Debian's 1.28, `--runtime runc`)
//! and by molde: the root filesystems must be the same entry for entry (path,
//! type, mode, owner, symlink target, contents) and the configs equivalent.
//! Each image also runs with `molde run` and prints what its Dockerfile says.
//! Features buildah 1.28 lacks (heredocs, `ADD --checksum`, `COPY --link`)
//! are checked against what the Dockerfile reference documents instead.
//!
//! Both images are read from docker-archive exports (`buildah push
//! docker-archive:`, `molde build -o type=docker`) by the same reader here.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use molde_tests::registry::free_port;
use molde_tests::{Daemon, require};
use serde_json::Value;

/// One file system entry, as a user compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    /// A file's contents digest, a symlink's target; "" otherwise.
    data: String,
}

/// An image as its archive shows it: the config and the merged rootfs.
struct Image {
    config: Value,
    fs: BTreeMap<String, Entry>,
}

fn decompress(blob: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(&blob[..]).unwrap()
    } else {
        blob
    }
}

/// Reads a docker-archive (`manifest.json` naming the config and layers) and
/// applies the layers in order, whiteouts included.
fn read_archive(path: &Path) -> Image {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let m = &manifest[0];
    let config: Value = serde_json::from_slice(&files[m["Config"].as_str().unwrap()]).unwrap();
    let mut fs: BTreeMap<String, Entry> = BTreeMap::new();
    for layer in m["Layers"].as_array().unwrap() {
        let raw = decompress(files[layer.as_str().unwrap()].clone());
        let mut t = tar::Archive::new(&raw[..]);
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let p = format!("/{}", name.trim_start_matches("./").trim_matches('/'));
            let (dir, base) = p.rsplit_once('/').unwrap();
            if base == ".wh..wh..opq" {
                fs.retain(|k, _| !k.starts_with(&format!("{dir}/")));
                continue;
            }
            if let Some(gone) = base.strip_prefix(".wh.") {
                let gone = format!("{dir}/{gone}");
                fs.retain(|k, _| k != &gone && !k.starts_with(&format!("{gone}/")));
                continue;
            }
            let h = e.header().clone();
            let kind = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                tar::EntryType::Block => 'b',
                tar::EntryType::Fifo => 'p',
                _ => '?',
            };
            let data = match kind {
                'f' => {
                    let mut d = Vec::new();
                    e.read_to_end(&mut d).unwrap();
                    molde_tests::sha256(&d)
                }
                'l' => h.link_name().unwrap().unwrap().to_string_lossy().into_owned(),
                'h' => {
                    // A hard link reads as the file it links to.
                    let target = h.link_name().unwrap().unwrap().to_string_lossy().into_owned();
                    let target = format!("/{}", target.trim_start_matches("./").trim_matches('/'));
                    let t = fs.get(&target).cloned().expect("hard link target");
                    fs.insert(p, t);
                    continue;
                }
                _ => String::new(),
            };
            let entry = Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                data,
            };
            // A directory entry over an existing one changes its metadata only.
            fs.insert(p, entry);
        }
    }
    Image { config, fs }
}

const CONFIG_KEYS: &[&str] = &[
    "Env",
    "Entrypoint",
    "Cmd",
    "User",
    "WorkingDir",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
];

/// A config value as both tools mean it: absent, null and empty are one.
fn norm(v: Option<&Value>, key: &str) -> Value {
    let mut v = v.cloned().unwrap_or(Value::Null);
    if key == "Labels"
        && let Some(o) = v.as_object_mut()
    {
        // buildah stamps its own version.
        o.remove("io.buildah.version");
    }
    match &v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        Value::String(s) if s.is_empty() => Value::Null,
        _ => v,
    }
}

/// Entries only buildah's rootfs has that are the mount points it leaves
/// in its layers (empty files and directories at or above where RUN mounted
/// something: /etc/hosts, /etc/hostname, /etc/resolv.conf, /run and the
/// parents of `--mount` targets). molde, like BuildKit, leaves them out.
fn is_buildah_stub(path: &str, e: &Entry, mount_targets: &[&str]) -> bool {
    let empty = (e.kind == 'f' && e.data == molde_tests::sha256(b"")) || e.kind == 'd';
    let runtime = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run"];
    empty
        && (runtime.contains(&path)
            || mount_targets
                .iter()
                .chain(["/run/secrets/x"].iter())
                .any(|t| t.starts_with(&format!("{path}/")) || *t == path))
}

fn compare(case: &str, molde: &Image, buildah: &Image, mount_targets: &[&str]) {
    let mut diffs = Vec::new();
    let paths: std::collections::BTreeSet<&String> = molde.fs.keys().chain(buildah.fs.keys()).collect();
    for p in paths {
        match (molde.fs.get(p), buildah.fs.get(p)) {
            (Some(a), Some(b)) if a == b => {}
            (None, Some(b)) if is_buildah_stub(p, b, mount_targets) => {}
            (a, b) => diffs.push(format!("{p}: molde {a:?}, buildah {b:?}")),
        }
    }
    for key in CONFIG_KEYS {
        let (a, b) = (
            norm(molde.config["config"].get(*key), key),
            norm(buildah.config["config"].get(*key), key),
        );
        if a != b {
            diffs.push(format!("config {key}: molde {a}, buildah {b}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{case}: molde's and buildah's images differ:\n{}",
        diffs.join("\n")
    );
}

/// buildah with its own storage under the test's directory, the test's
/// busybox image in it under the name molde has it.
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn new(d: &Daemon) -> Buildah {
        let b = Buildah {
            root: d.dir.path().join("buildah"),
        };
        let tar = d.dir.path().join("busybox.tar");
        let id = b.run(&["pull", "-q", &format!("oci-archive:{}", tar.display())]);
        b.run(&[
            "tag",
            id.lines().last().unwrap().trim(),
            "localhost/molde/busybox:latest",
        ]);
        b
    }

    fn command(&self) -> Command {
        let mut c = Command::new(require("buildah"));
        c.arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "overlay"]);
        c
    }

    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("buildah");
        assert!(
            out.status.success(),
            "buildah {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds and exports as a docker-archive.
    fn build(&self, name: &str, ctx: &Path, extra: &[&str], out: &Path) {
        let ctx = ctx.to_str().unwrap();
        let mut args = vec![
            "bud",
            "--format",
            "docker",
            "--layers",
            "--pull=false",
            "--runtime",
            "runc",
            "-q",
            "-t",
            name,
        ];
        args.extend_from_slice(extra);
        args.push(ctx);
        self.run(&args);
        let _ = std::fs::remove_file(out);
        self.run(&["push", "-q", name, &format!("docker-archive:{}", out.display())]);
    }
}

/// A context directory: (path, contents, mode).
fn context(d: &Daemon, name: &str, files: &[(&str, &str, u32)]) -> PathBuf {
    let dir = d.dir.path().join("ctx").join(name);
    for (path, text, mode) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    dir
}

fn molde_build(d: &Daemon, name: &str, ctx: &Path, extra: &[&str], out: &Path) {
    let dest = format!("type=docker,dest={}", out.display());
    let mut args = vec!["build", "-q", "-t", name, "-o", &dest];
    args.extend_from_slice(extra);
    let ctx = ctx.to_str().unwrap();
    args.push(ctx);
    d.molde(&args).ok();
}

/// Builds `ctx` with both, compares, and returns what molde's image prints.
fn both(d: &Daemon, b: &Buildah, name: &str, ctx: &Path, extra: &[&str], mounts: &[&str]) -> String {
    let out = d.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (m, bb) = (
        out.join(format!("{name}-molde.tar")),
        out.join(format!("{name}-buildah.tar")),
    );
    molde_build(d, name, ctx, extra, &m);
    b.build(name, ctx, extra, &bb);
    compare(name, &read_archive(&m), &read_archive(&bb), mounts);
    d.molde(&["run", "--rm", "--network", "none", name]).ok()
}

fn setup() -> (Daemon, Buildah) {
    require("buildah");
    require("runc");
    let d = Daemon::start();
    d.load_busybox();
    let b = Buildah::new(&d);
    (d, b)
}

#[test]
fn instructions_build_the_same_images_as_buildah() {
    let (d, b) = setup();
    let ctx = context(
        &d,
        "instructions",
        &[
            (
                "Dockerfile",
                r#"# syntax=docker/dockerfile:1
# check=error=true
# A comment, then every metadata instruction and both ENV forms.
FROM localhost/molde/busybox AS base
MAINTAINER molde tests <tests@molde.invalid>
ARG WHO=world
ENV GREETING="hello $WHO" OTHER=x
ENV LEGACY value with spaces
RUN mkdir -p /data && echo "$GREETING" > /data/g && ln -s /data/g /data/l \
    && chmod 751 /data \
    && echo "app:x:1234:1234::/home/app:/bin/sh" >> /etc/passwd \
    && echo "app:x:1234:" >> /etc/group
RUN ["/bin/sh", "-c", "echo exec-form > /data/exec"]
SHELL ["/bin/sh", "-ec"]
RUN [ "$0" = /bin/sh ] && echo shell-changed > /data/shell
WORKDIR /work
WORKDIR sub
COPY a.txt link ./
COPY dir /work/dir
COPY --chown=1234:1234 dir/sub/ /owned/deep/
COPY --chown=app a.txt /owned-by-name/
COPY --chmod=600 a.txt /secret.txt
COPY d*/*.txt /globbed/
ADD a.txt /added/
RUN rm /work/sub/a.txt && touch /tmp/x
USER app
WORKDIR /appdir/sub
RUN touch mine
EXPOSE 8080/tcp 53/udp 9000
VOLUME /data /logs
VOLUME ["/cache"]
LABEL a=b "c d"=e multi="one two"
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD wget -q localhost || exit 1
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /data/g /data/exec /data/shell; id -u; ls /work/sub"]
"#,
                0o644,
            ),
            ("a.txt", "hello\n", 0o644),
            ("dir/b.txt", "b\n", 0o640),
            ("dir/sub/c.txt", "c\n", 0o755),
            ("dir/sub/d.bin", "\x00\x01", 0o600),
        ],
    );
    std::os::unix::fs::symlink("a.txt", ctx.join("link")).unwrap();
    std::fs::set_permissions(ctx.join("dir/sub"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = both(&d, &b, "instructions", &ctx, &[], &[]);
    assert_eq!(
        out, "hello world\nexec-form\nshell-changed\n1234\nlink\n",
        "what the image's CMD prints"
    );
}

#[test]
fn stages_args_and_context_rules_build_the_same_images_as_buildah() {
    let (d, b) = setup();
    let ctx = context(
        &d,
        "stages",
        &[
            (
                "Dockerfile",
                r#"# escape=`
ARG BASE=localhost/molde/busybox
ARG UNUSED
FROM --platform=$BUILDPLATFORM ${BASE} AS build
ARG MODE
ARG LEVEL=3
RUN mkdir /out && echo "mode=${MODE:-debug} level=${LEVEL:+set} unused=${UNUSED:-none}" > /out/info `
    && for i in 1 2 3; do echo $i > /out/n$i; done `
    && echo "proxy=$HTTP_PROXY" > /out/proxy
COPY src/ /src/

FROM build AS test
RUN cat /out/info > /out/tested

FROM localhost/molde/busybox AS unused
RUN exit 1

FROM $BASE
COPY --from=build /out /app/out
COPY --from=test /out/tested /app/
COPY --from=localhost/molde/busybox /etc/group /app/group
COPY . /ctx/
HEALTHCHECK NONE
ENTRYPOINT ["env"]
CMD ["sh", "-c", "cat /app/out/info /app/tested /app/out/proxy; ls /ctx | tr '\n' ' '"]
"#,
                0o644,
            ),
            (".dockerignore", "*.log\nsecret/\n!keep.log\n", 0o644),
            ("src/main.c", "int main(){}\n", 0o644),
            ("debug.log", "noise\n", 0o644),
            ("keep.log", "kept\n", 0o644),
            ("secret/key", "k\n", 0o600),
        ],
    );
    // HTTP_PROXY is predefined: RUN sees it without an ARG.
    let args = [
        "--build-arg",
        "MODE=release",
        "--build-arg",
        "HTTP_PROXY=http://127.0.0.1:3128",
    ];
    let out = both(&d, &b, "stages", &ctx, &args, &[]);
    assert_eq!(
        out,
        "mode=release level=set unused=none\nmode=release level=set unused=none\nproxy=http://127.0.0.1:3128\nDockerfile keep.log src ",
        "what the image's CMD prints"
    );
    // --target builds up to that stage; stages it does not need are skipped.
    let t = d.molde(&[
        "build",
        "--progress",
        "plain",
        "--target",
        "build",
        "-t",
        "stages-build",
        ctx.to_str().unwrap(),
    ]);
    let log = t.ok();
    let log = log + &t.stderr();
    assert!(!log.contains("exit 1"), "the unused stage ran:\n{log}");
    assert_eq!(
        d.molde(&["run", "--rm", "stages-build", "cat", "/out/n2"]).ok(),
        "2\n"
    );
}

#[test]
fn run_mounts_and_archives_build_the_same_images_as_buildah() {
    let (d, b) = setup();
    let ctx = context(
        &d,
        "mounts",
        &[
            (
                "Dockerfile",
                r#"FROM localhost/molde/busybox AS tools
RUN mkdir -p /opt/tool && echo tool-v1 > /opt/tool/version

FROM localhost/molde/busybox
RUN --mount=type=cache,id=CACHE_ID,target=/var/cache/app echo run >> /var/cache/app/count && wc -l < /var/cache/app/count > /cachecount
RUN --mount=type=bind,source=src,target=/mnt/src cat /mnt/src/in.txt > /fromctx
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool cat /mnt/tool/version > /fromstage
RUN --mount=type=tmpfs,target=/scratch echo temp > /scratch/t && ls /scratch > /tmpfslist
RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok | wc -c > /secretlen
RUN --mount=type=cache,id=CACHE_ID-owned,target=/owned-cache,uid=1234,gid=1234,mode=0700 stat -c '%u %g %a' /owned-cache > /cacheowner
RUN --mount=type=secret,id=tok,target=/etc/tok.conf,mode=0440 stat -c '%a' /etc/tok.conf > /secretmode
RUN --mount=type=bind,from=localhost/molde/busybox,source=/etc,target=/mnt/img head -1 /mnt/img/group > /imggroup
ADD bundle.tar.gz /unpacked/
ADD plain.tar /plain/
COPY bundle.tar.gz /kept/
CMD ["cat", "/cachecount", "/fromctx", "/fromstage", "/tmpfslist", "/secretlen", "/cacheowner", "/secretmode", "/imggroup", "/unpacked/pkg/p.txt"]
"#,
                0o644,
            ),
            ("src/in.txt", "from-context\n", 0o644),
            ("t/pkg/p.txt", "payload\n", 0o640),
        ],
    );
    std::fs::set_permissions(ctx.join("t/pkg"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // buildah keeps cache mounts host-wide: an id of this test's own.
    let id = d.dir.path().file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), text.replace("CACHE_ID", &id)).unwrap();
    for (name, z) in [("bundle.tar.gz", "-czf"), ("plain.tar", "-cf")] {
        let st = Command::new("tar")
            .args(["--owner=7", "--group=8", z])
            .arg(ctx.join(name))
            .arg("-C")
            .arg(ctx.join("t"))
            .arg("pkg")
            .status()
            .unwrap();
        assert!(st.success());
    }
    std::fs::remove_dir_all(ctx.join("t")).unwrap();
    let secret = d.dir.path().join("token");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let spec = format!("id=tok,src={}", secret.display());
    let mounts = [
        "/var/cache/app",
        "/mnt/src",
        "/mnt/tool",
        "/scratch",
        "/run/secrets/tok",
    ];
    let out = both(&d, &b, "mounts", &ctx, &["--secret", &spec], &mounts);
    assert_eq!(
        out, "1\nfrom-context\ntool-v1\nt\n7\n1234 1234 700\n440\nroot:x:0:\npayload\n",
        "what the image's CMD prints"
    );
    // The secret is in no layer.
    let m = read_archive(&d.dir.path().join("out/mounts-molde.tar"));
    assert!(!m.fs.contains_key("/run/secrets/tok") && !m.fs.contains_key("/scratch"));
    assert_eq!(
        m.fs["/unpacked/pkg/p.txt"].uid, 7,
        "ADD keeps the archive's owners"
    );
    // The cache directory persists between builds: a rebuild that must run
    // the step (--no-cache) sees the earlier run's line.
    d.molde(&[
        "build",
        "-q",
        "--no-cache",
        "--secret",
        &spec,
        "-t",
        "mounts2",
        ctx.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        d.molde(&["run", "--rm", "mounts2", "cat", "/cachecount"]).ok(),
        "2\n"
    );
    // A required secret that is not given stops the build, naming it.
    let err = d
        .molde(&[
            "build",
            "-q",
            "--no-cache",
            "-t",
            "mounts3",
            ctx.to_str().unwrap(),
        ])
        .fails();
    assert!(
        err.contains("Dockerfile:9") && err.contains("secret \"tok\" is required"),
        "{err}"
    );
}

/// A loopback HTTP server over a directory, stopped on drop.
struct Http(Child, u16);

impl Http {
    fn serve(dir: &Path) -> Http {
        let port = free_port();
        let child = Command::new(require("python3"))
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        molde_tests::eventually(10, "the HTTP server listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Http(child, port)
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn add_from_a_url_builds_the_same_image_as_buildah_and_checks_checksums() {
    let (d, b) = setup();
    let files = d.dir.path().join("www");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("tool.sh"), "echo downloaded\n").unwrap();
    let http = Http::serve(&files);
    let url = format!("http://127.0.0.1:{}/tool.sh", http.1);
    let ctx = context(
        &d,
        "url",
        &[(
            "Dockerfile",
            &format!(
                "FROM localhost/molde/busybox\nADD {url} /opt/\nADD {url} /opt/renamed.sh\nENTRYPOINT sh /opt/tool.sh\n"
            ),
            0o644,
        )],
    );
    let out = both(&d, &b, "url", &ctx, &[], &[]);
    assert_eq!(out, "downloaded\n");
    // --checksum (newer than buildah 1.28): the right digest builds, a wrong one stops.
    let digest = molde_tests::sha256(b"echo downloaded\n");
    let ok = context(
        &d,
        "checksum",
        &[(
            "Dockerfile",
            &format!(
                "FROM localhost/molde/busybox\nADD --checksum={digest} {url} /opt/\nCMD [\"sh\", \"/opt/tool.sh\"]\n"
            ),
            0o644,
        )],
    );
    d.molde(&["build", "-q", "-t", "checksum", ok.to_str().unwrap()])
        .ok();
    assert_eq!(d.molde(&["run", "--rm", "checksum"]).ok(), "downloaded\n");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let bad = context(
        &d,
        "badsum",
        &[(
            "Dockerfile",
            &format!("FROM localhost/molde/busybox\nADD --checksum={wrong} {url} /opt/\n"),
            0o644,
        )],
    );
    let err = d
        .molde(&["build", "-q", "-t", "badsum", bad.to_str().unwrap()])
        .fails();
    assert!(
        err.contains("Dockerfile:2") && err.contains("checksum mismatch") && err.contains(&digest),
        "{err}"
    );
    d.molde(&["inspect", "badsum"]).fails();
    // A URL the server does not have stops the build, naming the answer.
    let missing = context(
        &d,
        "missing",
        &[(
            "Dockerfile",
            &format!(
                "FROM localhost/molde/busybox\nADD http://127.0.0.1:{}/nothing.sh /opt/\n",
                http.1
            ),
            0o644,
        )],
    );
    let err = d.molde(&["build", "-q", missing.to_str().unwrap()]).fails();
    assert!(err.contains("Dockerfile:2") && err.contains("404"), "{err}");
}

#[test]
fn onbuild_triggers_run_in_children_as_buildah_runs_them() {
    let (d, b) = setup();
    let parent = context(
        &d,
        "parent",
        &[(
            "Dockerfile",
            "FROM localhost/molde/busybox\nONBUILD COPY app.txt /app/\nONBUILD RUN echo triggered > /app/trigger\nCMD [\"true\"]\n",
            0o644,
        )],
    );
    let out = d.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // Each tool builds the parent under the same name, then the child on it.
    molde_build(&d, "localhost/parent", &parent, &[], &out.join("p-molde.tar"));
    b.build("localhost/parent", &parent, &[], &out.join("p-buildah.tar"));
    compare(
        "parent",
        &read_archive(&out.join("p-molde.tar")),
        &read_archive(&out.join("p-buildah.tar")),
        &[],
    );
    let child = context(
        &d,
        "child",
        &[
            (
                "Dockerfile",
                "FROM localhost/parent\nCMD [\"cat\", \"/app/app.txt\", \"/app/trigger\"]\n",
                0o644,
            ),
            ("app.txt", "child's file\n", 0o644),
        ],
    );
    let printed = both(&d, &b, "child", &child, &[], &[]);
    assert_eq!(printed, "child's file\ntriggered\n");
}

#[test]
fn heredocs_link_exclude_parents_and_run_network_do_what_the_reference_says() {
    // buildah 1.28 reads neither heredocs, --link, --exclude, --parents, RUN --network,
    // secrets as env nor seeded caches, and its
    // rw bind mounts write into the context: molde's images are checked
    // against the Dockerfile reference.
    let d = Daemon::start();
    d.load_busybox();
    let ctx = context(
        &d,
        "heredocs",
        &[
            (
                "Dockerfile",
                r#"FROM localhost/molde/busybox AS seed
RUN mkdir /seed && echo seeded > /seed/s

FROM localhost/molde/busybox
ARG NAME=world
RUN <<EOF
echo "hello $NAME" > /greeting
mkdir /hd
EOF
RUN <<EOT
#!/bin/sh
echo "script ran as $0" > /hd/script
EOT
RUN cat > /hd/stdin <<EOF
line one
EOF
RUN <<-EOF
	echo tabs-stripped > /hd/tabs
	EOF
COPY <<EOF /hd/conf
name=${NAME}
EOF
COPY <<"EOF" <<EOF2 /hd/
name=${NAME}
EOF
second
EOF2
COPY --link a.txt /linked/
COPY --exclude=*.log --exclude=sub/skip.txt dir/ /ex/
COPY --parents dir/sub/keep.txt dir/a.txt /par/
COPY --parents dir/sub /par2
RUN --network=none ls /sys/class/net > /hd/net
RUN --mount=type=bind,source=.,target=/mnt/rw,rw echo scribble > /mnt/rw/a.txt && cat /mnt/rw/a.txt >> /hd/net
RUN --mount=type=secret,id=tok,env=TOKEN [ "$TOKEN" = s3cr3t ] && echo env-secret >> /hd/net
RUN --mount=type=cache,target=/seeded,from=seed,source=/seed cat /seeded/s >> /hd/net
CMD cat /greeting /hd/script /hd/stdin /hd/tabs /hd/conf /hd/EOF /hd/EOF2 /linked/a.txt /hd/net
"#,
                0o644,
            ),
            ("a.txt", "linked\n", 0o644),
            ("dir/a.txt", "a\n", 0o644),
            ("dir/b.log", "b\n", 0o644),
            ("dir/sub/skip.txt", "s\n", 0o644),
            ("dir/sub/keep.txt", "k\n", 0o644),
        ],
    );
    let out = d.dir.path().join("hd.tar");
    let secret = d.dir.path().join("token");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let spec = format!("id=tok,src={}", secret.display());
    molde_build(&d, "heredocs", &ctx, &["--secret", &spec], &out);
    assert_eq!(
        d.molde(&["run", "--rm", "heredocs"]).ok(),
        "hello world\nscript ran as /dev/pipes/EOT\nline one\ntabs-stripped\nname=world\nname=${NAME}\nsecond\nlinked\nlo\nscribble\nenv-secret\nseeded\n"
    );
    // Writes to a rw bind are thrown away: the context is as it was.
    assert_eq!(std::fs::read_to_string(ctx.join("a.txt")).unwrap(), "linked\n");
    let img = read_archive(&out);
    let env = img.config["config"]["Env"].to_string();
    assert!(!env.contains("s3cr3t") && !env.contains("TOKEN"), "{env}");
    // --exclude patterns are read relative to the source directory.
    let copied: Vec<&str> = img
        .fs
        .keys()
        .filter(|k| k.starts_with("/ex/"))
        .map(String::as_str)
        .collect();
    assert_eq!(copied, ["/ex/a.txt", "/ex/sub", "/ex/sub/keep.txt"]);
    // --parents keeps each source's directories under the destination.
    let under =
        |prefix: &str| -> Vec<String> { img.fs.keys().filter(|k| k.starts_with(prefix)).cloned().collect() };
    assert_eq!(
        under("/par/"),
        [
            "/par/dir",
            "/par/dir/a.txt",
            "/par/dir/sub",
            "/par/dir/sub/keep.txt"
        ]
    );
    assert_eq!(
        under("/par2/"),
        [
            "/par2/dir",
            "/par2/dir/sub",
            "/par2/dir/sub/keep.txt",
            "/par2/dir/sub/skip.txt"
        ]
    );
    // Heredoc files are 0644 root files; the script file is not in the image.
    assert_eq!(img.fs["/hd/conf"].mode, 0o644);
    assert!(!img.fs.contains_key("/dev/pipes/EOT") && !img.fs.keys().any(|k| k.starts_with("/dev/pipes")));
}
