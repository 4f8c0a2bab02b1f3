//! `mesh network`: starts a throwaway endpoint with the node's network settings and reads what
//! the relays saw of it (iroh's net report: public addresses by QUIC address discovery, whether
//! the mapping varies per destination, relay latencies) and whether the router mapped a port.
//! Bounded: with no internet it gives up after the time it is given.

use std::time::Duration;

use iroh::unstable_net_report::NetReport;
use iroh::{SecretKey, Watcher};

use super::endpoint;
use crate::mesh::state::network::{self, NetworkReport, Portmap, RelayLatency};
use crate::mesh::{MeshError, NetConfig};

/// Once the relays answered, how long a port mapping may still take to show up.
const PORTMAP_GRACE: Duration = Duration::from_millis(1500);

/// Looks at this machine from outside for at most `wait` (plus a moment for port mapping).
pub async fn check(net: &NetConfig, wait: Duration) -> Result<NetworkReport, MeshError> {
    let ep = endpoint::builder(net, SecretKey::generate())
        .bind()
        .await
        .map_err(|e| MeshError::Bind(e.to_string()))?;
    let relays: Vec<String> = net.relays.urls().iter().map(|u| u.to_string()).collect();
    let mut reports = ep.net_report();
    let report: Option<NetReport> = if relays.is_empty() {
        None
    } else {
        tokio::time::timeout(wait, reports.initialized()).await.ok()
    };
    if net.portmap && report.is_some() {
        let portmapped = async {
            let mut addrs = ep.watch_addr();
            loop {
                if ep.metrics().socket.actor_tick_portmap_changed.get() > 0 {
                    return;
                }
                if addrs.updated().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(PORTMAP_GRACE, portmapped).await;
    }
    let addr = ep.addr();
    let own_ips = netwatch::interfaces::State::new().await.local_addresses;
    let own_ips: Vec<std::net::IpAddr> = own_ips
        .regular
        .into_iter()
        .chain(own_ips.loopback)
        .collect();
    let mut out = NetworkReport {
        relays,
        relay_latencies: Vec::new(),
        home_relay: addr.relay_urls().next().map(|u| u.to_string()),
        public_v4: None,
        public_v6: None,
        udp: false,
        mapping_varies_by_destination: None,
        public_address_is_local: false,
        portmap: match net.portmap {
            false => Portmap::Off,
            true if ep.metrics().socket.actor_tick_portmap_changed.get() > 0 => Portmap::Mapped,
            true => Portmap::NoMapping,
        },
        local_addrs: addr
            .ip_addrs()
            .filter(|a| own_ips.contains(&a.ip()))
            .map(|a| a.to_string())
            .collect(),
        verdict: network::Verdict {
            kind: network::VerdictKind::Offline,
            text: String::new(),
        },
    };
    if let Some(r) = report {
        let mut latencies: Vec<RelayLatency> = Vec::new();
        for (_, url, latency) in r.relay_latency.iter() {
            let ms = latency.as_secs_f64() * 1000.0;
            match latencies.iter_mut().find(|l| l.url == url.as_str()) {
                Some(l) => l.latency_ms = l.latency_ms.min(ms),
                None => latencies.push(RelayLatency {
                    url: url.to_string(),
                    latency_ms: ms,
                }),
            }
        }
        latencies.sort_by(|a, b| a.latency_ms.total_cmp(&b.latency_ms));
        out.relay_latencies = latencies;
        out.udp = r.has_udp();
        out.mapping_varies_by_destination = r.mapping_varies_by_dest();
        out.public_v4 = r.global_v4.map(|a| a.to_string());
        out.public_v6 = r.global_v6.map(|a| a.to_string());
        out.public_address_is_local = own_ips.iter().any(|ip| {
            r.global_v4
                .is_some_and(|g| std::net::IpAddr::V4(*g.ip()) == *ip)
                || r.global_v6
                    .is_some_and(|g| std::net::IpAddr::V6(*g.ip()) == *ip)
        });
        if out.home_relay.is_none() {
            out.home_relay = r.preferred_relay.map(|u| u.to_string());
        }
    }
    out.verdict = network::verdict(&out, wait.as_secs_f64());
    ep.close().await;
    Ok(out)
}
