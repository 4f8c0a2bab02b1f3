//! Offers found without Nostr: from the nodes mDNS finds on the LAN (`--lan`) and the nodes a
//! peers file lists (`--peers FILE`), each asked for its signed offer over `mesh/offer/1`. Works
//! with no relay and no internet.
//!
//! An offer handed out this way is checked exactly like one from a relay (`offer::validate`:
//! signatures, binding, limits, ticket) and must moreover be bound to the node that handed it
//! out. Its ticket then gains the addresses the node was reached at (a public offer carries no
//! LAN address; here the LAN is the point). [`merge`] puts them with the relays' offers: for
//! the same publisher and mesh the LAN's copy wins (it is live and carries the LAN addresses).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use iroh::{EndpointAddr, SecretKey, TransportAddr};
use serde::Serialize;

use super::nostr_io::{FetchReport, Query};
use super::offer::{self, Offer, Reject};
use crate::mesh::net::{endpoint as mesh_endpoint, lan, offer as offer_proto};
use crate::mesh::NetConfig;

/// How long `--lan` listens for mDNS answers.
pub const LAN_LISTEN: Duration = Duration::from_secs(2);
/// Longest wait for one node's offer, dialling included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Nodes asked at once.
const FETCH_CONCURRENCY: usize = 16;
/// Most errors kept in the report (one line each).
const MAX_ERRORS: usize = 16;

/// Where to look besides the Nostr relays.
#[derive(Debug, Clone, Default)]
pub struct LocalSources {
    /// Listen for mesh nodes on the LAN (mDNS) this long; `None`: no mDNS.
    pub lan: Option<Duration>,
    /// Nodes to ask directly (a peers file's tickets and node addresses).
    pub peers: Vec<EndpointAddr>,
}

impl LocalSources {
    pub fn is_empty(&self) -> bool {
        self.lan.is_none() && self.peers.is_empty()
    }
}

/// What the LAN and the peers file gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocalReport {
    /// Whether mDNS was asked, and how many nodes answered it.
    pub lan: bool,
    pub lan_nodes: usize,
    /// Nodes asked for their offer (mDNS's and the peers file's).
    pub asked: usize,
    /// Valid offers received.
    pub offers: usize,
    /// Nodes that could not be reached or gave a bad answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// Valid offers (matching `query`) and the rejections, by reason.
#[derive(Debug, Clone, Default)]
pub struct LocalOffers {
    pub offers: Vec<Offer>,
    pub rejected: HashMap<&'static str, u64>,
    pub report: LocalReport,
}

