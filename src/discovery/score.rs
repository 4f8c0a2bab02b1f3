//! The scorer: which mesh to join. A pure function of the offers, what this node wants, and the
//! round-trip times measured to the best few — deterministic for equal input; `pick` breaks
//! near-ties at random so that many nodes starting at once do not all pile onto one mesh.
//!
//! An offer first passes hard filters (joinable, requested model, full, memory, reachable); then
//! its score is the sum of the terms below, each shown by `mesh discover --explain`
//! (docs/DESIGN.md, "Choosing a mesh", has the table):
//!
//! Each term is one function (`model_term`, `capacity_term` …), named after its row.
//!
//! | term      | points                                                            |
//! |-----------|-------------------------------------------------------------------|
//! | model     | +40 requested model served; +25 requested or servable model wanted; else +5 per model served (≤ 4) |
//! | capacity  | +20 × free slots ÷ slots, +2 × log2(1 + free slots, counted up to 7) |
//! | memory    | +2 × log2(1 + GiB of the serving nodes, counted up to 31)         |
//! | nodes     | +4 × log2(1 + serving nodes, counted up to 3)                     |
//! | load      | −3 × busy slots per serving node (at most −15)                    |
//! | freshness | +5 fresh, falling to 0 at the offer's expiry                       |
//! | region    | +15 same region                                                   |
//! | sticky    | +10 the mesh this node was in last                                 |
//! | rtt       | −rtt ms ÷ 10 (at most −25); −5 when not measured                  |
//!
//! Every term is bounded. The figures an offer claims (slots, memory, nodes) count only up to a
//! small mesh's ([`FREE_SLOTS_COUNTED`], [`MEMORY_GIB_COUNTED`], [`NODES_COUNTED`]): an offer
//! inflated to every cap of `offer::check_plausible` scores at most [`MAX_CLAIM_GAIN`] above an
//! honest single node, less than the sticky bonus. Offers whose publisher lied before
//! ([`Preferences::untrusted`]) are excluded.

use std::collections::HashMap;
use std::time::Duration;

use iroh::EndpointId;
use rand::Rng;
use serde::Serialize;

use super::offer::{self, Offer, OfferContent, ServedModel};
use super::untrusted::Untrusted;
use crate::mesh::proto::ticket::{MeshId, Ticket};

/// How many of the best offers get their round-trip time measured before the final choice.
pub const PROBE_TOP_K: usize = 5;
/// Offers within this many points of the best are equally good: `pick` chooses among them.
pub const NEAR_EQUAL: f64 = 2.0;
/// Free slots the capacity term counts at most (its log part is then worth 6).
pub const FREE_SLOTS_COUNTED: u64 = 7;
/// GiB of memory the memory term counts at most (then worth 10).
pub const MEMORY_GIB_COUNTED: f64 = 31.0;
/// Serving nodes the nodes term counts at most (then worth 8).
pub const NODES_COUNTED: u32 = 3;
/// The most an offer gains by inflating its slots, memory and nodes over an honest single node
/// with 4 free slots of 4 and 8 GiB: (6 − 2·log2 5) + (10 − 2·log2 9) + (8 − 4). Tested.
pub const MAX_CLAIM_GAIN: f64 = 9.1;

/// What this node wants from a mesh.
#[derive(Debug, Clone, Default)]
pub struct Preferences {
    /// A model the user asked for: the mesh must serve it (or, for a serving node, want it).
    pub model: Option<String>,
    pub region: Option<String>,
    /// The serving nodes' memory must be at least this.
    pub min_memory_bytes: u64,
    /// The mesh this node was in last.
    pub last_mesh: Option<MeshId>,
    /// Only consumes: needs a model served now, and a mesh that is not full.
    pub client: bool,
    /// Models this node could serve (fit its memory); a mesh wanting one of them scores higher.
    pub servable: Vec<String>,
    /// Only meshes with a ticket (public) can be joined; `false` lists private ones too.
    pub joinable_only: bool,
    /// Publishers whose offers lied (`~/.mesh/untrusted.json`): their offers are excluded.
    pub untrusted: Untrusted,
    /// Unix seconds.
    pub now: u64,
}

