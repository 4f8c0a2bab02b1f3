//! After joining: does the mesh look like its offer said? Pure. [`Observed`] sums the members
//! gossip shows the way a publisher sums them (`publish::summarize`), and
//! [`offer_contradicted`] compares: an offer may be a little out of date (members come and go
//! between two publications), so a claim counts as a lie only beyond a tolerance for honest
//! drift: more than [`DRIFT_FACTOR`] × what gossip shows plus a slack, or more than half of
//! the models claimed served by no member. `mesh --auto` checks the mesh it joined this way
//! (`node::auto`, `VERIFY_AFTER` joining) and distrusts a liar (`untrusted`).
//!
//! Gossip is witnessed over the whole stay ([`Witness`]): a member that has left since counts,
//! so an honest mesh that empties before the check is not taken for a liar; and a mesh where
//! no member ever showed up is not judged (the empty-mesh rule of `--auto` deals with it).

use std::collections::BTreeMap;

use super::offer::{OfferContent, ServedModel};
use super::publish::{summarize, NodeSummary};
use crate::mesh::PeerView;

/// A claimed figure is a lie when it is more than this many times what gossip shows, plus a
/// slack: an honest offer may predate members that have left since.
pub const DRIFT_FACTOR: u64 = 2;
/// Serving nodes an honest offer may count that gossip no longer shows (beyond the factor).
pub const NODE_SLACK: u64 = 2;
/// Slots likewise: four nodes of the default four slots.
pub const SLOT_SLACK: u64 = 16;
/// Memory likewise: 64 GiB.
pub const MEMORY_SLACK: u64 = 64 << 30;
/// Most members a [`Witness`] remembers (more than an offer may claim).
pub const MAX_WITNESSED: usize = 4 * super::offer::MAX_OFFER_NODES as usize;

/// What gossip shows of a mesh, summed as an offer sums it (this node not counted: the offer
/// was published before it joined).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Members of any role.
    pub members: usize,
    pub nodes: u32,
    pub models: Vec<ServedModel>,
    pub memory_bytes: u64,
}

impl Observed {
    pub fn of_peers(peers: &[PeerView]) -> Self {
        let nodes: Vec<NodeSummary> = peers
            .iter()
            .map(|p| NodeSummary {
                role: p.role,
                memory_bytes: p.memory_bytes,
                models: p.models.clone(),
            })
            .collect();
        let (models, nodes, _clients, memory_bytes) = summarize(&nodes);
        Self {
            members: peers.len(),
            nodes,
            models,
            memory_bytes,
        }
    }
}

/// Every member gossip has shown since joining, as last seen (departed ones too), bounded.
#[derive(Debug, Clone, Default)]
pub struct Witness {
    members: BTreeMap<String, PeerView>,
}

impl Witness {
    /// Notes the members gossip shows now.
    pub fn note(&mut self, peers: Vec<PeerView>) {
        for p in peers {
            if self.members.len() < MAX_WITNESSED || self.members.contains_key(&p.node_id) {
                self.members.insert(p.node_id.clone(), p);
            }
        }
    }

    pub fn observed(&self) -> Observed {
        Observed::of_peers(&self.members.values().cloned().collect::<Vec<_>>())
    }
}

/// Whether `claimed` is more than the tolerance above `seen`.
fn beyond(claimed: u64, seen: u64, slack: u64) -> bool {
    claimed > seen.saturating_mul(DRIFT_FACTOR).saturating_add(slack)
}

