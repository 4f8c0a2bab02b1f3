//! `mesh network [--json]`: what this machine looks like from outside, and the network flags
//! every command shares ([`NetArgs`] → [`NetConfig`]; [`LanArgs`]: `--lan`, `--peers FILE`).

use std::io::Read;
use std::time::Duration;

use anyhow::Context;

use super::args::{LanArgs, NetArgs, NetworkArgs};
use crate::discovery::local::{LocalSources, LAN_LISTEN};
use crate::mesh::net::{endpoint, report};
use crate::mesh::proto::peers::{self, PeerEntry, MAX_PEERS_FILE_BYTES};
use crate::mesh::state::network::{NetworkReport, Portmap};
use crate::mesh::{NetConfig, Relays};

impl NetArgs {
    /// The plain network settings these flags mean. `--no-iroh-relay` / `MESH_OFFLINE` wins over
    /// `--iroh-relay` and implies LAN addresses (there is nothing else to tell).
    pub fn resolve(&self) -> anyhow::Result<NetConfig> {
        let relays = if self.no_iroh_relay {
            Relays::Disabled
        } else if self.iroh_relays.is_empty() {
            Relays::Default
        } else {
            Relays::Custom(self.iroh_relays.clone())
        };
        let relay_tls = match &self.iroh_relay_ca {
            Some(path) => Some(endpoint::relay_ca(path).map_err(anyhow::Error::msg)?),
            None => None,
        };
        Ok(NetConfig {
            relays,
            relay_tls,
            portmap: self.portmap,
            advertise_lan: self.advertise_lan || self.no_iroh_relay,
            allow_any_relay: self.allow_any_iroh_relay,
            lan: false,
            mdns: false,
        })
    }
}

impl LanArgs {
    /// The network settings with these flags: `--lan` advertises this node by mDNS; with it or
    /// a peers file, LAN addresses are dialled.
    pub fn apply(&self, net: &mut crate::mesh::NetConfig) {
        net.mdns = self.lan;
        net.lan = self.lan || self.peers.is_some();
    }

    /// The peers file's entries (none without `--peers`); errors name the file and the line.
    pub fn peer_entries(&self) -> anyhow::Result<Vec<PeerEntry>> {
        let Some(path) = &self.peers else {
            return Ok(Vec::new());
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(MAX_PEERS_FILE_BYTES as u64 + 1)
                    .read_to_string(&mut text)
            })
            .with_context(|| format!("cannot read the peers file {}", path.display()))?;
        peers::parse(&text).with_context(|| format!("peers file {}", path.display()))
    }

    /// Where `discover` and `--auto` look besides the relays: the LAN (mDNS, for
    /// [`LAN_LISTEN`]) and every node the peers file names.
    pub fn sources(&self) -> anyhow::Result<LocalSources> {
        Ok(LocalSources {
            lan: self.lan.then_some(LAN_LISTEN),
            peers: self
                .peer_entries()?
                .iter()
                .flat_map(PeerEntry::nodes)
                .collect(),
        })
    }
}

pub async fn run(args: NetworkArgs) -> anyhow::Result<()> {
    let net = args.net.resolve()?;
    let wait = Duration::from_secs_f64(args.timeout.clamp(0.1, 60.0));
    let report = report::check(&net, wait)
        .await
        .context("cannot start an endpoint")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The report for people: one fact a line, the verdict last.
fn render(r: &NetworkReport) -> String {
    let none = || "-".to_string();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line(
        "relays",
        if r.relays.is_empty() {
            "off".into()
        } else {
            r.relays.join(", ")
        },
    );
    for l in &r.relay_latencies {
        line("  latency", format!("{} {:.0} ms", l.url, l.latency_ms));
    }
    line("home relay", r.home_relay.clone().unwrap_or_else(none));
    line("public IPv4", r.public_v4.clone().unwrap_or_else(none));
    line("public IPv6", r.public_v6.clone().unwrap_or_else(none));
    line(
        "NAT",
        match (r.public_address_is_local, r.mapping_varies_by_destination) {
            (true, _) => "none (public address on this machine)".into(),
            (false, Some(true)) => "symmetric (port changes per destination)".into(),
            (false, Some(false)) => "keeps its mapping per destination".into(),
            (false, None) => "unknown".into(),
        },
    );
    line(
        "port mapping",
        match r.portmap {
            Portmap::Off => "off (--portmap asks the router)".into(),
            Portmap::NoMapping => "asked; the router gave none".into(),
            Portmap::Mapped => "mapped by the router".into(),
        },
    );
    line("local", r.local_addrs.join(", "));
    out.push_str(&format!("\n{}\n", r.verdict.text));
    out
}
