//! Flags of discovery and the catalog: `discover`, `publish`, hub options, `models`,
//! `download`, `status` and the other queries of a running node.

use super::*;

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
        opts.progress = crate::cmd::progress::progress(ProgressMode::Auto);
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
