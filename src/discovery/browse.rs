//! Browsing: fetch offers from relays (and, at the same time, from the LAN and a peers file:
//! `local`), score them, measure the round trip to the best few, score again. Shared by
//! `mesh discover`, `GET /api/discover` and `mesh --auto`.

use std::collections::HashMap;

use nostr::{RelayUrl, ToBech32};
use serde_json::{json, Value};

use super::local::{self, LocalReport, LocalSources};
use super::nostr_io::{self, FetchReport, Query};
use super::offer::Offer;
use super::probe;
use super::score::{self, Preferences, Probe, Scored};
use crate::mesh::NetConfig;

/// Offers, their scores (best first) and what the relays said.
#[derive(Debug, Clone)]
pub struct Browse {
    pub report: FetchReport,
    pub ranked: Vec<Scored>,
    pub probes: HashMap<iroh::EndpointId, Probe>,
    pub now: u64,
    /// What the LAN and the peers file gave (`None`: not asked).
    pub local: Option<LocalReport>,
}

/// What to browse and how.
#[derive(Debug, Clone)]
pub struct BrowseOptions {
    pub relays: Vec<RelayUrl>,
    pub query: Query,
    pub prefs: Preferences,
    /// Measure RTT to the top offers (off: every rtt term is "not measured").
    pub probe: bool,
    /// How the probes reach offers' nodes (relays, which addresses to dial).
    pub net: NetConfig,
    /// Where to look besides the relays: the LAN (mDNS), a peers file's nodes.
    pub local: LocalSources,
}

pub async fn browse(opts: &BrowseOptions) -> Browse {
    let now = opts.prefs.now;
    let (report, local) = if opts.local.is_empty() {
        let report = nostr_io::fetch_offers(&opts.relays, &opts.query, now).await;
        (report, None)
    } else {
        let (mut report, found) = tokio::join!(
            nostr_io::fetch_offers(&opts.relays, &opts.query, now),
            local::fetch(&opts.local, &opts.net, &opts.query, now),
        );
        let local = local::merge(&mut report, found);
        (report, Some(local))
    };
    let mut probes = HashMap::new();
    let mut ranked = score::rank(&report.offers, &probes, &opts.prefs);
    if opts.probe {
        let addrs = score::to_probe(&report.offers, &ranked, score::PROBE_TOP_K)
            .into_iter()
            .filter_map(|i| report.offers[i].ticket.as_ref())
            .flat_map(|t| t.peers.iter().cloned())
            .collect();
        probes = probe::probe_all(addrs, &opts.net).await;
        ranked = score::rank(&report.offers, &probes, &opts.prefs);
    }
    Browse {
        report,
        ranked,
        probes,
        now,
        local,
    }
}

impl Browse {
    pub fn offer(&self, scored: &Scored) -> &Offer {
        &self.report.offers[scored.index]
    }

    /// One offer as `mesh discover --json` and `/api/discover` show it.
    pub fn offer_json(&self, scored: &Scored) -> Value {
        let o = self.offer(scored);
        json!({
            "mesh_id": o.mesh_id.to_string(),
            "event_id": o.event_id,
            "publisher": o.publisher.to_bech32().unwrap_or_default(),
            "node_id": o.node.to_string(),
            "created_at": o.created_at,
            "expires_at": o.expires_at,
            "age_secs": self.now.saturating_sub(o.created_at),
            "expires_in_secs": o.expires_at.saturating_sub(self.now),
            "offer": o.content,
            "score": scored.score,
            "terms": scored.terms,
            "excluded": scored.excluded,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "offers": self.ranked.iter().map(|s| self.offer_json(s)).collect::<Vec<_>>(),
            "rejected": self.report.rejected,
            "relays": self.report.relays,
            "local": self.local,
        })
    }

    /// Relays that could not be asked, as one warning line (None when all answered).
    pub fn relay_warning(&self) -> Option<String> {
        let down: Vec<String> = self
            .report
            .relays
            .iter()
            .filter(|r| !r.ok)
            .map(|r| format!("{} ({})", r.url, r.error.as_deref().unwrap_or("?")))
            .collect();
        (!down.is_empty()).then(|| {
            format!(
                "{} of {} relays did not answer: {}",
                down.len(),
                self.report.relays.len(),
                down.join("; ")
            )
        })
    }
}

/// `Scored` terms as text lines (`--explain`).
pub fn explain_lines(s: &Scored) -> Vec<String> {
    if let Some(why) = &s.excluded {
        return vec![format!("excluded: {why}")];
    }
    s.terms
        .iter()
        .map(|t| format!("{:<10} {:>+7.2}  {}", t.name, t.points, t.detail))
        .collect()
}
