//! `mesh` binary: parse the command line, set up logging, dispatch. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use mesh::cmd::{normalize_args, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os().collect()));
    init_tracing(cli.verbose);
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(mesh::cmd::run(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // llama.cpp's own logs arrive under the target `llama-cpp-2`; they are chatty at info.
        0 => "info,llama-cpp-2=warn",
        1 => "debug,llama-cpp-2=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The terminal, and the ring `mesh logs` reads through the management API.
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(mesh::util::logs::RingLayer)
        .init();
}
