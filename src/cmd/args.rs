//! Command-line definitions (clap). Every flag is visible in `--help` with a sentence. The only
//! file that defines clap types; the rest of `cmd/` turns them into the plain options of the
//! layers below.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use iroh::RelayUrl;

use super::progress::ProgressMode;
use crate::catalog::ResolveOptions;
use crate::mesh::Ticket;
use crate::relay;

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

/// `mesh rpc-worker` (hidden; see `node::split::child`).
#[derive(Debug, Clone, Args)]
pub struct RpcWorkerArgs {
    /// 127.0.0.1:PORT to listen on.
    #[arg(long)]
    pub endpoint: SocketAddr,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// `mesh rpc-host` (hidden; see `node::split::child`).
#[derive(Debug, Clone, Args)]
pub struct RpcHostArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub model_name: String,
    /// Loopback port of the OpenAI API.
    #[arg(long)]
    pub port: u16,
    /// A worker's RPC endpoint (127.0.0.1:PORT); repeat in order.
    #[arg(long, required = true)]
    pub rpc: Vec<SocketAddr>,
    /// Layers on the workers.
    #[arg(long)]
    pub gpu_layers: u32,
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    #[arg(long)]
    pub ctx: Option<u32>,
    #[arg(long)]
    pub threads: Option<u32>,
}

/// Join codes' and messages' flags.
#[derive(Debug, Clone, Args)]
pub struct InviteArgs {
    /// How many nodes may join with the code.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub uses: u32,

    /// How long the code works: seconds, or with a unit (90s, 10m, 2h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub ttl: std::time::Duration,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node whose mesh to invite to.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,

    /// Answer on the LAN too (mDNS and a direct connection), so `mesh join CODE --lan` works
    /// with no Nostr relay or internet. Sends multicast to the LAN.
    #[arg(long)]
    pub lan: bool,
}

/// `90`, `90s`, `10m`, `2h` as a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h, like 10m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    if secs == 0 {
        return Err("must be longer than 0".into());
    }
    Ok(std::time::Duration::from_secs(secs))
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// The join code (`mesh invite` on a node of the mesh prints one).
    pub code: String,

    /// Print JSON ({"ticket": …}).
    #[arg(long)]
    pub json: bool,

    /// Trade the code on the LAN (mDNS and a direct connection) instead of the Nostr relays:
    /// for codes made with `mesh invite --lan`. Sends multicast to the LAN.
    #[arg(long)]
    pub lan: bool,

    #[command(flatten)]
    pub relay: RelayArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// NODE (a node id, a prefix of one, or a peer name) and the text; only the text with
    /// --all.
    #[arg(required = true, num_args = 1..=2, value_name = "NODE TEXT")]
    pub words: Vec<String>,

    /// Send to every member.
    #[arg(long)]
    pub all: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node to send from.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}

/// `mesh inbox` and `mesh logs`.
#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// Keep waiting for new ones (Ctrl-C ends).
    #[arg(short, long)]
    pub follow: bool,

    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node to ask.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The question.
    pub prompt: String,

    /// Model to ask (default: the first one the node lists).
    #[arg(long)]
    pub model: Option<String>,

    /// Management API of the node to ask (it answers `/v1/chat/completions` too, so the
    /// OpenAI API's address works as well).
    #[arg(long, alias = "api-url", default_value = "http://127.0.0.1:3131")]
    pub api: String,

    /// Largest answer, in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: u32,

    /// Instead of a running node: join the mesh of this ticket or join code for this one
    /// question (a throwaway client node), then leave.
    #[arg(long, value_name = "TICKET|CODE")]
    pub join: Option<JoinTarget>,

    #[command(flatten)]
    pub relay: RelayArgs,

    #[command(flatten)]
    pub net: NetArgs,
}

/// What `--join` takes: a ticket, or a join code to trade for one.
#[derive(Debug, Clone)]
pub enum JoinTarget {
    Ticket(Ticket),
    Code(String),
}

