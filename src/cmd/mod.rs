//! Commands: the only layer that sees clap or prints. Each file is one verb; it turns flags
//! ([`args`]) into the plain options of the layers below, runs them, and reports to the
//! terminal (tables via [`table`], `--json` for scripts).
//!
//! Read `mesh --auto` from [`auto`] down: browse → score → join → choose model →
//! resolve/download → load → serve → route.

pub mod args;
pub mod auto;
pub mod chat;
pub mod choice;
pub mod discover;
pub mod dry_run;
pub mod models;
pub mod network;
pub mod p2p;
pub mod progress;
pub mod publish;
pub mod relay;
pub mod serve;
pub mod share;
pub mod split;
pub mod status;
pub mod table;

pub use args::{normalize_args, Cli, Command};

/// Runs one command to its end.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) if args.auto && args.dry_run => dry_run::run(args).await,
        Command::Serve(args) if args.auto => auto::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Models(args) => models::models(args).await,
        Command::Download(args) => models::download(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Peers(args) => status::peers(args).await,
        Command::Discover(args) => discover::discover(args).await,
        Command::Publish(args) => publish::publish(args).await,
        Command::Relay(args) => relay::run(args).await,
        Command::Network(args) => network::run(args).await,
        Command::Invite(args) => p2p::invite(args).await,
        Command::Join(args) => p2p::join(args).await,
        Command::Send(args) => p2p::send(args).await,
        Command::Inbox(args) => p2p::inbox(args).await,
        Command::Chat(args) => chat::chat(args).await,
        Command::Leave(args) => p2p::leave(args).await,
        Command::Logs(args) => p2p::logs(args).await,
        Command::Share(args) => share::share(args).await,
        Command::Unshare(args) => share::unshare(args).await,
        Command::Connect(args) => share::connect(args).await,
        Command::RpcWorker(args) => split::rpc_worker(args),
        Command::RpcHost(args) => split::rpc_host(args).await,
    }
}
