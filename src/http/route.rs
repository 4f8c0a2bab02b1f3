//! Where a request for a model goes: this node's own generator, or another node of the mesh.
//!
//! The HTTP layer never holds llama.cpp directly: it talks to [`Generate`], which the engine
//! implements and which tests replace with [`super::fake::Scripted`], so validation, SSE,
//! forwarding and error tests run without loading a model.

use std::sync::{Arc, OnceLock};

use crate::engine::{
    ChatMessage, Engine, EngineError, EventStream, GenerateRequest, ModelInfo, StatsSnapshot,
};
use crate::mesh::{Mesh, ModelOffer, Serving};

/// Something that generates text for one model.
pub trait Generate: Send + Sync + 'static {
    /// Name, context and slots of the model served.
    fn info(&self) -> &ModelInfo;
    fn stats(&self) -> StatsSnapshot;
    /// Applies the model's chat template and tokenizes. CPU work: call off the async workers.
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<i32>, EngineError>;
    /// Tokenizes a plain prompt. CPU work: call off the async workers.
    fn tokenize(&self, text: &str) -> Vec<i32>;
    /// Queues a request; dropping the stream cancels it.
    fn submit(&self, req: GenerateRequest) -> Result<EventStream, EngineError>;
    /// Ends running and queued requests with an error event.
    fn shutdown(&self);
    fn is_shutting_down(&self) -> bool;
}

impl Generate for Engine {
    fn info(&self) -> &ModelInfo {
        Engine::info(self)
    }
    fn stats(&self) -> StatsSnapshot {
        Engine::stats(self)
    }
    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<i32>, EngineError> {
        let text = self.apply_chat_template(messages)?;
        Ok(Engine::tokenize(self, &text))
    }
    fn tokenize(&self, text: &str) -> Vec<i32> {
        Engine::tokenize(self, text)
    }
    fn submit(&self, req: GenerateRequest) -> Result<EventStream, EngineError> {
        Engine::submit(self, req)
    }
    fn shutdown(&self) {
        Engine::shutdown(self)
    }
    fn is_shutting_down(&self) -> bool {
        Engine::is_shutting_down(self)
    }
}

/// The generator this node serves, which may arrive after the node has started (`mesh --auto`
/// joins a mesh first, then downloads and loads its model). Empty on a client. Clones share it.
#[derive(Clone, Default)]
pub struct LocalSlot(Arc<OnceLock<Arc<dyn Generate>>>);

impl LocalSlot {
    pub fn get(&self) -> Option<&Arc<dyn Generate>> {
        self.0.get()
    }

    /// Fills the slot; a slot is filled at most once (the generator is handed back otherwise).
    pub fn set(&self, local: Arc<dyn Generate>) -> Result<(), Arc<dyn Generate>> {
        self.0.set(local)
    }

    /// A slot holding `local` from the start.
    pub fn with(local: Arc<dyn Generate>) -> Self {
        let slot = Self::default();
        let _ = slot.set(local);
        slot
    }
}

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
        queue_depth: stats.queue_len as u32,
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
