//! `molde content …`: blobs in the content store.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use futures::StreamExt;
use molde_api::containerd::services::content::v1::{self as api, content_client::ContentClient};

use crate::daemon::{Daemon, status};
use crate::output::{self, Format};

/// Bytes per Write message.
#[derive(Debug, Subcommand)]
pub enum ContentCmd {
    /// List blobs
    #[command(alias = "list")]
    Ls {
        /// Filters, e.g. 'labels."containerd.io/gc.root"' or 'size==12' (any may match)
        filters: Vec<String>,
        /// Print digests only
        #[arg(short, long)]
        quiet: bool,
        #[arg(long, default_value = "table")]
        format: Format,
    },
    /// Write a blob's bytes to stdout
    Get { digest: String },
    /// Store a blob read from a file or stdin under an ingest ref; resumes an
    /// interrupted ingest of a file from where it stopped
    Ingest {
        /// Ingest reference: names the write so it can be resumed or aborted
        reference: String,
        /// Read from this file instead of stdin
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Size the blob must have
        #[arg(long)]
        expected_size: Option<i64>,
        /// Digest the blob must have
        #[arg(long)]
        expected_digest: Option<String>,
        /// Label to set on the blob (repeatable), KEY=VALUE
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Remove blobs from this namespace
    #[command(alias = "del", alias = "delete")]
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Set labels on a blob: KEY=VALUE sets, KEY= removes
    Label {
        digest: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Show ingests in progress
    Active,
    /// Abandon an ingest and remove what it wrote
    Abort { reference: String },
}

pub async fn run(d: &Daemon, cmd: ContentCmd) -> Result<()> {
    let mut c = ContentClient::new(d.channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    match cmd {
        ContentCmd::Ls {
            filters,
            quiet,
            format,
        } => {
            let mut stream = c
                .list(d.request(api::ListContentRequest { filters }))
                .await
                .map_err(status("listing content"))?
                .into_inner();
            let mut infos = Vec::new();
            while let Some(batch) = stream.next().await {
                infos.extend(batch.map_err(status("listing content"))?.info);
            }
            if quiet {
                for i in infos {
                    println!("{}", i.digest);
                }
                return Ok(());
            }
            match format {
                Format::Template(t) => {
                    let rows: Vec<_> = infos
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "Digest": i.digest, "Size": output::human_size(i.size),
                                "CreatedAt": output::rfc3339(i.created_at.as_ref()),
                                "Labels": output::labels(&i.labels),
                            })
                        })
                        .collect();
                    t.print(
                        &[
                            ("Digest", "DIGEST"),
                            ("Size", "SIZE"),
                            ("CreatedAt", "CREATED"),
                            ("Labels", "LABELS"),
                        ],
                        &rows,
                    )?;
                }
                Format::Json => {
                    let v: Vec<_> = infos
                        .iter()
                        .map(|i| {
                            serde_json::json!({
                                "digest": i.digest,
                                "size": i.size,
                                "created": output::rfc3339(i.created_at.as_ref()),
                                "updated": output::rfc3339(i.updated_at.as_ref()),
                                "labels": i.labels,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = infos
                        .iter()
                        .map(|i| {
                            vec![
                                i.digest.clone(),
                                output::human_size(i.size),
                                output::age(i.created_at.as_ref()),
                                output::labels(&i.labels),
                            ]
                        })
                        .collect();
                    output::table(&["DIGEST", "SIZE", "CREATED", "LABELS"], &rows);
                }
            }
        }
        ContentCmd::Get { digest } => {
            let what = format!("reading {digest}");
            let mut stream = c
                .read(d.request(api::ReadContentRequest {
                    digest: digest.clone(),
                    offset: 0,
                    size: 0,
                }))
                .await
                .map_err(status(&what))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(m) = stream.next().await {
                out.write_all(&m.map_err(status(&what))?.data)?;
            }
            out.flush()?;
        }
        ContentCmd::Ingest {
            reference,
            file,
            expected_size,
            expected_digest,
            labels,
        } => {
            let labels = parse_labels(&labels)?;
            let (digest, size) = ingest(d, &reference, file, expected_size, expected_digest, labels).await?;
            eprintln!("stored {size} bytes");
            println!("{digest}");
        }
        ContentCmd::Rm { digests } => {
            for digest in digests {
                c.delete(d.request(api::DeleteContentRequest {
                    digest: digest.clone(),
                }))
                .await
                .map_err(status(format!("removing {digest}")))?;
                println!("{digest}");
            }
        }
        ContentCmd::Label { digest, labels } => {
            let labels = parse_labels(&labels)?;
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            let set: HashMap<String, String> = labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            let info = c
                .update(d.request(api::UpdateRequest {
                    info: Some(api::Info {
                        digest: digest.clone(),
                        labels: set,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await
                .map_err(status(format!("labelling {digest}")))?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", output::labels(&info.labels));
        }
        ContentCmd::Active => {
            let statuses = c
                .list_statuses(d.request(api::ListStatusesRequest::default()))
                .await
                .map_err(status("listing ingests"))?
                .into_inner()
                .statuses;
            let rows: Vec<Vec<String>> = statuses
                .iter()
                .map(|s| {
                    vec![
                        s.r#ref.clone(),
                        s.offset.to_string(),
                        if s.total > 0 {
                            s.total.to_string()
                        } else {
                            "-".into()
                        },
                        output::age(s.updated_at.as_ref()),
                    ]
                })
                .collect();
            output::table(&["REF", "OFFSET", "TOTAL", "UPDATED"], &rows);
        }
        ContentCmd::Abort { reference } => {
            c.abort(d.request(api::AbortRequest {
                r#ref: reference.clone(),
            }))
            .await
            .map_err(status(format!("aborting ingest {reference:?}")))?;
        }
    }
    Ok(())
}

fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("label {l:?}: expected KEY=VALUE"))
        })
        .collect()
}

enum Source {
    File(std::fs::File),
    Stdin(std::io::Stdin),
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::File(f) => f.read(buf),
            Source::Stdin(s) => s.read(buf),
        }
    }
}

/// Streams a file or stdin into an ingest and commits it. A file resumes from the
/// offset the daemon reports; stdin cannot seek, so it starts over at 0.
async fn ingest(
    d: &Daemon,
    reference: &str,
    file: Option<PathBuf>,
    expected_size: Option<i64>,
    expected_digest: Option<String>,
    labels: HashMap<String, String>,
) -> Result<(String, i64)> {
    let what = format!("ingesting {reference:?}");
    let source = match &file {
        Some(p) => Source::File(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => Source::Stdin(std::io::stdin()),
    };
    let total = match (&source, expected_size) {
        (_, Some(n)) => n,
        (Source::File(f), None) => f.metadata()?.len() as i64,
        (Source::Stdin(_), None) => 0,
    };
    let expected = expected_digest.unwrap_or_default();
    let open: molde_api::client::OpenAt = Box::new(move |held| match source {
        Source::File(mut f) if held > 0 && held as i64 <= total => {
            f.seek(SeekFrom::Start(held))?;
            eprintln!("resuming at byte {held}");
            Ok((Box::new(f), held))
        }
        Source::File(f) => Ok((Box::new(f), 0)),
        Source::Stdin(i) => Ok((Box::new(i), 0)),
    });
    let (digest, size) = molde_api::client::write_stream(
        &d.channel,
        &d.namespace,
        None,
        reference,
        total,
        &expected,
        labels,
        open,
    )
    .await
    .map_err(status(&what))?;
    if digest.is_empty() {
        bail!("{what}: commit returned no digest");
    }
    Ok((digest, size))
}