/// Finds nodes (mDNS for `sources.lan`, plus `sources.peers`) and asks each for its offer, all
/// at once, each within [`FETCH_TIMEOUT`].
pub async fn fetch(
    sources: &LocalSources,
    net: &NetConfig,
    query: &Query,
    now: u64,
) -> LocalOffers {
    let mut report = LocalReport::default();
    let mut nodes: Vec<EndpointAddr> = Vec::new();
    if let Some(wait) = sources.lan {
        report.lan = true;
        match lan::find(wait).await {
            Ok(found) => {
                report.lan_nodes = found.len();
                nodes.extend(found);
            }
            Err(e) => report.errors.push(format!("mDNS: {e}")),
        }
    }
    for p in &sources.peers {
        match nodes.iter_mut().find(|n| n.id == p.id) {
            Some(known) => known.addrs.extend(p.addrs.iter().cloned()),
            None => nodes.push(p.clone()),
        }
    }
    report.asked = nodes.len();
    let mut out = LocalOffers::default();
    if nodes.is_empty() {
        out.report = report;
        return out;
    }
    let endpoint = match mesh_endpoint::builder(net, SecretKey::generate())
        .bind()
        .await
    {
        Ok(ep) => ep,
        Err(e) => {
            report.errors.push(format!("cannot start an endpoint: {e}"));
            out.report = report;
            return out;
        }
    };
    let answers: Vec<(EndpointAddr, Result<Option<String>, String>)> = futures::stream::iter(nodes)
        .map(|addr| {
            let endpoint = endpoint.clone();
            async move {
                let fetching = offer_proto::fetch(&endpoint, addr.clone());
                let answer = match tokio::time::timeout(FETCH_TIMEOUT, fetching).await {
                    Ok(a) => a,
                    Err(_) => Err(format!("no answer within {}s", FETCH_TIMEOUT.as_secs())),
                };
                (addr, answer)
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    endpoint.close().await;
    for (from, answer) in answers {
        let raw = match answer {
            Ok(Some(raw)) => raw,
            Ok(None) => continue,
            Err(e) => {
                if report.errors.len() < MAX_ERRORS {
                    report.errors.push(format!("{}: {e}", from.id.fmt_short()));
                }
                continue;
            }
        };
        match accept(&raw, &from, now) {
            Ok(o) if matches(query, &o) => out.offers.push(o),
            Ok(_) => {}
            Err(reject) => {
                tracing::debug!(node = %from.id.fmt_short(), reason = reject.as_str(), "offer dropped: {reject}");
                *out.rejected.entry(reject.as_str()).or_default() += 1;
            }
        }
    }
    report.offers = out.offers.len();
    out.report = report;
    out
}

/// Checks an offer handed out by the node at `from`: valid like a relay's, bound to that node.
/// Its ticket gains the direct addresses `from` was reached at.
pub fn accept(raw: &str, from: &EndpointAddr, now: u64) -> Result<Offer, Reject> {
    let mut o = offer::validate(raw, now)?;
    if o.node != from.id {
        return Err(Reject::OtherNode);
    }
    if let Some(ticket) = &mut o.ticket {
        for peer in ticket.peers.iter_mut().filter(|p| p.id == from.id) {
            peer.addrs
                .extend(from.ip_addrs().copied().map(TransportAddr::Ip));
        }
    }
    Ok(o)
}

/// What a relay would have filtered on (`m` and `g` tags).
fn matches(query: &Query, o: &Offer) -> bool {
    let model_ok = query
        .model
        .as_ref()
        .is_none_or(|m| o.content.models.iter().any(|s| &s.name == m));
    let region_ok = query
        .region
        .as_ref()
        .is_none_or(|r| o.content.region.as_ref() == Some(r));
    model_ok && region_ok
}

/// Puts the local offers with the relays' (the local copy replaces one from a relay for the same
/// publisher and mesh) and adds their rejections; returns what the LAN and peers file gave.
pub fn merge(report: &mut FetchReport, local: LocalOffers) -> LocalReport {
    for o in local.offers {
        report
            .offers
            .retain(|r| (r.publisher, r.mesh_id) != (o.publisher, o.mesh_id));
        report.offers.push(o);
    }
    report.offers.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then(a.event_id.cmp(&b.event_id))
    });
    for (reason, n) in local.rejected {
        *report.rejected.entry(reason).or_default() += n;
    }
    local.report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::MeshId;
    use nostr::{JsonUtil, Keys};

    const NOW: u64 = 1_700_000_000;

    /// A public offer for `model` signed by `node`, and its raw JSON.
    fn public_offer(node: &SecretKey, keys: &Keys, mesh: MeshId, model: &str) -> String {
        let mut content = offer::sample_content(model);
        content.public = true;
        content.ticket = Some(offer::public_ticket(mesh, node.public()));
        offer::build_event(keys, node, mesh, content, NOW, 180)
            .unwrap()
            .as_json()
    }

    fn at(node: &SecretKey) -> EndpointAddr {
        EndpointAddr::new(node.public()).with_ip_addr("198.18.1.2:4000".parse().unwrap())
    }

    #[test]
    fn an_offer_must_be_bound_to_the_node_that_hands_it_out() {
        let (node, other) = (SecretKey::generate(), SecretKey::generate());
        let raw = public_offer(&node, &Keys::generate(), MeshId::random(), "m");
        assert_eq!(accept(&raw, &at(&other), NOW), Err(Reject::OtherNode));
        let o = accept(&raw, &at(&node), NOW).unwrap();
        // The ticket gains the address the node answered at.
        let peer = &o.ticket.unwrap().peers[0];
        assert_eq!(
            peer.ip_addrs().copied().collect::<Vec<_>>(),
            ["198.18.1.2:4000".parse().unwrap()]
        );
        // Everything a relay's offer must be, it must be too.
        let mut tampered: serde_json::Value = serde_json::from_str(&raw).unwrap();
        tampered["content"] = "{}".into();
        assert_eq!(
            accept(&tampered.to_string(), &at(&node), NOW)
                .unwrap_err()
                .as_str(),
            "bad_signature"
        );
        assert_eq!(accept(&raw, &at(&node), NOW + 1000), Err(Reject::Expired));
    }

    #[test]
    fn local_offers_replace_the_relays_copy_and_filter_like_a_relay() {
        let (node, keys, mesh) = (SecretKey::generate(), Keys::generate(), MeshId::random());
        let raw = public_offer(&node, &keys, mesh, "m");
        let mut report = FetchReport::default();
        report.absorb(std::slice::from_ref(&raw), NOW);
        let other = public_offer(
            &SecretKey::generate(),
            &Keys::generate(),
            MeshId::random(),
            "x",
        );
        report.absorb(&[other], NOW);
        assert_eq!(report.offers.len(), 2);
        let local = accept(&raw, &at(&node), NOW).unwrap();
        let query = Query {
            model: Some("m".into()),
            region: None,
        };
        assert!(matches(&query, &local));
        assert!(!matches(
            &Query {
                model: Some("x".into()),
                region: None
            },
            &local
        ));
        let _ = merge(
            &mut report,
            LocalOffers {
                offers: vec![local.clone()],
                rejected: HashMap::from([("bad_binding", 1)]),
                report: LocalReport::default(),
            },
        );
        assert_eq!(report.offers.len(), 2, "one copy per publisher and mesh");
        assert!(report.offers.contains(&local), "the LAN copy is kept");
        assert_eq!(report.rejected["bad_binding"], 1);
    }
}
