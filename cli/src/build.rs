//! `molde build`: sends the context (a directory the daemon reads, or a tar
//! from stdin), the Dockerfile and options to builder.v1 and shows each step
//! as it runs: plain lines, or a live tree of steps on a terminal.
//! `molde builder prune` trims the build cache.

use std::collections::HashMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use molde_api::molde::services::builder::v1::{
    self as api, build_event::Event, builder_client::BuilderClient,
};

use crate::daemon::{Daemon, status};
use crate::images::normalize;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name the image (repeatable)
    #[arg(short, long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile; CONTEXT/Dockerfile by default
    #[arg(short, long)]
    file: Option<String>,
    /// Set a build argument, NAME=VALUE (repeatable)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage
    #[arg(long)]
    target: Option<String>,
    /// Run every step
    #[arg(long)]
    no_cache: bool,
    /// Pull every FROM image again, even when it is here
    #[arg(long)]
    pull: bool,
    /// auto, plain or tty
    #[arg(long, default_value = "auto")]
    progress: String,
    /// os/arch; only the host's platform can be built
    #[arg(long)]
    platform: Option<String>,
    /// Also export the image: type=oci|docker,dest=FILE (dest=- for stdout)
    #[arg(short, long)]
    output: Option<String>,
    /// A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// An SSH agent for RUN --mount=type=ssh: ID[=SOCKET] (default: $SSH_AUTH_SOCK)
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Grant the build an entitlement: network.host (RUN --network=host)
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Add a label to the image, KEY=VALUE (repeatable)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Only print the image ID
    #[arg(short, long)]
    quiet: bool,
    /// The build context: a directory, or - for a tar archive on stdin
    context: String,
}

fn pairs(flag: &str, list: &[String]) -> Result<HashMap<String, String>> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None if flag == "--build-arg" => std::env::var(kv)
                .map(|v| (kv.clone(), v))
                .map_err(|_| anyhow!("{flag} {kv}: no value given and none in the environment")),
            _ => Err(anyhow!("{flag} {kv}: expected KEY=VALUE")),
        })
        .collect()
}

/// `--secret id=ID,src=FILE` / `id=ID,env=VAR` (`source`, `type=file|env` too).
fn secret(spec: &str) -> Result<(String, Vec<u8>)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file" | "env")) => {}
            _ => bail!("--secret {spec}: expected id=ID,src=FILE or id=ID,env=VAR"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("--secret {spec}: no id"))?;
    let data = match (src, env) {
        (Some(f), _) => std::fs::read(&f).with_context(|| format!("--secret {spec}: reading {f}"))?,
        (None, Some(v)) => std::env::var(&v)
            .map_err(|_| anyhow!("--secret {spec}: no {v} in the environment"))?
            .into_bytes(),
        // As docker: an env var named after the id.
        (None, None) => std::env::var(&id)
            .map_err(|_| anyhow!("--secret {spec}: give src=FILE or env=VAR"))?
            .into_bytes(),
    };
    Ok((id, data))
}

/// `--ssh ID[=SOCKET]`: the agent socket, as an absolute path.
fn ssh(spec: &str) -> Result<(String, String)> {
    let (id, path) = match spec.split_once('=') {
        Some((id, p)) => (id.to_string(), p.to_string()),
        None => (
            spec.to_string(),
            std::env::var("SSH_AUTH_SOCK")
                .map_err(|_| anyhow!("--ssh {spec}: no socket given and SSH_AUTH_SOCK is not set"))?,
        ),
    };
    let abs = std::fs::canonicalize(&path).with_context(|| format!("--ssh {spec}: {path}"))?;
    Ok((id, abs.to_string_lossy().into_owned()))
}

/// `-o type=oci|docker,dest=FILE`.
fn output(spec: &str) -> Result<String> {
    let mut kind = None;
    let mut dest = None;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("type", v)) => kind = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(v.to_string()),
            _ => bail!("-o {spec}: expected type=oci|docker,dest=FILE"),
        }
    }
    match kind.as_deref() {
        Some("oci" | "docker") => {}
        Some(other) => bail!("-o {spec}: type={other} is not supported (oci or docker)"),
        None => bail!("-o {spec}: no type= (oci or docker)"),
    }
    dest.ok_or_else(|| anyhow!("-o {spec}: no dest=FILE"))
}

