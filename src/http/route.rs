//! Where a request for a model goes: this node's own generator, or another node of the mesh;
//! and what this node serves, as the mesh announces it.

use std::sync::Arc;

use super::generate::{Generate, LocalSlot};
use crate::mesh::{Mesh, ModelOffer, Serving};

/// What the slot serves now, as the mesh announces it (models, free slots, load). The one
/// place a node's role is decided: it hosts when the slot is filled.
pub fn serving(local: &LocalSlot) -> Serving {
    let Some(g) = local.get() else {
        return Serving::default();
    };
    let (info, stats) = (g.info(), g.stats());
    Serving {
        models: vec![ModelOffer {
            name: info.name.clone(),
            free_slots: info.parallel.saturating_sub(stats.slots_busy as u32),
            slots: info.parallel,
            ctx: info.ctx,
        }],
        queue_depth: (stats.queue_len + local.slots().map_or(0, |s| s.waiting())) as u32,
        tokens_per_second: stats.tokens_per_second_last_minute as f32,
    }
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

/// Local first (no network hop), else the mesh, else nowhere. Pure.
pub fn choose<'a>(local: &LocalSlot, mesh: Option<&'a Mesh>, model: &str) -> Target<'a> {
    match (local.get().filter(|g| g.info().name == model), mesh) {
        (Some(g), _) => Target::Local(g.clone()),
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
    fn an_empty_slot_is_a_client_a_filled_one_a_host() {
        let slot = LocalSlot::default();
        assert_eq!(serving(&slot).role(), crate::mesh::Role::Client);
        slot.set(Arc::new(Scripted::new("m"))).ok().unwrap();
        let s = serving(&slot);
        assert_eq!(s.role(), crate::mesh::Role::Host);
        assert_eq!((s.models[0].slots, s.models[0].ctx), (2, 256));
    }
}
