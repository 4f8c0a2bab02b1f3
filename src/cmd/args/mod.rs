//! Command-line definitions (clap). Every flag is visible in `--help` with a sentence. The only
//! place that defines clap types (this file: the commands; its children: their flags, one file
//! per group); the rest of `cmd/` turns them into the plain options of the layers below.

mod browse;
mod net;
mod peer;
mod serve;

pub use browse::*;
pub use net::*;
pub use peer::*;
pub use serve::*;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use iroh::RelayUrl;

use super::progress::ProgressMode;
use crate::catalog::ResolveOptions;
use crate::mesh::Ticket;
use crate::relay;

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

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a GGUF model (or, with --client, only the mesh's models) through the
    /// OpenAI-compatible API on 127.0.0.1:9337, in a new mesh or one joined by ticket.
    Serve(ServeArgs),
    /// List the model catalog (installed and fits columns); `show NAME`, `rm NAME`.
    Models(ModelsArgs),
    /// Download a model into the Hugging Face cache: a catalog name, org/repo/file.gguf or a URL.
    Download(DownloadArgs),
    /// Show this node's status: role, mesh, model, peers (asks the running node); with
    /// --ticket, only the ticket that invites others.
    Status(StatusArgs),
    /// List the mesh's peers: role, models, connection (direct / relay), RTT.
    Peers(QueryArgs),
    /// Browse mesh offers on Nostr relays, scored for this machine (best first).
    Discover(DiscoverArgs),
    /// Advertise the running node's mesh on Nostr relays (asks the node's management API).
    Publish(PublishArgs),
    /// Run a Nostr relay (ws://127.0.0.1:7447) for offers on a private network or in tests.
    Relay(RelayServerArgs),
    /// How this machine looks from outside: public address, NAT type, relay latencies, and
    /// whether peers will reach it directly or through a relay.
    Network(NetworkArgs),
    /// Make a short join code for the running node's mesh (like 7-plasma-quiver-lantern), to
    /// read aloud instead of a ticket; `mesh join CODE` or `mesh serve --join CODE` uses it.
    Invite(InviteArgs),
    /// Trade a join code for the mesh's ticket and print the ticket.
    Join(JoinArgs),
    /// Send a text message to one member of the mesh (`mesh send NODE "text"`) or to all
    /// (`mesh send --all "text"`).
    Send(SendArgs),
    /// Show the messages this node received (`--follow`: wait for more).
    Inbox(FollowArgs),
    /// Ask the mesh a question from the shell; the answer streams to stdout.
    Chat(ChatArgs),
    /// Make the running node leave its mesh; it stays up and serves on as a single node.
    Leave(QueryArgs),
    /// Show the running node's recent log lines (`--follow`: wait for more).
    Logs(FollowArgs),
    /// Share a TCP service on this machine with the mesh's members under a name
    /// (`mesh share db 127.0.0.1:5432`); `--list` shows this node's shares and connections.
    Share(ShareArgs),
    /// Stop sharing a TCP service (`mesh share` started it); its open connections end.
    Unshare(UnshareArgs),
    /// Use a member's shared TCP service through a local port (`mesh connect db`): the running
    /// node listens and carries each connection over the mesh, until Ctrl-C.
    Connect(ConnectArgs),
    /// Split serving's worker child: llama.cpp's RPC server on a loopback port (started by a
    /// node with --split-worker; not for direct use).
    #[command(hide = true)]
    RpcWorker(RpcWorkerArgs),
    /// Split serving's host child: a model over RPC devices, served on a loopback port
    /// (started by a node with --split; not for direct use).
    #[command(hide = true)]
    RpcHost(RpcHostArgs),
}

/// `mesh --auto …` is `mesh serve --auto …`: inserts `serve` when no subcommand is named and
/// `--auto` is given.
pub fn normalize_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let names = [
        "serve", "models", "download", "status", "peers", "discover", "publish", "relay",
        "network", "invite", "join", "send", "inbox", "chat", "leave", "logs", "help",
    ];
    let has_command = args.iter().skip(1).any(|a| names.iter().any(|n| a == n));
    if !has_command && args.iter().skip(1).any(|a| a == "--auto") {
        let mut out = args;
        out.insert(1.min(out.len()), "serve".into());
        return out;
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let argv = args.iter().map(std::ffi::OsString::from).collect();
        Cli::try_parse_from(normalize_args(argv)).unwrap()
    }

    #[test]
    fn mesh_auto_is_mesh_serve_auto() {
        let cli = parse(&[
            "mesh",
            "--auto",
            "--client",
            "--relay",
            "ws://127.0.0.1:7447",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert!(args.auto && args.client);
        assert_eq!(args.relay.relays[0].as_str(), "ws://127.0.0.1:7447");
        // A named command is left alone; `discover --auto` is not a thing.
        let argv = ["mesh", "discover", "--auto"]
            .map(std::ffi::OsString::from)
            .to_vec();
        assert!(Cli::try_parse_from(normalize_args(argv)).is_err());
        assert!(matches!(
            parse(&["mesh", "-v", "--auto"]).command,
            Command::Serve(_)
        ));
    }

    #[test]
    fn relay_urls_must_be_websocket_urls() {
        let argv = ["mesh", "discover", "--relay", "http://x"]
            .map(std::ffi::OsString::from)
            .to_vec();
        let err = Cli::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("ws:// or wss://"), "{err}");
    }

    #[test]
    fn network_flags_resolve_to_relays_and_policies() {
        let net = |args: &[&str]| match parse(&[&["mesh", "network"], args].concat()).command {
            Command::Network(a) => a.net.resolve().unwrap(),
            _ => unreachable!(),
        };
        let default = net(&[]);
        assert_eq!(default.relays, crate::mesh::Relays::Default);
        assert!(!default.portmap && !default.advertise_lan && !default.allow_any_relay);
        let custom = net(&[
            "--iroh-relay",
            "https://a.example",
            "--iroh-relay",
            "https://b.example",
            "--portmap",
        ]);
        assert!(matches!(&custom.relays, crate::mesh::Relays::Custom(urls) if urls.len() == 2));
        assert!(custom.portmap);
        let offline = net(&["--no-iroh-relay", "--iroh-relay", "https://a.example"]);
        assert_eq!(
            offline.relays,
            crate::mesh::Relays::Disabled,
            "offline wins"
        );
        assert!(
            offline.advertise_lan,
            "offline tells LAN addresses: there is nothing else"
        );
        let missing = parse(&["mesh", "network", "--iroh-relay-ca", "/nonexistent/ca.pem"]);
        let Command::Network(a) = missing.command else {
            unreachable!()
        };
        let err = a.net.resolve().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