pub async fn build(d: &Daemon, a: BuildArgs) -> Result<()> {
    let export = a.output.as_deref().map(output).transpose()?;
    let mut req = api::BuildRequest {
        build_args: pairs("--build-arg", &a.build_args)?,
        target: a.target.clone().unwrap_or_default(),
        tags: a.tags.iter().map(|t| normalize(t)).collect(),
        no_cache: a.no_cache,
        labels: pairs("--label", &a.labels)?,
        pull: a.pull,
        platform: a.platform.clone().unwrap_or_default(),
        compression: a.compression.clone(),
        secrets: a.secrets.iter().map(|s| secret(s)).collect::<Result<_>>()?,
        ssh: a.ssh.iter().map(|s| ssh(s)).collect::<Result<_>>()?,
        entitlements: a.allow.clone(),
        // FROM images may come from registries the user logged in to.
        registry_auth: crate::auth::all()?
            .into_iter()
            .map(|(r, (username, password))| {
                (
                    r,
                    molde_api::molde::services::transfer::v1::RegistryAuth { username, password },
                )
            })
            .collect(),
        ..Default::default()
    };
    let streamed = a.context == "-";
    if streamed {
        if a.file.as_deref() == Some("-") {
            bail!("-f - and a context on stdin cannot both read stdin");
        }
    } else {
        let context =
            std::fs::canonicalize(&a.context).map_err(|e| anyhow!("build context {}: {e}", a.context))?;
        if !context.is_dir() {
            bail!("build context {} is not a directory", context.display());
        }
        req.context_dir = context.to_string_lossy().into_owned();
    }
    if let Some(f) = &a.file {
        // The client reads -f itself: it may lie outside the context.
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading the Dockerfile {f}"))?
        };
        req.dockerfile = Path::new(f)
            .file_name()
            .map_or("Dockerfile".into(), |n| n.to_string_lossy().into_owned());
        req.dockerfile_text = text;
        if f != "-"
            && let Ok(ignore) = std::fs::read_to_string(format!("{f}.dockerignore"))
        {
            req.dockerignore_text = ignore;
        }
    }
    if a.tags.is_empty() && export.is_some() {
        // An export needs a name to find the image by.
        req.tags.push(format!("molde.local/build:{}", uuid_like()));
    }
    let mut client = BuilderClient::new(d.channel.clone()).max_decoding_message_size(64 << 20);
    let mut stream = if streamed {
        // The context tar goes to the daemon as it is read from stdin.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(api::BuildInput {
            request: Some(req.clone()),
            context_tar: Vec::new(),
        })
        .await
        .map_err(|_| anyhow!("build: the stream closed"))?;
        let reader = tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut stdin = std::io::stdin().lock();
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = stdin
                    .read(&mut buf)
                    .context("reading the build context from stdin")?;
                if n == 0 {
                    return Ok(total);
                }
                total += n as u64;
                buf.truncate(n);
                if tx
                    .blocking_send(api::BuildInput {
                        request: None,
                        context_tar: buf,
                    })
                    .is_err()
                {
                    return Ok(total);
                }
            }
        });
        let s = client
            .build_stream(d.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await;
        if reader.await?? == 0 {
            bail!("build context -: stdin is empty (send a tar of the context)");
        }
        s.map_err(status("build"))?.into_inner()
    } else {
        client
            .build(d.request(req.clone()))
            .await
            .map_err(status("build"))?
            .into_inner()
    };
    let tty = match a.progress.as_str() {
        "auto" => std::io::stderr().is_terminal(),
        "tty" => true,
        "plain" => false,
        other => bail!("--progress {other}: expected auto, plain or tty"),
    };
    let mut view = if a.quiet {
        View::Quiet
    } else if tty {
        View::Tree(Tree::default())
    } else {
        View::Plain
    };
    loop {
        let msg = match stream.message().await {
            Ok(m) => m,
            Err(s) => {
                view.end();
                bail!("build failed: {}", s.message())
            }
        };
        let Some(event) = msg.and_then(|m| m.event) else {
            view.end();
            bail!("the daemon ended the build without an image");
        };
        if let Event::Image(i) = &event {
            view.end();
            if let Some(f) = &a.iidfile {
                std::fs::write(f, &i.config_digest)?;
            }
            if let Some(dest) = &export {
                let out = (dest != "-").then(|| PathBuf::from(dest));
                crate::transfer::save(d, vec![req.tags[0].clone()], out).await?;
                if a.tags.is_empty() {
                    crate::images::remove_quietly(d, &req.tags[0]).await;
                }
            }
            if a.quiet {
                // stdout may be carrying the exported archive.
                if export.as_deref() != Some("-") {
                    println!("{}", i.config_digest);
                }
            } else {
                let mut out = std::io::stderr();
                writeln!(out, "built {} (manifest {})", i.config_digest, i.digest)?;
                for t in i
                    .tags
                    .iter()
                    .filter(|t| a.tags.iter().any(|x| normalize(x) == **t))
                {
                    writeln!(out, "tagged {t}")?;
                }
                if let Some(dest) = &export {
                    writeln!(out, "exported to {dest}")?;
                }
            }
            return Ok(());
        }
        view.show(event)?;
    }
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", n, std::process::id())
}

