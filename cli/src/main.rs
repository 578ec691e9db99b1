//! molde: the command-line client. A thin client: every command is one or a few
//! gRPC calls to molded; the daemon owns the logic.

mod content;
mod daemon;
mod images;
mod output;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "molde", version, about = "Build and run containers with molde")]
struct Cli {
    /// molded's socket
    #[arg(
        long,
        global = true,
        env = "MOLDE_ADDRESS",
        default_value = "/run/molde/molde.sock"
    )]
    address: String,
    /// Namespace to work in
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "MOLDE_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the client's and the daemon's versions
    Version,
    /// Show what the daemon hosts and where it keeps its state
    Info,
    /// Manage blobs in the content store
    #[command(subcommand)]
    Content(content::ContentCmd),
    /// Manage images
    #[command(subcommand)]
    Images(images::ImagesCmd),
    /// Run a garbage collection now and show what it removed
    Gc,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("molde: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let d = daemon::Daemon::connect(&cli.address, &cli.namespace).await?;
    match cli.command {
        Command::Version => daemon::version(&d).await,
        Command::Info => daemon::info(&d).await,
        Command::Content(c) => content::run(&d, c).await,
        Command::Images(c) => images::run(&d, c).await,
        Command::Gc => daemon::gc(&d).await,
    }
}