/// Why gossip contradicts the offer (serving nodes, models, slots, memory), or `None` when it
/// agrees within the tolerance for honest drift. Fewer than claimed is what drift looks like;
/// more than claimed (the mesh grew) never contradicts.
pub fn offer_contradicted(offer: &OfferContent, seen: &Observed) -> Option<String> {
    if seen.members == 0 {
        return None;
    }
    if beyond(offer.nodes as u64, seen.nodes as u64, NODE_SLACK) {
        return Some(format!(
            "the offer claims {} serving nodes, gossip shows {}",
            offer.nodes, seen.nodes
        ));
    }
    let missing: Vec<&str> = offer
        .models
        .iter()
        .filter(|m| !seen.models.iter().any(|s| s.name == m.name))
        .map(|m| m.name.as_str())
        .collect();
    if missing.len() * 2 > offer.models.len() {
        let names: Vec<String> = missing
            .iter()
            .take(3)
            .map(|n| format!("{:?}", n.chars().take(40).collect::<String>()))
            .collect();
        return Some(format!(
            "the offer claims {} model(s) that no member serves: {}{}",
            missing.len(),
            names.join(", "),
            if missing.len() > 3 { ", …" } else { "" }
        ));
    }
    let slots = |models: &[ServedModel]| models.iter().map(|m| m.slots as u64).sum::<u64>();
    let (claimed, shown) = (slots(&offer.models), slots(&seen.models));
    if beyond(claimed, shown, SLOT_SLACK) {
        return Some(format!(
            "the offer claims {claimed} slots, gossip shows {shown}"
        ));
    }
    if beyond(offer.memory_bytes, seen.memory_bytes, MEMORY_SLACK) {
        return Some(format!(
            "the offer claims {} GiB on serving nodes, gossip shows {} GiB",
            offer.memory_bytes >> 30,
            seen.memory_bytes >> 30
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::offer::{sample_content, sample_model};
    use crate::mesh::{ConnType, ModelOffer, Role};

    /// What gossip shows of `n` nodes each serving "m" with 4 slots and 8 GiB.
    fn seen(n: u32) -> Observed {
        Observed {
            members: n as usize,
            nodes: n,
            models: if n == 0 {
                Vec::new()
            } else {
                vec![ServedModel {
                    hosts: n,
                    slots: 4 * n,
                    free_slots: 4 * n,
                    ..sample_model("m")
                }]
            },
            memory_bytes: (8 << 30) * n as u64,
        }
    }

    /// An honest offer for the mesh [`seen`] describes.
    fn honest(n: u32) -> OfferContent {
        let s = seen(n);
        OfferContent {
            nodes: s.nodes,
            models: s.models,
            memory_bytes: s.memory_bytes,
            ..sample_content("m")
        }
    }

    #[test]
    fn an_honest_offer_agrees_and_so_does_one_a_little_out_of_date() {
        assert_eq!(offer_contradicted(&honest(1), &seen(1)), None);
        assert_eq!(offer_contradicted(&honest(5), &seen(5)), None);
        // Two of three nodes left since the offer was published; the mesh grew.
        assert_eq!(offer_contradicted(&honest(3), &seen(1)), None);
        assert_eq!(offer_contradicted(&honest(1), &seen(9)), None);
        // A mesh of clients only, as offered.
        assert_eq!(offer_contradicted(&honest(0), &seen(0)), None);
    }

    #[test]
    fn inflated_serving_nodes_are_a_lie() {
        let mut c = honest(1);
        c.nodes = 5;
        let why = offer_contradicted(&c, &seen(1)).unwrap();
        assert_eq!(why, "the offer claims 5 serving nodes, gossip shows 1");
        c.nodes = 4;
        assert_eq!(offer_contradicted(&c, &seen(1)), None, "within the drift");
        c.nodes = u32::MAX;
        let clients_only = Observed {
            members: 3,
            ..seen(0)
        };
        assert!(offer_contradicted(&c, &clients_only).is_some());
    }

    #[test]
    fn models_no_member_serves_are_a_lie_beyond_half() {
        let mut c = honest(1);
        c.models[0].name = "gpt-9".into();
        let why = offer_contradicted(&c, &seen(1)).unwrap();
        assert_eq!(
            why,
            "the offer claims 1 model(s) that no member serves: \"gpt-9\""
        );
        // One of two models gone (its only host left): drift.
        let mut c = honest(2);
        c.models.push(sample_model("gone"));
        assert_eq!(offer_contradicted(&c, &seen(2)), None);
        // Two of three: a lie.
        c.models.push(sample_model("fake"));
        assert!(offer_contradicted(&c, &seen(2))
            .unwrap()
            .contains("2 model(s)"));
    }

    #[test]
    fn inflated_slots_are_a_lie() {
        let mut c = honest(1);
        c.models[0].slots = 4 * 2 + SLOT_SLACK as u32 + 1;
        let why = offer_contradicted(&c, &seen(1)).unwrap();
        assert_eq!(why, "the offer claims 25 slots, gossip shows 4");
        c.models[0].slots -= 1;
        assert_eq!(offer_contradicted(&c, &seen(1)), None);
    }

    #[test]
    fn inflated_memory_is_a_lie() {
        let mut c = honest(1);
        c.memory_bytes = 1 << 42;
        let why = offer_contradicted(&c, &seen(1)).unwrap();
        assert_eq!(
            why,
            "the offer claims 4096 GiB on serving nodes, gossip shows 8 GiB"
        );
        c.memory_bytes = 2 * (8 << 30) + MEMORY_SLACK;
        assert_eq!(offer_contradicted(&c, &seen(1)), None);
    }

    #[test]
    fn a_mesh_where_gossip_showed_no_member_is_not_judged() {
        let mut c = honest(1);
        c.nodes = 64;
        assert_eq!(offer_contradicted(&c, &seen(0)), None);
        assert_eq!(offer_contradicted(&c, &Witness::default().observed()), None);
    }

    fn peer(id: &str, role: Role, models: Vec<ModelOffer>) -> PeerView {
        PeerView {
            node_id: id.into(),
            name: String::new(),
            role,
            region: None,
            models,
            connection: ConnType::Direct,
            rtt_ms: None,
            trying_direct: false,
            queue_depth: 0,
            tokens_per_second: 0.0,
            memory_bytes: 8 << 30,
            last_seen_ms: 0,
            shares: vec![],
            split: Default::default(),
        }
    }

    #[test]
    fn observed_sums_peers_as_a_publisher_would_and_skips_clients() {
        let m = ModelOffer {
            name: "m".into(),
            free_slots: 3,
            slots: 4,
            ctx: 4096,
        };
        let o = Observed::of_peers(&[
            peer("a", Role::Host, vec![m.clone()]),
            peer("b", Role::Host, vec![m]),
            peer("c", Role::Client, Vec::new()),
        ]);
        assert_eq!((o.members, o.nodes, o.memory_bytes), (3, 2, 16 << 30));
        assert_eq!((o.models[0].hosts, o.models[0].slots), (2, 8));
    }

    #[test]
    fn a_member_that_left_before_the_check_still_counts_once() {
        let m = ModelOffer {
            name: "m".into(),
            free_slots: 4,
            slots: 4,
            ctx: 4096,
        };
        let mut w = Witness::default();
        w.note(vec![peer("a", Role::Host, vec![m.clone()])]);
        // "a" left; "b" came; "a" seen again later is still one member.
        w.note(vec![peer("b", Role::Host, vec![m.clone()])]);
        w.note(vec![peer("a", Role::Host, vec![m])]);
        let o = w.observed();
        assert_eq!((o.members, o.nodes, o.models[0].slots), (2, 2, 8));
        let honest = OfferContent {
            nodes: 2,
            models: o.models.clone(),
            memory_bytes: o.memory_bytes,
            ..sample_content("m")
        };
        assert_eq!(offer_contradicted(&honest, &o), None);
    }

    #[test]
    fn a_witness_remembers_at_most_max_witnessed_members() {
        let mut w = Witness::default();
        let many = (0..MAX_WITNESSED + 10)
            .map(|i| peer(&i.to_string(), Role::Client, Vec::new()))
            .collect();
        w.note(many);
        assert_eq!(w.observed().members, MAX_WITNESSED);
    }
}