enum View {
    Quiet,
    Plain,
    Tree(Tree),
}

impl View {
    fn show(&mut self, e: Event) -> Result<()> {
        let mut out = std::io::stderr();
        match (self, e) {
            (View::Plain, Event::Started(s)) => {
                writeln!(out, "#{} [{}] {}", s.step, s.stage, s.instruction)?;
            }
            (View::Plain, Event::Log(l)) => out.write_all(&l.data)?,
            (View::Plain, Event::Done(x)) => {
                let what = if x.cached { "CACHED" } else { "DONE" };
                writeln!(out, "#{} {what} {:.2}s", x.step, x.micros as f64 / 1e6)?;
            }
            (View::Tree(t), e) => t.update(e),
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self) {
        if let View::Tree(t) = self {
            t.draw(true);
        }
    }
}

/// A live tree on a terminal: one line per step, stage by stage, with the
/// last lines of output under steps still running; redrawn in place.
#[derive(Default)]
struct Tree {
    steps: Vec<TreeStep>,
    drawn: usize,
    last: Option<Instant>,
    started: Option<Instant>,
}

struct TreeStep {
    id: u32,
    stage: String,
    text: String,
    started: Instant,
    done: Option<(bool, f64)>,
    log: Vec<String>,
}

impl Tree {
    fn update(&mut self, e: Event) {
        self.started.get_or_insert_with(Instant::now);
        match e {
            Event::Started(s) => self.steps.push(TreeStep {
                id: s.step,
                stage: s.stage,
                text: s.instruction,
                started: Instant::now(),
                done: None,
                log: Vec::new(),
            }),
            Event::Log(l) => {
                if let Some(s) = self.steps.iter_mut().find(|s| s.id == l.step) {
                    for line in String::from_utf8_lossy(&l.data).lines() {
                        s.log.push(line.to_string());
                    }
                    let excess = s.log.len().saturating_sub(3);
                    s.log.drain(..excess);
                }
            }
            Event::Done(x) => {
                if let Some(s) = self.steps.iter_mut().find(|s| s.id == x.step) {
                    s.done = Some((x.cached, x.micros as f64 / 1e6));
                    s.log.clear();
                }
            }
            Event::Image(_) => {}
        }
        self.draw(false);
    }

    fn draw(&mut self, last: bool) {
        if !last && self.last.is_some_and(|t| t.elapsed() < Duration::from_millis(80)) {
            return;
        }
        self.last = Some(Instant::now());
        let width = terminal_width();
        let mut lines = Vec::new();
        let total = self.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        lines.push(format!("[+] Building {total:.1}s"));
        let mut stage = None;
        for s in &self.steps {
            if stage != Some(&s.stage) {
                lines.push(format!(" => stage {}", s.stage));
                stage = Some(&s.stage);
            }
            let state = match s.done {
                Some((true, _)) => "CACHED".to_string(),
                Some((false, secs)) => format!("{secs:.1}s"),
                None => format!("{:.1}s …", s.started.elapsed().as_secs_f64()),
            };
            lines.push(format!("   #{} {}  {state}", s.id, s.text.replace('\n', " ")));
            for l in &s.log {
                lines.push(format!("      │ {l}"));
            }
        }
        let mut out = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", self.drawn);
        }
        for l in &lines {
            let cut: String = l.chars().take(width.saturating_sub(1)).collect();
            let _ = writeln!(out, "\x1b[2K{cut}");
        }
        let _ = out.flush();
        self.drawn = lines.len();
    }
}

fn terminal_width() -> usize {
    crate::attach::window()
        .map(|(_, cols)| cols as usize)
        .filter(|&w| w > 20)
        .unwrap_or(100)
}

/// `molde builder prune`.
pub async fn prune(d: &Daemon, all: bool, keep_bytes: u64) -> Result<()> {
    let r = BuilderClient::new(d.channel.clone())
        .prune(d.request(api::PruneRequest { all, keep_bytes }))
        .await
        .map_err(status("pruning the build cache"))?
        .into_inner();
    println!(
        "removed {} cache records ({}), kept {}",
        r.removed,
        crate::output::human_size(r.freed_bytes as i64),
        crate::output::human_size(r.kept_bytes as i64)
    );
    Ok(())
}