/// Result of measuring the round trip to an offer's node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    Rtt(Duration),
    Unreachable,
}

/// One line of an explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Term {
    pub name: &'static str,
    pub points: f64,
    pub detail: String,
}

/// An offer's score: `index` into the offers given to [`rank`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    pub index: usize,
    pub score: f64,
    pub terms: Vec<Term>,
    /// Why a hard filter left it out (then `score` is 0 and `terms` empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

impl Scored {
    pub fn eligible(&self) -> bool {
        self.excluded.is_none()
    }
}

/// Scores every offer. Eligible offers come first, best first (ties: older event id order is
/// not used; the mesh id decides, so equal input gives equal output); excluded ones follow.
pub fn rank(
    offers: &[Offer],
    probes: &HashMap<EndpointId, Probe>,
    prefs: &Preferences,
) -> Vec<Scored> {
    let mut scored: Vec<Scored> = offers
        .iter()
        .enumerate()
        .map(|(index, o)| score_one(index, o, probes.get(&o.node).copied(), prefs))
        .collect();
    scored.sort_by(|a, b| {
        b.eligible()
            .cmp(&a.eligible())
            .then(b.score.total_cmp(&a.score))
            .then_with(|| offers[a.index].mesh_id.0.cmp(&offers[b.index].mesh_id.0))
            .then(a.index.cmp(&b.index))
    });
    scored
}

/// Nodes to probe: those of the best `k` eligible offers.
pub fn to_probe(offers: &[Offer], ranked: &[Scored], k: usize) -> Vec<usize> {
    ranked
        .iter()
        .filter(|s| s.eligible())
        .take(k)
        .map(|s| s.index)
        .filter(|&i| offers[i].ticket.is_some())
        .collect()
}

/// The offer to join: at random among eligible offers within [`NEAR_EQUAL`] of the best.
pub fn pick<'a>(ranked: &'a [Scored], rng: &mut impl Rng) -> Option<&'a Scored> {
    let best = ranked.first().filter(|s| s.eligible())?;
    let leaders: Vec<&Scored> = ranked
        .iter()
        .take_while(|s| s.eligible() && best.score - s.score <= NEAR_EQUAL)
        .collect();
    Some(leaders[rng.random_range(0..leaders.len())])
}

fn score_one(index: usize, o: &Offer, probe: Option<Probe>, prefs: &Preferences) -> Scored {
    match exclusion(o, probe, prefs) {
        Some(why) => Scored {
            index,
            score: 0.0,
            terms: Vec::new(),
            excluded: Some(why),
        },
        None => {
            let terms = terms(o, probe, prefs);
            Scored {
                index,
                score: terms.iter().map(|t| t.points).sum(),
                terms,
                excluded: None,
            }
        }
    }
}

fn serves(o: &Offer, model: &str) -> bool {
    o.content.models.iter().any(|m| m.name == model)
}

fn wants(o: &Offer, model: &str) -> bool {
    o.content.wanted.iter().any(|w| w == model)
}