impl std::str::FromStr for JoinTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        use crate::discovery::invite::Code;
        if Code::looks_like(s) {
            Code::parse(s).map_err(|e| e.to_string())?;
            return Ok(JoinTarget::Code(s.trim().to_string()));
        }
        s.parse::<Ticket>()
            .map(JoinTarget::Ticket)
            .map_err(|e| e.to_string())
    }
}

/// How the node reaches others and is reached (iroh relays, port mapping, which addresses it
/// tells and dials). Shared by `serve`, `discover` and `network`.
#[derive(Debug, Clone, Default, Args)]
pub struct NetArgs {
    /// iroh relay to use instead of iroh's public relays (repeat for several): a private relay.
    #[arg(long = "iroh-relay", value_name = "URL")]
    pub iroh_relays: Vec<RelayUrl>,

    /// PEM file with the certificate (or its CA) of a private iroh relay to trust.
    #[arg(long, value_name = "FILE", env = "MESH_IROH_RELAY_CA")]
    pub iroh_relay_ca: Option<PathBuf>,

    /// No iroh relays: direct addresses only, LAN addresses included (networks without
    /// internet). Wins over --iroh-relay.
    #[arg(long, env = "MESH_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_iroh_relay: bool,

    /// Ask the home router to forward a port (UPnP / NAT-PMP / PCP): more direct connections
    /// from home networks. Sends packets to the LAN gateway and multicast groups.
    #[arg(long)]
    pub portmap: bool,

    /// Tell and dial LAN addresses (private ranges, loopback) in public meshes too.
    #[arg(long, env = "MESH_ADVERTISE_LAN", value_parser = clap::builder::BoolishValueParser::new())]
    pub advertise_lan: bool,

    /// Dial iroh relays that tickets and offers name even when they are not in this node's list.
    #[arg(long)]
    pub allow_any_iroh_relay: bool,
}

/// Finding meshes without Nostr or internet. Shared by `serve` (and `--auto`) and `discover`.
#[derive(Debug, Clone, Default, Args)]
pub struct LanArgs {
    /// Find meshes on this LAN with mDNS, and let others on it find this node (`discover`,
    /// `--auto`; `serve` advertises). Sends multicast to the LAN; LAN addresses are dialled.
    #[arg(long)]
    pub lan: bool,

    /// File of tickets and node addresses (NODE_ID@IP:PORT), one a line: `serve` joins the
    /// tickets; `discover` and `--auto` ask every listed node for its mesh's offer.
    #[arg(long, value_name = "FILE")]
    pub peers: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Longest wait for the relays' answers, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,

    #[command(flatten)]
    pub net: NetArgs,
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

/// Parses a Nostr relay URL (`ws://` or `wss://`).
fn nostr_relay(s: &str) -> Result<nostr::RelayUrl, String> {
    nostr::RelayUrl::parse(s).map_err(|e| format!("not a Nostr relay URL (ws:// or wss://): {e}"))
}

/// Which Nostr relays to use. Shared by `serve`, `discover` and `publish`.
#[derive(Debug, Clone, Default, Args)]
pub struct RelayArgs {
    /// Nostr relay for mesh offers; repeat for several (default: $MESH_RELAYS, comma separated,
    /// else a few public relays).
    #[arg(long = "relay", value_name = "URL", value_parser = nostr_relay)]
    pub relays: Vec<nostr::RelayUrl>,
}

#[derive(Debug, Clone, Args)]
pub struct DiscoverArgs {
    /// Only meshes serving this model.
    #[arg(long)]
    pub model: Option<String>,

    /// Only meshes in this region (and score them as near).
    #[arg(long)]
    pub region: Option<String>,

    /// Only meshes whose serving nodes have at least this much memory, in GB.
    #[arg(long, value_name = "GB")]
    pub min_memory: Option<f64>,

    /// Print JSON (every offer, its score and breakdown, rejections, relay errors).
    #[arg(long)]
    pub json: bool,

    /// Print every term of every offer's score.
    #[arg(long)]
    pub explain: bool,

