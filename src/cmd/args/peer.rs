//! Flags of the peer tools: join codes, messages, chat, logs, TCP sharing.

use super::*;

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
