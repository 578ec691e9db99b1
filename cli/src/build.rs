//! `molde build`: sends the context directory, Dockerfile and options to
//! builder.v1 and prints each step as it runs.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Result, anyhow, bail};
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
    /// The Dockerfile, relative to the context; CONTEXT/Dockerfile by default
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
    /// Add a label to the image, KEY=VALUE (repeatable)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Write the image ID to this file
    #[arg(long)]
    iidfile: Option<std::path::PathBuf>,
    /// Only print the image ID
    #[arg(short, long)]
    quiet: bool,
    /// The build context: a directory
    context: std::path::PathBuf,
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

pub async fn build(d: &Daemon, a: BuildArgs) -> Result<()> {
    let context = std::fs::canonicalize(&a.context)
        .map_err(|e| anyhow!("build context {}: {e}", a.context.display()))?;
    if !context.is_dir() {
        bail!("build context {} is not a directory", context.display());
    }
    let dockerfile = match &a.file {
        Some(f) => {
            let p = std::path::Path::new(f);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()?.join(p)
            };
            abs.to_string_lossy().into_owned()
        }
        None => String::new(),
    };
    let req = api::BuildRequest {
        context_dir: context.to_string_lossy().into_owned(),
        dockerfile,
        build_args: pairs("--build-arg", &a.build_args)?,
        target: a.target.unwrap_or_default(),
        tags: a.tags.iter().map(|t| normalize(t)).collect(),
        no_cache: a.no_cache,
        labels: pairs("--label", &a.labels)?,
    };
    let mut stream = BuilderClient::new(d.channel.clone())
        .build(d.request(req))
        .await
        .map_err(status("build"))?
        .into_inner();
    let mut out = std::io::stderr();
    loop {
        let msg = match stream.message().await {
            Ok(m) => m,
            Err(s) => bail!("build failed: {}", s.message()),
        };
        match msg.and_then(|m| m.event) {
            Some(Event::Started(s)) if !a.quiet => {
                writeln!(out, "#{} [{}] {}", s.step, s.stage, s.instruction)?;
            }
            Some(Event::Log(l)) if !a.quiet => {
                out.write_all(&l.data)?;
            }
            Some(Event::Done(x)) if !a.quiet => {
                let what = if x.cached { "CACHED" } else { "DONE" };
                writeln!(out, "#{} {what} {:.2}s", x.step, x.micros as f64 / 1e6)?;
            }
            Some(Event::Image(i)) => {
                if let Some(f) = &a.iidfile {
                    std::fs::write(f, &i.config_digest)?;
                }
                if a.quiet {
                    println!("{}", i.config_digest);
                } else {
                    writeln!(out, "built {} (manifest {})", i.config_digest, i.digest)?;
                    for t in &i.tags {
                        writeln!(out, "tagged {t}")?;
                    }
                }
                return Ok(());
            }
            Some(_) => {}
            None => bail!("the daemon ended the build without an image"),
        }
    }
}