    /// Do not measure the round trip to the best offers (faster; rtt terms say "not measured").
    #[arg(long)]
    pub no_probe: bool,

    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub lan: LanArgs,

    #[command(flatten)]
    pub relay: RelayArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Stop publishing and delete the offer from the relays.
    #[arg(long)]
    pub stop: bool,

    /// Print the raw JSON answer.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node to publish.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,

    #[command(flatten)]
    pub relay: RelayArgs,
}

/// Where the catalog and the hub are. Shared by `models`, `download` (and `serve`).
#[derive(Debug, Clone, Default, Args)]
pub struct HubArgs {
    /// Catalog file (TOML, format in docs/CATALOG.md) to use instead of the built-in catalog.
    #[arg(long, value_name = "FILE", global = true)]
    pub catalog: Option<PathBuf>,

    /// Hugging Face hub base URL (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, value_name = "URL", global = true)]
    pub hf_endpoint: Option<String>,

    /// Use only files already in the cache, never the network (same as HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

impl HubArgs {
    /// The environment's hub settings with these flags on top; download progress on the
    /// terminal (bars, or plain lines when stdout is not one).
    pub fn resolve_options(&self) -> ResolveOptions {
        let mut opts = ResolveOptions::from_env().with_overrides(
            self.catalog.as_deref(),
            self.hf_endpoint.as_deref(),
            self.offline,
        );
        opts.progress = super::progress::progress(ProgressMode::Auto);
        opts
    }

