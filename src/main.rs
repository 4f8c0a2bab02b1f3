//! `mesh` binary: parse the command line, set up logging, dispatch. Nothing else lives here.

use clap::Parser;
use mesh::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => mesh::serve::run(args).await,
            Command::Models(args) => mesh::catalog::commands::models(args).await,
            Command::Download(args) => mesh::catalog::commands::download(args).await,
        }
    })
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
