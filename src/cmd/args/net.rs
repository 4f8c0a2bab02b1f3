//! How the node reaches others (`NetArgs`, shared by several commands), `--lan` and
//! `mesh network`.

use super::*;

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
