//! What an offer says about the mesh: the members' announcements summed into the offer's
//! figures ([`summarize`], pure), the offer content for a running mesh ([`content`]), and the
//! part of it whose change makes a published offer out of date ([`Shape`]).
//! Imports only `offer` and the mesh's announcement types; no IO, no timers.

use crate::discovery::offer::{self, OfferContent, ServedModel};
use crate::mesh::Mesh;
use crate::mesh::{ModelOffer, Role};

use super::PublishSettings;

/// One node as the offer counts it.
#[derive(Debug, Clone)]
pub struct NodeSummary {
    pub role: Role,
    pub memory_bytes: u64,
    pub models: Vec<ModelOffer>,
}

/// Sums nodes into the offer's figures: models (hosts, slots, free slots, smallest context),
/// serving nodes, clients, and the serving nodes' memory. Pure. The figures come from peers'
/// announcements, so every sum saturates: no member can overflow (or panic) the publisher.
/// Each node counts within the offer's plausibility caps (slots and memory per node, serving
/// nodes in all), so no member can make the mesh's own offer implausible.
pub fn summarize(nodes: &[NodeSummary]) -> (Vec<ServedModel>, u32, u32, u64) {
    let mut models: Vec<ServedModel> = Vec::new();
    let (mut hosts, mut clients, mut memory) = (0u32, 0u32, 0u64);
    for n in nodes {
        if n.role == Role::Client {
            clients = clients.saturating_add(1);
            continue;
        }
        if hosts >= offer::MAX_OFFER_NODES {
            continue;
        }
        hosts += 1;
        memory = memory.saturating_add(n.memory_bytes.min(offer::MAX_NODE_MEMORY));
        for m in &n.models {
            let slots = m.slots.min(offer::MAX_SLOTS_PER_NODE);
            let free = m.free_slots.min(slots);
            match models.iter_mut().find(|s| s.name == m.name) {
                Some(s) => {
                    s.hosts = s.hosts.saturating_add(1);
                    s.slots = s.slots.saturating_add(slots);
                    s.free_slots = s.free_slots.saturating_add(free);
                    s.ctx = s.ctx.min(m.ctx);
                }
                None => models.push(ServedModel {
                    name: m.name.clone(),
                    ctx: m.ctx,
                    quant: offer::quant_from_name(&m.name),
                    hosts: 1,
                    slots,
                    free_slots: free,
                }),
            }
        }
    }
    models.truncate(offer::MAX_MODELS);
    models.sort_by(|a, b| a.name.cmp(&b.name));
    (models, hosts, clients, memory)
}

/// The offer content for `mesh` now (binding filled in when signed).
pub fn content(mesh: &Mesh, settings: &PublishSettings) -> OfferContent {
    let own = mesh.own_announcement();
    let mut nodes = vec![NodeSummary {
        role: own.role,
        memory_bytes: own.memory_bytes,
        models: own.models,
    }];
    nodes.extend(mesh.peers().into_iter().map(|p| NodeSummary {
        role: p.role,
        memory_bytes: p.memory_bytes,
        models: p.models,
    }));
    let (models, hosts, clients, memory_bytes) = summarize(&nodes);
    let public = mesh.is_public();
    OfferContent {
        schema: offer::SCHEMA.into(),
        name: settings.name.clone(),
        public,
        models,
        wanted: settings.wanted.clone(),
        region: settings.region.clone(),
        memory_bytes,
        nodes: hosts,
        clients,
        max_clients: settings.max_clients,
        ticket: public.then(|| mesh.ticket().encode()),
        version: env!("CARGO_PKG_VERSION").into(),
        node: String::new(),
        binding: String::new(),
    }
}

/// What makes a published offer out of date: the models served (and by how many nodes), the
/// serving nodes, the clients. Load (free slots) and memory change too often to count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub models: Vec<(String, u32)>,
    pub nodes: u32,
    pub clients: u32,
    /// The ticket: it changes when this node learns its relay or public address.
    pub ticket: Option<String>,
}

