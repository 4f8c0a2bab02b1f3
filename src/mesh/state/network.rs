//! What this machine looks like from outside (`mesh network`), and what that means for
//! connections, in plain words (pure: the IO that fills [`NetworkReport`] is `net::report`).

use serde::{Deserialize, Serialize};

/// One relay and how long it took to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayLatency {
    pub url: String,
    pub latency_ms: f64,
}

/// Router port mapping (UPnP / NAT-PMP / PCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Portmap {
    /// Not asked for (`--portmap` not given).
    Off,
    /// Asked for; the router gave no mapping.
    NoMapping,
    /// The router forwards a port to this node.
    Mapped,
}

/// What the relays saw of this machine, within the time allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkReport {
    /// Relays configured (none: `--no-iroh-relay` / `MESH_OFFLINE`).
    pub relays: Vec<String>,
    /// Relays that answered, fastest first.
    pub relay_latencies: Vec<RelayLatency>,
    /// The relay this node would be reachable through.
    pub home_relay: Option<String>,
    /// Public IPv4 / IPv6 address and port as the relays saw them (QUIC address discovery).
    pub public_v4: Option<String>,
    pub public_v6: Option<String>,
    /// Whether UDP reached a relay at all (QUIC address discovery answered).
    pub udp: bool,
    /// Whether the public port changes per destination (a symmetric NAT).
    pub mapping_varies_by_destination: Option<bool>,
    /// Whether the public address is one of this machine's own (no NAT in between).
    pub public_address_is_local: bool,
    pub portmap: Portmap,
    /// This machine's own addresses for the mesh.
    pub local_addrs: Vec<String>,
    pub verdict: Verdict,
}

/// What to expect of connections to and from this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// One sentence for people.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// Relays off: only this machine and its LAN.
    LanOnly,
    /// No relay answered: no internet, or relays blocked.
    Offline,
    /// Reachable by anyone directly (public address, or a port mapped on the router).
    DirectFromAnyone,
    /// Behind a NAT that keeps its mapping: hole punching should work.
    DirectLikely,
    /// Symmetric NAT or UDP blocked: connections go through the relay.
    RelayOnly,
}

/// The verdict for what the relays saw. `waited_secs`: how long they were given.
pub fn verdict(r: &NetworkReport, waited_secs: f64) -> Verdict {
    let (kind, text) = if r.relays.is_empty() {
        (
            VerdictKind::LanOnly,
            "relays off: direct connections on this machine and its LAN only".to_string(),
        )
    } else if r.relay_latencies.is_empty() {
        (
            VerdictKind::Offline,
            format!(
                "no internet: no relay answered within {waited_secs:.0} s; only direct connections \
                 on this LAN work (MESH_OFFLINE=1 skips the relays)"
            ),
        )
    } else if !r.udp || r.mapping_varies_by_destination == Some(true) && !reachable(r) {
        let extra = r
            .relay_latencies
            .first()
            .map(|l| format!("expect +{:.0} ms", 2.0 * l.latency_ms))
            .unwrap_or_else(|| "expect extra latency".into());
        let why = if r.udp {
            "symmetric NAT (the public port changes per destination)"
        } else {
            "UDP does not get through"
        };
        (
            VerdictKind::RelayOnly,
            format!("relay only: {why}; {extra} per round trip through the relay"),
        )
    } else if reachable(r) {
        let how = if r.public_address_is_local {
            "this machine has a public address"
        } else {
            "the router forwards a port to this node"
        };
        (
            VerdictKind::DirectFromAnyone,
            format!("direct connections from anyone: {how}"),
        )
    } else {
        (
            VerdictKind::DirectLikely,
            "direct connections likely: behind a NAT that keeps its mapping, hole punching works \
             with most peers (the relay carries the rest)"
                .to_string(),
        )
    };
    Verdict { kind, text }
}

fn reachable(r: &NetworkReport) -> bool {
    r.public_address_is_local || r.portmap == Portmap::Mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> NetworkReport {
        NetworkReport {
            relays: vec!["https://relay.example./".into()],
            relay_latencies: vec![RelayLatency {
                url: "https://relay.example./".into(),
                latency_ms: 20.0,
            }],
            home_relay: Some("https://relay.example./".into()),
            public_v4: Some("198.51.100.2:4000".into()),
            public_v6: None,
            udp: true,
            mapping_varies_by_destination: Some(false),
            public_address_is_local: false,
            portmap: Portmap::Off,
            local_addrs: vec!["198.18.1.2:4000".into()],
            verdict: Verdict {
                kind: VerdictKind::Offline,
                text: String::new(),
            },
        }
    }

    #[test]
    fn each_situation_gets_its_verdict() {
        let r = report();
        assert_eq!(verdict(&r, 3.0).kind, VerdictKind::DirectLikely);

        let symmetric = NetworkReport {
            mapping_varies_by_destination: Some(true),
            ..report()
        };
        let v = verdict(&symmetric, 3.0);
        assert_eq!(v.kind, VerdictKind::RelayOnly);
        assert!(v.text.contains("+40 ms"), "{}", v.text);

        let no_udp = NetworkReport {
            udp: false,
            ..report()
        };
        assert_eq!(verdict(&no_udp, 3.0).kind, VerdictKind::RelayOnly);

        let public = NetworkReport {
            public_address_is_local: true,
            ..report()
        };
        assert_eq!(verdict(&public, 3.0).kind, VerdictKind::DirectFromAnyone);
        let mapped = NetworkReport {
            portmap: Portmap::Mapped,
            mapping_varies_by_destination: Some(true),
            ..report()
        };
        assert_eq!(verdict(&mapped, 3.0).kind, VerdictKind::DirectFromAnyone);

        let offline = NetworkReport {
            relay_latencies: vec![],
            ..report()
        };
        let v = verdict(&offline, 3.0);
        assert_eq!(v.kind, VerdictKind::Offline);
        assert!(v.text.contains("within 3 s"), "{}", v.text);

        let lan = NetworkReport {
            relays: vec![],
            ..report()
        };
        assert_eq!(verdict(&lan, 3.0).kind, VerdictKind::LanOnly);
    }
}
