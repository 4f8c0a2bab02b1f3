//! `mesh serve`'s flags (and `mesh relay`'s, and the hidden split-serving children's).

use super::*;

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

    /// The context and sequences a model would be served with (`--ctx`, `--parallel`).
    pub fn sizing(&self) -> crate::catalog::listing::Sizing {
        crate::catalog::listing::Sizing {
            ctx: self.ctx,
            parallel: self.parallel,
        }
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
