//! `molde pull` / `molde push`: the daemon transfers, the CLI shows progress
//! (bars on a terminal, plain lines otherwise).

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::{Result, anyhow};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use molde_api::molde::services::transfer::v1::{
    self as api, progress::Event, transfer_client::TransferClient,
};
use tonic::Streaming;

use crate::auth;
use crate::daemon::{Daemon, status};

fn short(d: &str) -> &str {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    &hex[..hex.len().min(12)]
}

/// Credentials for the registry of `reference`, from ~/.docker/config.json.
pub fn auth_for(reference: &str) -> Result<Option<api::RegistryAuth>> {
    Ok(auth::credentials(&auth::registry_of(reference))?
        .map(|(username, password)| api::RegistryAuth { username, password }))
}

pub async fn pull(
    d: &Daemon,
    reference: &str,
    platform: Option<String>,
    cluster_resolve: bool,
    quiet: bool,
) -> Result<()> {
    let (name, digest) = pull_image(d, reference, platform, cluster_resolve, quiet).await?;
    if quiet {
        println!("{name}");
    } else {
        println!("{name}: {digest}");
    }
    Ok(())
}

/// `molde run --pull`: progress and the result on stderr, as docker's run
/// shows them (stdout is the container's).
pub async fn pull_for_run(d: &Daemon, reference: &str) -> Result<()> {
    let (name, digest) = pull_image(d, reference, None, false, false).await?;
    eprintln!("{name}: {digest}");
    Ok(())
}

/// Pulls; returns the image's name and digest.
async fn pull_image(
    d: &Daemon,
    reference: &str,
    platform: Option<String>,
    cluster_resolve: bool,
    quiet: bool,
) -> Result<(String, String)> {
    let req = api::PullRequest {
        reference: reference.to_string(),
        platform: platform.unwrap_or_default(),
        auth: auth_for(reference)?,
        cluster_resolve,
        ..Default::default()
    };
    let stream = TransferClient::new(d.channel.clone())
        .pull(d.request(req))
        .await
        .map_err(status(format!("pulling {reference}")))?
        .into_inner();
    let done = show(stream, quiet, reference)
        .await
        .map_err(|e| match e.downcast::<ConnectionLost>() {
            Ok(lost) => anyhow!(
                "pulling {reference}: {lost}; run `molde pull {reference}` again once molded is back: \
             what it fetched is kept, and the pull resumes from there"
            ),
            Err(e) => e,
        })?;
    let target = done.target.unwrap_or_default();
    Ok((done.name, target.digest))
}

/// The connection to molded broke in the middle of a stream (molded was
/// stopped or crashed), as opposed to an error molded sent.
#[derive(Debug)]
pub struct ConnectionLost(String);

impl std::fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "molded went away ({})", self.0)
    }
}

impl std::error::Error for ConnectionLost {}

/// A status molded sent carries no source; one made on this side from a
/// broken connection (h2, hyper, the socket) does.
pub fn lost(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some()
}

/// Renders progress events until Done; returns it.
pub async fn show(mut stream: Streaming<api::Progress>, quiet: bool, what: &str) -> Result<api::Done> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:.bold} {msg:12} [{bar:30}] {bytes}/{total_bytes}")
        .expect("template")
        .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    loop {
        let ev = match stream.message().await {
            Ok(Some(p)) => p.event,
            Ok(None) => {
                return Err(anyhow!(
                    "{what}: the daemon ended the transfer without finishing it"
                ));
            }
            Err(s) => {
                multi.clear().ok();
                if lost(&s) {
                    return Err(
                        ConnectionLost("the connection closed in the middle of the transfer".into()).into(),
                    );
                }
                return Err(anyhow!("{}", s.message()));
            }
        };
        match ev {
            Some(Event::Resolved(r)) => {
                if tty {
                    for l in &r.layers {
                        let b = multi.add(ProgressBar::new(l.size as u64));
                        b.set_style(style.clone());
                        b.set_prefix(short(&l.digest).to_string());
                        b.set_message("waiting");
                        bars.insert(l.digest.clone(), b);
                    }
                } else if !quiet {
                    let t = r.target.unwrap_or_default();
                    eprintln!("resolved {} to {} ({} layers)", r.name, t.digest, r.layers.len());
                }
            }
            Some(Event::Blob(b)) => {
                if let Some(bar) = bars.get(&b.digest) {
                    bar.set_position(b.offset as u64);
                    bar.set_message(b.status.clone());
                } else if !tty && !quiet && b.status != "downloading" {
                    eprintln!("{} {} {}", short(&b.digest), b.status, b.total);
                }
            }
            Some(Event::Applied(a)) => {
                let what = if a.shared {
                    "unpacked by a concurrent pull"
                } else {
                    "applied"
                };
                if let Some(bar) = bars.get(&a.digest) {
                    bar.set_message(if a.shared { "shared" } else { "applied" });
                    bar.finish();
                } else if !quiet {
                    eprintln!("{} {what}", short(&a.digest));
                }
            }
            Some(Event::Done(d)) => {
                for b in bars.values() {
                    b.finish();
                }
                return Ok(d);
            }
            None => {}
        }
    }
}