fn exclusion(o: &Offer, probe: Option<Probe>, prefs: &Preferences) -> Option<String> {
    let c = &o.content;
    if let Some(e) = prefs.untrusted.find(&o.publisher, &o.node, prefs.now) {
        return Some(format!("untrusted publisher: {}", e.reason));
    }
    if prefs.joinable_only && o.ticket.is_none() {
        return Some("private mesh: ask a member for a ticket".into());
    }
    if let Some(m) = &prefs.model {
        let ok = serves(o, m) || (!prefs.client && wants(o, m));
        if !ok {
            return Some(format!("does not serve {m}"));
        }
    }
    if prefs.client && c.models.is_empty() {
        return Some("serves no model".into());
    }
    if prefs.client && c.clients >= c.max_clients {
        return Some(format!("full ({} of {} clients)", c.clients, c.max_clients));
    }
    if c.memory_bytes < prefs.min_memory_bytes {
        return Some(format!(
            "{} of memory, less than asked",
            gib_text(c.memory_bytes)
        ));
    }
    if probe == Some(Probe::Unreachable) {
        return Some("did not answer a probe".into());
    }
    None
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn gib_text(bytes: u64) -> String {
    format!("{:.1} GiB", gib(bytes))
}

fn term(name: &'static str, points: f64, detail: String) -> Term {
    Term {
        name,
        points: (points * 100.0).round() / 100.0,
        detail,
    }
}

/// Every term of an eligible offer, in the order of the table above (and docs/DESIGN.md).
fn terms(o: &Offer, probe: Option<Probe>, prefs: &Preferences) -> Vec<Term> {
    let slots = SlotCounts::of(&o.content);
    vec![
        model_term(o, prefs),
        capacity_term(slots),
        memory_term(&o.content),
        nodes_term(&o.content),
        load_term(slots, &o.content),
        freshness_term(o, prefs.now),
        region_term(&o.content, prefs),
        sticky_term(o, prefs),
        rtt_term(probe),
    ]
}

/// Slots over all models served, and how many of them are free.
#[derive(Debug, Clone, Copy)]
struct SlotCounts {
    slots: u64,
    free: u64,
}

impl SlotCounts {
    fn of(c: &OfferContent) -> Self {
        let (slots, free) = c.models.iter().fold((0u64, 0u64), |(s, f), m| {
            (s + m.slots as u64, f + m.free_slots as u64)
        });
        Self { slots, free }
    }
}

/// " (counted as N)" when a claimed figure is over what its term counts.
fn counted_as(capped: bool, counted: impl std::fmt::Display) -> String {
    if capped {
        format!(" (counted as {counted})")
    } else {
        String::new()
    }
}

/// +20 × free slots ÷ slots, +2 × log2(1 + free slots, at most [`FREE_SLOTS_COUNTED`]).
fn capacity_term(SlotCounts { slots, free }: SlotCounts) -> Term {
    let ratio = if slots == 0 {
        0.0
    } else {
        free as f64 / slots as f64
    };
    let counted = free.min(FREE_SLOTS_COUNTED);
    term(
        "capacity",
        20.0 * ratio + 2.0 * (1.0 + counted as f64).log2(),
        format!(
            "{free} of {slots} slots free{}",
            counted_as(free > counted, counted)
        ),
    )
}

/// +2 × log2(1 + GiB of memory of the serving nodes, at most [`MEMORY_GIB_COUNTED`]).
fn memory_term(c: &OfferContent) -> Term {
    let claimed = gib(c.memory_bytes);
    let counted = claimed.min(MEMORY_GIB_COUNTED);
    term(
        "memory",
        2.0 * (1.0 + counted).log2(),
        format!(
            "{} on serving nodes{}",
            gib_text(c.memory_bytes),
            counted_as(claimed > counted, format_args!("{counted:.0} GiB"))
        ),
    )
}

/// +4 × log2(1 + serving nodes, at most [`NODES_COUNTED`]).
fn nodes_term(c: &OfferContent) -> Term {
    let counted = c.nodes.min(NODES_COUNTED);
    term(
        "nodes",
        4.0 * (1.0 + counted as f64).log2(),
        format!(
            "{} serving, {} clients{}",
            c.nodes,
            c.clients,
            counted_as(c.nodes > counted, format_args!("{counted} serving"))
        ),
    )
}

/// −3 × busy slots per serving node, at most −15.
fn load_term(SlotCounts { slots, free }: SlotCounts, c: &OfferContent) -> Term {
    let busy_per_node = slots.saturating_sub(free) as f64 / c.nodes.max(1) as f64;
    term(
        "load",
        -(3.0 * busy_per_node).min(15.0),
        format!("{busy_per_node:.1} busy slots per serving node"),
    )
}

/// +5 just published, falling to 0 at the offer's expiry.
fn freshness_term(o: &Offer, now: u64) -> Term {
    let life = o.expires_at.saturating_sub(o.created_at).max(1) as f64;
    let left = o.expires_at.saturating_sub(now) as f64;
    let age = now.saturating_sub(o.created_at);
    term(
        "freshness",
        5.0 * (left / life).clamp(0.0, 1.0),
        format!("published {age} s ago"),
    )
}

/// +15 same region.
fn region_term(c: &OfferContent, prefs: &Preferences) -> Term {
    let same_region = prefs.region.is_some() && prefs.region == c.region;
    term(
        "region",
        if same_region { 15.0 } else { 0.0 },
        match (&c.region, same_region) {
            (Some(r), true) => format!("same region ({r})"),
            (Some(r), false) => format!("region {r}"),
            (None, _) => "no region given".into(),
        },
    )
}

/// +10 the mesh this node was in last.
fn sticky_term(o: &Offer, prefs: &Preferences) -> Term {
    let sticky = prefs.last_mesh == Some(o.mesh_id);
    term(
        "sticky",
        if sticky { 10.0 } else { 0.0 },
        if sticky {
            "this node's last mesh".into()
        } else {
            "not the last mesh".into()
        },
    )
}

/// −RTT ms ÷ 10, at most −25; −5 when not measured.
fn rtt_term(probe: Option<Probe>) -> Term {
    match probe {
        Some(Probe::Rtt(d)) => {
            let ms = d.as_secs_f64() * 1000.0;
            term(
                "rtt",
                -(ms / 10.0).min(25.0),
                format!("{ms:.1} ms measured"),
            )
        }
        _ => term("rtt", -5.0, "not measured".into()),
    }
}

/// +40 requested model served; +25 requested or servable model wanted; else +5 per model
/// served (at most 4).
fn model_term(o: &Offer, prefs: &Preferences) -> Term {
    if let Some(m) = &prefs.model {
        if serves(o, m) {
            return term("model", 40.0, format!("serves {m}"));
        }
        return term(
            "model",
            25.0,
            format!("wants {m}, which this node can serve"),
        );
    }
    if !prefs.client {
        if let Some(w) = prefs.servable.iter().find(|s| wants(o, s)) {
            return term(
                "model",
                25.0,
                format!("wants {w}, which this node can serve"),
            );
        }
    }
    let n = o.content.models.len();
    term(
        "model",
        5.0 * (n.min(4) as f64),
        format!("serves {n} model{}", if n == 1 { "" } else { "s" }),
    )
}

/// A made-up offer (tests and `examples/bench_score.rs`): one model with `free` of 4 slots on
/// one node, public, published at t=1000 for 180 s. Its signature fields are empty: it never
/// went through `offer::validate`.
#[doc(hidden)]
pub fn synthetic_offer(mesh: u8, model: &str, free: u32, region: Option<&str>) -> Offer {
    let node = iroh::SecretKey::generate().public();
    let mesh_id = MeshId([mesh; 16]);
    Offer {
        event_id: format!("{mesh:064x}"),
        publisher: nostr::Keys::generate().public_key(),
        mesh_id,
        created_at: 1_000,
        expires_at: 1_180,
        node,
        ticket: Some(Ticket {
            mesh_id,
            secret: None,
            peers: vec![iroh::EndpointAddr::new(node)],
        }),
        content: OfferContent {
            name: format!("mesh {mesh}"),
            public: true,
            models: vec![ServedModel {
                free_slots: free,
                ..offer::sample_model(model)
            }],
            region: region.map(Into::into),
            memory_bytes: 16 << 30,
            node: node.to_string(),
            ..offer::sample_content(model)
        },
    }
}

#[cfg(test)]
#[path = "score_tests.rs"]
pub(crate) mod tests;