    /// [`Self::resolve_options`] without progress on the terminal.
    pub fn resolve_options_quiet(&self) -> ResolveOptions {
        ResolveOptions::from_env().with_overrides(
            self.catalog.as_deref(),
            self.hf_endpoint.as_deref(),
            self.offline,
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Option<ModelsAction>,

    /// Only list models that fit in this machine's memory at their default context, with the
    /// decode speed expected here (from the memory bandwidth, measured once).
    #[arg(long)]
    pub fits: bool,

    /// Print JSON instead of a table (or text, for `show`).
    #[arg(long, global = true)]
    pub json: bool,

    #[command(flatten)]
    pub hub: HubArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ModelsAction {
    /// Show one catalog entry: files, sizes, cache paths and memory needs.
    Show {
        /// Catalog name, e.g. SmolLM2-135M-Instruct-Q4_1.
        name: String,
    },
    /// Delete a catalog model's files from the Hugging Face cache.
    Rm {
        /// Catalog name of the model to delete.
        name: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// Catalog name, org/repo/path/file.gguf (org/repo@revision/... for a revision), or a URL.
    pub model: String,

    /// Print progress as JSON lines on stdout (for programs) instead of bars or plain lines.
    #[arg(long)]
    pub json: bool,

    /// Re-hash files already in the cache (size and sha256) before reporting them present.
    #[arg(long)]
    pub verify: bool,

    #[command(flatten)]
    pub hub: HubArgs,
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Print the raw JSON of the management API instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node to ask.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub query: QueryArgs,

    /// Print only the mesh's ticket (from `GET /api/ticket`, answered on this machine only).
    /// A private mesh's ticket holds its secret: share it only with members.
    #[arg(long)]
    pub ticket: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model to serve: a catalog name (`mesh models`), org/repo/file.gguf, a URL, or a local
    /// .gguf path. Downloaded into the Hugging Face cache first when needed. Repeat to serve
    /// several models, each with its own engine and slots (they must fit in memory together).
    /// With --auto: the model wanted (served by this node, or used by a --client); once.
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,

    /// Serve no model: use the models of the other nodes of the mesh.
    #[arg(long)]
    pub client: bool,

    /// An OpenAI-compatible engine already running (Ollama, llama-server, vLLM, another mesh)
    /// whose models this node serves too: listed, announced to the mesh, requests forwarded to
    /// it. `/v1` is added unless given (Ollama: http://127.0.0.1:11434). Repeatable; works with
    /// or without --model. Polled every 2 s: its models leave the mesh while it is down.
    #[arg(long, value_name = "URL", value_parser = parse_upstream)]
    pub upstream: Vec<reqwest::Url>,

    /// Find the best mesh on Nostr relays, join it and serve a model it needs (with --client:
    /// only use it); start and publish a new public mesh when none fits. `mesh --auto` is the
    /// same.
    #[arg(long, conflicts_with_all = ["join", "public"])]
    pub auto: bool,

    /// With --auto: print the mesh it would join and the model it would serve, with the
    /// reasons, and exit (nothing joined, downloaded or published).
    #[arg(long, requires = "auto")]
    pub dry_run: bool,

    /// With --dry-run: print JSON instead of text.
    #[arg(long, requires = "dry_run")]
    pub json: bool,

    /// With --auto: serve only models expected to decode at least this many tokens per second
    /// on this machine (`mesh models --fits` shows the estimates).
    #[arg(long, value_name = "TOK/S", default_value_t = crate::catalog::speed::DEFAULT_MIN_TOKENS_PER_SEC)]
    pub min_speed: f64,

    /// Advertise this node's mesh on Nostr relays: republished every 60 s, deleted at Ctrl-C.
    #[arg(long)]
    pub publish: bool,

    #[command(flatten)]
    pub relay: RelayArgs,

    /// Mesh name in published offers (default: the node name's mesh).
    #[arg(long)]
    pub mesh_name: Option<String>,

    /// A model this mesh would like someone to serve, published in its offer (repeatable).
    #[arg(long = "want", value_name = "MODEL")]
    pub wanted: Vec<String>,

    /// How many clients the mesh takes, as published in its offer.
    #[arg(long, default_value_t = 64)]
    pub max_clients: u32,

    /// Join a mesh with a ticket printed by one of its nodes, or a join code (`mesh invite`;
    /// traded for the ticket on the Nostr relays, or on the LAN with --lan). Repeat to give
    /// several.
    #[arg(long, value_name = "TICKET|CODE")]
    pub join: Vec<JoinTarget>,

    /// Start a public mesh: its tickets hold no secret, so anyone with one may join.
    #[arg(long, conflicts_with = "join")]
    pub public: bool,

    /// Use a throwaway node key instead of the one kept in ~/.mesh (or $MESH_HOME).
    #[arg(long)]
    pub ephemeral: bool,

    /// UDP address for mesh traffic (default: all interfaces, random port).
    #[arg(long, value_name = "ADDR")]
    pub mesh_bind: Option<SocketAddr>,

    #[command(flatten)]
    pub net: NetArgs,

    #[command(flatten)]
    pub lan: LanArgs,

    /// Name shown to peers (default: the host name).
    #[arg(long)]
    pub name: Option<String>,

    /// Region shown to peers, e.g. `eu-west`.
    #[arg(long)]
    pub region: Option<String>,

    /// Model id announced in the API (default: the file name without `.gguf`, dots as dashes).
    /// With several --model: the first one's.
    #[arg(long)]
    pub model_name: Option<String>,

    /// Address the OpenAI-compatible API binds to. Beyond loopback (e.g. 0.0.0.0 to share it
    /// on a LAN) it needs --api-key or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Address the management API binds to. Keep the loopback default: beyond it, it needs
    /// --api-key (asked of non-loopback clients) or --insecure-no-auth.
    #[arg(long, default_value = "127.0.0.1")]
    pub api_host: IpAddr,

    /// Key clients must send as `Authorization: Bearer KEY`: on every OpenAI API request, and
    /// on management API requests from other machines.
    #[arg(long, env = "MESH_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Let --host / --api-host bind beyond loopback without --api-key: anyone who can reach
    /// the address may use this node.
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Browser origin allowed to call the OpenAI API with CORS, e.g. http://localhost:5173
    /// (repeatable; `*` for any). Without it no CORS headers are sent.
    #[arg(long = "cors", value_name = "ORIGIN")]
    pub cors: Vec<String>,

    /// Host name the HTTP servers answer besides localhost and IP addresses (repeatable), e.g.
    /// the LAN name clients use. Other names are refused against DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,

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

    #[command(flatten)]
    pub hub: HubArgs,

    /// Serve --model split by layers over N members (this node and N-1 that run with
    /// --split-worker), llama.cpp's RPC traffic carried only over the mesh. The model is
    /// served once enough members are present, and re-planned when one leaves. Without
    /// --split, a --model too big for this node is split automatically over the mesh it joins.
    #[arg(long, value_name = "N", requires = "models", value_parser = clap::value_parser!(u32).range(2..=17))]
    pub split: Option<u32>,

    /// Lend this node's memory to models that members split (--split): a llama.cpp RPC
    /// server in a child process, reachable only by the split's host over the mesh.
    #[arg(long)]
    pub split_worker: bool,
}

impl ServeArgs {
    /// The first `--model` (the one `--auto` wants).
    pub fn model(&self) -> Option<&str> {
        self.models.first().map(String::as_str)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RelayServerArgs {
    /// Address to listen on. Keep the loopback default unless other machines should publish here.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = relay::DEFAULT_PORT)]
    pub port: u16,

    /// Keep events in an LMDB database in this directory (default: in memory, lost on exit).
    #[arg(long, value_name = "DIR")]
    pub db: Option<PathBuf>,

    /// Largest event accepted, in bytes of its JSON; larger ones are refused.
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,

    /// Accept events of every kind, not only mesh offers and deletions (NIP-09).
    #[arg(long)]
    pub any_kind: bool,

    /// Events one connection may publish per minute; beyond it the relay answers `rate-limited`.
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_RATE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,

    /// Events one IP address may publish per minute over all its connections.
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_RATE_PER_IP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_per_ip: u32,

    /// Subscriptions (REQs) one connection may keep open.
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_MAX_REQS)]
    pub max_reqs: usize,

    /// Connections open at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
}

fn parse_upstream(text: &str) -> Result<reqwest::Url, String> {
    crate::http::upstream::parse_base(text)
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

/// `mesh share`.
#[derive(Debug, Clone, Args)]
pub struct ShareArgs {
    /// The name members connect to (`mesh connect NAME`): 1 to 32 of a-z, A-Z, 0-9, '.', '_', '-'.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,

    /// The service, IP:PORT on this machine (e.g. 127.0.0.1:8888; `localhost:PORT` works too).
    #[arg(required_unless_present = "list", value_parser = parse_target)]
    pub target: Option<SocketAddr>,

    /// List this node's shares and `mesh connect` listeners instead.
    #[arg(long, conflicts_with_all = ["name", "target"])]
    pub list: bool,

    /// Allow a target that is not on this machine. Every member could then reach that address
    /// through this node (a machine on your LAN, say), which is why it is refused by default.
    #[arg(long)]
    pub allow_remote_target: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node that shares.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}

/// `IP:PORT`, or `localhost:PORT` for 127.0.0.1.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        return Ok((std::net::Ipv4Addr::LOCALHOST, port).into());
    }
    s.parse()
        .map_err(|_| format!("{s:?}: expected IP:PORT, like 127.0.0.1:8888"))
}

/// `mesh unshare`.
#[derive(Debug, Clone, Args)]
pub struct UnshareArgs {
    /// The share to stop.
    pub name: String,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,

    /// Management API of the node that shares.
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}

/// `mesh connect`.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The share's name (`mesh peers` lists each member's shares).
    pub name: String,

    /// The member to use when several share NAME: a node id, a prefix of one, or a name.
    #[arg(long)]
    pub node: Option<String>,

    /// Local address to listen on (default: a free port on 127.0.0.1, printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,

    /// Print JSON lines (the first has the address listened on).
    #[arg(long)]
    pub json: bool,

    /// Management API of the node that connects (it listens and carries the connections).
    #[arg(long, default_value = "http://127.0.0.1:3131")]
    pub api: String,
}
