//! `molde run`: the daemon creates and starts the container in its shim; the
//! CLI prints the output it streams and exits with the container's status.

use std::io::Write;

use anyhow::{Result, anyhow};
use molde_api::molde::services::runtime::v1::{self as api, run_event::Event, runtime_client::RuntimeClient};

use crate::daemon::{Daemon, status};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Start the container and print its id
    #[arg(short, long)]
    detach: bool,
    /// Container name (id)
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable, KEY=VALUE (repeatable)
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Read environment variables from a file of KEY=VALUE lines
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Replace the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    image: String,
    /// Command and arguments (replace the image's Cmd)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the container; returns its exit status.
pub async fn run(d: &Daemon, a: RunArgs) -> Result<i32> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow!("--env-file {}: {e}", f.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    env.extend(a.env.iter().cloned());
    for e in &env {
        if !e.contains('=') {
            anyhow::bail!("environment variable {e:?}: expected KEY=VALUE");
        }
    }
    let req = api::RunRequest {
        image: crate::images::normalize(&a.image),
        args: a.command,
        env,
        name: a.name.unwrap_or_default(),
        rm: a.rm,
        detach: a.detach,
        workdir: a.workdir.unwrap_or_default(),
        entrypoint_set: a.entrypoint.is_some(),
        entrypoint: a.entrypoint.into_iter().filter(|e| !e.is_empty()).collect(),
        hostname: a.hostname.unwrap_or_default(),
    };
    let mut stream = RuntimeClient::new(d.channel.clone())
        .run(d.request(req))
        .await
        .map_err(status(format!("running {}", a.image)))?
        .into_inner();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        match stream.message().await.map_err(|s| anyhow!("{}", s.message()))? {
            Some(api::RunEvent {
                event: Some(Event::Started(s)),
            }) if a.detach => {
                println!("{}", s.id);
                return Ok(0);
            }
            Some(api::RunEvent {
                event: Some(Event::Output(o)),
            }) => {
                if o.stream == 2 {
                    err.write_all(&o.data)?;
                    err.flush()?;
                } else {
                    out.write_all(&o.data)?;
                    out.flush()?;
                }
            }
            Some(api::RunEvent {
                event: Some(Event::Exited(x)),
            }) => return Ok(x.status),
            Some(_) => {}
            None => {
                return Err(anyhow!(
                    "the daemon ended the run without the container's exit status"
                ));
            }
        }
    }
}
