//! Where a request for a model goes: this node's own generator, or another node of the mesh;
//! and what this node serves, as the mesh announces it.

use std::sync::Arc;

use super::generate::{Generate, LocalSlot};
use crate::mesh::{Mesh, ModelOffer, Serving};

/// What the slot serves now, as the mesh announces it (every model with its free slots; the
/// load summed over them). The one place a node's role is decided: it hosts when the slot is
/// filled.
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
    serving
}

/// Where a request for `model` goes.
pub enum Target<'a> {
    /// This node serves it.
    Local(Arc<dyn Generate>),
    /// Another node might: forward it into the mesh.
    Mesh(&'a Mesh),
    /// No mesh and not served here: 404.
    Nowhere,
}

/// Local first (the engine serving `model`, no network hop), else the mesh, else nowhere. Pure.
pub fn choose<'a>(local: &LocalSlot, mesh: Option<&'a Mesh>, model: &str) -> Target<'a> {
    match (local.find(model), mesh) {
        (Some((g, _)), _) => Target::Local(g.clone()),
        (None, Some(mesh)) => Target::Mesh(mesh),
        (None, None) => Target::Nowhere,
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
    fn an_empty_slot_is_a_client_a_filled_one_a_host() {
        let slot = LocalSlot::default();
        assert_eq!(serving(&slot).role(), crate::mesh::Role::Client);
        slot.set(Arc::new(Scripted::new("m"))).ok().unwrap();
        let s = serving(&slot);
        assert_eq!(s.role(), crate::mesh::Role::Host);
        assert_eq!((s.models[0].slots, s.models[0].ctx), (2, 256));
    }
}