pub async fn push(d: &Daemon, name: &str, destination: Option<String>, quiet: bool) -> Result<()> {
    let local = crate::images::normalize(&crate::images::resolve_one(d, name).await?);
    let dest = destination
        .map(|d| crate::images::normalize(&d))
        .unwrap_or_else(|| local.clone());
    let req = api::PushRequest {
        reference: local.clone(),
        destination: dest.clone(),
        auth: auth_for(&dest)?,
        ..Default::default()
    };
    let mut stream = TransferClient::new(d.channel.clone())
        .push(d.request(req))
        .await
        .map_err(status(format!("pushing {name}")))?
        .into_inner();
    loop {
        match stream.message().await {
            Ok(Some(p)) => match p.event {
                Some(Event::Blob(b)) if !quiet => eprintln!("{} {}", short(&b.digest), b.status),
                Some(Event::Done(done)) => {
                    let t = done.target.unwrap_or_default();
                    println!("{}: {}", done.name, t.digest);
                    return Ok(());
                }
                _ => {}
            },
            Ok(None) => {
                return Err(anyhow!(
                    "pushing {name}: the daemon ended the transfer without finishing it"
                ));
            }
            Err(s) => return Err(anyhow!("{}", s.message())),
        }
    }
}

/// `molde save`: the daemon writes the archive, the CLI copies it to a file or stdout.
pub async fn save(d: &Daemon, names: Vec<String>, output: Option<std::path::PathBuf>) -> Result<()> {
    use std::io::Write;
    let mut resolved = Vec::new();
    for n in &names {
        resolved.push(crate::images::normalize(&crate::images::resolve_one(d, n).await?));
    }
    let names = resolved;
    let mut stream = TransferClient::new(d.channel.clone())
        .export(d.request(api::ExportRequest { names: names.clone() }))
        .await
        .map_err(status(format!("saving {}", names.join(", "))))?
        .into_inner();
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow!("creating {}: {e}", p.display()))?,
        )),
        None => {
            if std::io::stdout().is_terminal() {
                anyhow::bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            Box::new(std::io::stdout().lock())
        }
    };
    while let Some(chunk) = stream.message().await.map_err(|s| anyhow!("{}", s.message()))? {
        out.write_all(&chunk.data)?;
    }
    out.flush()?;
    Ok(())
}

/// `molde load`: streams an archive (OCI layout or docker-archive) to the daemon.
pub async fn load(d: &Daemon, input: Option<std::path::PathBuf>, quiet: bool) -> Result<()> {
    let mut reader: Box<dyn std::io::Read + Send> = match &input {
        Some(p) => Box::new(std::fs::File::open(p).map_err(|e| anyhow!("opening {}: {e}", p.display()))?),
        None => Box::new(std::io::stdin()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let producer = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut first = true;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = std::io::Read::read(&mut reader, &mut buf)?;
            if n == 0 && !first {
                return Ok(());
            }
            buf.truncate(n);
            if tx
                .blocking_send(api::ImportRequest {
                    data: buf.into(),
                    ..Default::default()
                })
                .is_err()
            {
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
            first = false;
        }
    });
    let resp = TransferClient::new(d.channel.clone())
        .max_encoding_message_size(64 << 20)
        .import(d.request(tokio_stream::wrappers::ReceiverStream::new(rx)))
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    producer.await??;
    for n in resp.names {
        if quiet {
            println!("{n}");
        } else {
            println!("Loaded image: {n}");
        }
    }
    Ok(())
}

/// `molde login`: molded checks the credentials against the registry (its
/// v2 ping and token exchange, through the hosts.toml settings pulls use);
/// only credentials that work are stored.
pub async fn login(d: &Daemon, registry: &str, username: &str, password: &str) -> Result<()> {
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2");
    let registry = if registry == "index.docker.io" {
        "docker.io"
    } else {
        registry
    };
    TransferClient::new(d.channel.clone())
        .login(d.request(api::LoginRequest {
            registry: registry.to_string(),
            auth: Some(api::RegistryAuth {
                username: username.to_string(),
                password: password.to_string(),
            }),
        }))
        .await
        .map_err(status(format!("login to {registry}")))?;
    let place = crate::auth::store(registry, username, password)?;
    println!("Login Succeeded (credentials stored in {place})");
    Ok(())
}