impl Shape {
    pub fn of(c: &OfferContent) -> Self {
        Self {
            models: c.models.iter().map(|m| (m.name.clone(), m.hosts)).collect(),
            nodes: c.nodes,
            clients: c.clients,
            ticket: c.ticket.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, slots: u32, free_slots: u32) -> ModelOffer {
        ModelOffer {
            name: name.into(),
            ctx: 4096,
            slots,
            free_slots,
        }
    }

    fn host(memory_bytes: u64, models: Vec<ModelOffer>) -> NodeSummary {
        NodeSummary {
            role: Role::Host,
            memory_bytes,
            models,
        }
    }

    fn client() -> NodeSummary {
        NodeSummary {
            role: Role::Client,
            memory_bytes: 1 << 40,
            models: Vec::new(),
        }
    }

    #[test]
    fn hosts_of_one_model_are_summed_and_clients_counted_apart() {
        let nodes = [
            host(8 << 30, vec![model("b-Q4_K_M", 4, 1)]),
            host(
                16 << 30,
                vec![
                    ModelOffer {
                        ctx: 2048,
                        ..model("b-Q4_K_M", 2, 2)
                    },
                    model("a", 1, 1),
                ],
            ),
            client(),
        ];
        let (models, hosts, clients, memory) = summarize(&nodes);
        assert_eq!((hosts, clients, memory), (2, 1, 24 << 30));
        let names: Vec<_> = models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b-Q4_K_M"], "sorted by name");
        let b = &models[1];
        assert_eq!((b.hosts, b.slots, b.free_slots, b.ctx), (2, 6, 3, 2048));
        assert_eq!(b.quant.as_deref(), Some("Q4_K_M"));
    }

    #[test]
    fn more_free_slots_than_slots_count_as_all_free() {
        let (models, ..) = summarize(&[host(0, vec![model("m", 2, 9)])]);
        assert_eq!((models[0].slots, models[0].free_slots), (2, 2));
    }

    #[test]
    fn huge_figures_from_peers_saturate_instead_of_overflowing() {
        let greedy = || host(u64::MAX, vec![model("m", u32::MAX, u32::MAX)]);
        let (models, hosts, _, memory) = summarize(&[greedy(), greedy(), greedy()]);
        // Each node counts within the offer's caps, so the sums stay far from overflowing.
        assert_eq!(memory, 3 * offer::MAX_NODE_MEMORY);
        assert_eq!(hosts, 3);
        assert_eq!(models[0].slots, 3 * offer::MAX_SLOTS_PER_NODE);
        assert_eq!(models[0].free_slots, 3 * offer::MAX_SLOTS_PER_NODE);
    }

    #[test]
    fn no_member_can_make_the_meshs_own_offer_implausible() {
        let greedy = || host(u64::MAX, vec![model("m", u32::MAX, u32::MAX)]);
        let many: Vec<_> = (0..offer::MAX_OFFER_NODES + 10).map(|_| greedy()).collect();
        let (models, nodes, clients, memory_bytes) = summarize(&many);
        assert_eq!(nodes, offer::MAX_OFFER_NODES);
        let c = OfferContent {
            models,
            nodes,
            clients,
            memory_bytes,
            ..offer::sample_content("m")
        };
        assert_eq!(offer::check_plausible(&c), Ok(()));
    }

    #[test]
    fn one_node_serving_several_models_makes_a_plausible_offer_listing_each() {
        let full = offer::MAX_SLOTS_PER_NODE;
        let nodes = [host(
            8 << 30,
            vec![model("a", full, full), model("b", full, 0)],
        )];
        let (models, nodes, clients, memory_bytes) = summarize(&nodes);
        let listed: Vec<_> = models.iter().map(|m| (m.name.as_str(), m.hosts)).collect();
        assert_eq!(listed, [("a", 1), ("b", 1)]);
        let c = OfferContent {
            models,
            nodes,
            clients,
            memory_bytes,
            ..offer::sample_content("a")
        };
        assert_eq!(offer::check_plausible(&c), Ok(()));
    }

    #[test]
    fn an_offer_lists_at_most_max_models() {
        let many = (0..offer::MAX_MODELS + 5)
            .map(|i| model(&format!("m{i:03}"), 1, 1))
            .collect();
        let (models, ..) = summarize(&[host(0, many)]);
        assert_eq!(models.len(), offer::MAX_MODELS);
    }

    #[test]
    fn shape_ignores_load_but_not_hosts() {
        let mut c = offer::sample_content("m");
        let shape = Shape::of(&c);
        c.models[0].free_slots = 0;
        c.memory_bytes *= 2;
        assert_eq!(Shape::of(&c), shape, "load and memory do not count");
        c.models[0].hosts += 1;
        assert_ne!(Shape::of(&c), shape, "a second host counts");
    }
}
