//! Command-line definitions (clap). Every flag is visible in `--help` with a sentence.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mesh",
    version,
    about = "Find, join and offer LLM capacity on public meshes"
)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a GGUF model through the OpenAI-compatible API on 127.0.0.1:9337.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model to serve: a path to a .gguf file.
    #[arg(long)]
    pub model: String,

    /// Model id announced in the API (default: the file name without `.gguf`, dots as dashes).
    #[arg(long)]
    pub model_name: Option<String>,

    /// Address both HTTP servers bind to. Keep the loopback default unless you mean to expose them.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port of the OpenAI-compatible API (0 picks a free one).
    #[arg(long, default_value_t = 9337)]
    pub port: u16,

    /// Port of the management API (0 picks a free one).
    #[arg(long, default_value_t = 3131)]
    pub api_port: u16,

    /// Sequences decoded together in one batch (continuous batching slots).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,

    /// Context size per sequence in tokens (default: the model's training context, at most 4096).
    #[arg(long)]
    pub ctx: Option<u32>,

    /// CPU threads for llama.cpp (default: the number of physical cores).
    #[arg(long)]
    pub threads: Option<u32>,

    /// Requests that may wait for a free slot; beyond this the API answers 503 at once.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
}
