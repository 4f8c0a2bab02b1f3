//! `mesh network [--json]`: what this machine looks like from outside, and the network flags
//! every command shares ([`NetArgs`] → [`NetConfig`]).

use std::time::Duration;

use anyhow::Context;

use super::args::{NetArgs, NetworkArgs};
use crate::mesh::net::{endpoint, report};
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
