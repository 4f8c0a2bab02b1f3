//! Where a request for a model goes: this node's own generator, an upstream engine of this node
//! (`--upstream`), or another node of the mesh; and what this node serves, as the mesh
//! announces it.

use std::sync::Arc;

use super::generate::{Generate, LocalSlot};
use super::upstream;
use crate::mesh::{Mesh, ModelOffer, Serving};

/// What the slot and the upstream engines serve now, as the mesh announces it (every model with
/// its free slots; the load summed over them). The one place a node's role is decided: it hosts
/// when it serves a model.
pub fn serving(local: &LocalSlot) -> Serving {
    let mut serving = Serving::default();
    let mut queue = 0usize;
    let mut tokens_per_second = 0.0;
    for (g, slots) in local.all() {
        let (info, stats) = (g.info(), g.stats());
        serving.models.push(ModelOffer {
            name: info.name.clone(),
            free_slots: info.parallel.saturating_sub(stats.slots_busy as u32),
            slots: info.parallel,
            ctx: info.ctx,
        });
        queue = queue.saturating_add(stats.queue_len + slots.waiting());
        tokens_per_second += stats.tokens_per_second_last_minute;
    }
    serving.queue_depth = u32::try_from(queue).unwrap_or(u32::MAX);
    serving.tokens_per_second = tokens_per_second as f32;
    for offer in local.upstreams().offers() {
        if serving.models.iter().all(|m| m.name != offer.name) {
            serving.models.push(offer);
        }
    }
    serving
}

/// Where a request for `model` goes.
pub enum Target<'a> {
    /// This node serves it.
    Local(Arc<dyn Generate>),
    /// An upstream engine of this node serves it.
    Upstream(upstream::Route),
    /// Another node might: forward it into the mesh.
    Mesh(&'a Mesh),
    /// No mesh and not served here: 404.
    Nowhere,
}

/// Local first (the engine serving `model`, no network hop), then an upstream engine of this
/// node, else the mesh, else nowhere.
pub fn choose<'a>(local: &LocalSlot, mesh: Option<&'a Mesh>, model: &str) -> Target<'a> {
    if let Some((g, _)) = local.find(model) {
        return Target::Local(g.clone());
    }
    if let Some(route) = local.upstreams().find(model) {
        return Target::Upstream(route);
    }
    match mesh {
        Some(mesh) => Target::Mesh(mesh),
        None => Target::Nowhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fake::Scripted;
    use crate::http::generate::LocalSlot;

    #[test]
    fn the_local_model_wins_and_other_models_go_nowhere_without_a_mesh() {
        let slot = LocalSlot::default();
        assert!(matches!(choose(&slot, None, "m"), Target::Nowhere));
        slot.set(Arc::new(Scripted::new("m"))).ok().unwrap();
        assert!(matches!(choose(&slot, None, "m"), Target::Local(g) if g.info().name == "m"));
        assert!(matches!(choose(&slot, None, "other"), Target::Nowhere));
        assert!(slot.set(Arc::new(Scripted::new("again"))).is_err());
    }

    #[test]
    fn each_model_of_a_node_is_chosen_by_name_and_announced_with_its_own_slots() {
        let slot = LocalSlot::default();
        let a: Arc<dyn Generate> = Arc::new(Scripted::new("a").capacity(2, 4));
        let b: Arc<dyn Generate> = Arc::new(Scripted::new("b").capacity(3, 4).ctx(1024));
        assert!(slot.set_all(vec![a, b]).is_ok());
        assert!(matches!(choose(&slot, None, "a"), Target::Local(g) if g.info().name == "a"));
        assert!(matches!(choose(&slot, None, "b"), Target::Local(g) if g.info().name == "b"));
        assert!(matches!(choose(&slot, None, "c"), Target::Nowhere));
        assert_eq!(slot.get().map(|g| g.info().name.clone()), Some("a".into()));
        assert_eq!(slot.find("b").map(|(_, s)| s.waiting()), Some(0));
        let s = serving(&slot);
        assert_eq!(s.role(), crate::mesh::Role::Host);
        let models: Vec<_> = s
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.slots, m.ctx))
            .collect();
        assert_eq!(models, vec![("a", 2, 256), ("b", 3, 1024)]);
        assert!(slot.set_all(Vec::new()).is_err());
    }

    #[test]
    fn an_upstreams_models_are_announced_and_routed_to_it_after_the_local_one() {
        let slot = LocalSlot::with(Arc::new(Scripted::new("m")));
        let up = upstream::parse_base("http://127.0.0.1:1").unwrap();
        let i = slot.upstreams().add(up);
        assert!(matches!(choose(&slot, None, "u"), Target::Nowhere));
        slot.upstreams().set_models(i, vec!["m".into(), "u".into()]);
        assert!(matches!(choose(&slot, None, "u"), Target::Upstream(_)));
        assert!(matches!(choose(&slot, None, "m"), Target::Local(_)));
        let names: Vec<String> = serving(&slot).models.into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["m", "u"]);
        let client = LocalSlot::default();
        let i = client
            .upstreams()
            .add(upstream::parse_base("http://127.0.0.1:1").unwrap());
        client.upstreams().set_models(i, vec!["u".into()]);
        assert_eq!(serving(&client).role(), crate::mesh::Role::Host);
        client.upstreams().set_models(i, Vec::new());
        assert_eq!(serving(&client).role(), crate::mesh::Role::Client);
    }

    #[test]
    fn an_empty_slot_is_a_client_a_filled_one_a_host() {
        let slot = LocalSlot::default();
        assert_eq!(serving(&slot).role(), crate::mesh::Role::Client);
        slot.set(Arc::new(Scripted::new("m"))).ok().unwrap();
        let s = serving(&slot);
        assert_eq!(s.role(), crate::mesh::Role::Host);
        assert_eq!((s.models[0].slots, s.models[0].ctx), (2, 256));
    }
}
