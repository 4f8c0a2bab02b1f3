//! What the HTTP layer generates with: the [`Generate`] trait, which the llama.cpp engine
//! implements and which tests replace with [`super::fake::Scripted`] (so validation, SSE,
//! forwarding and error tests run without loading a model), and the node's [`LocalSlot`]
//! (the generator and its [`Slots`]).

use std::sync::{Arc, OnceLock};

use super::slots::Slots;

use crate::engine::{
    ChatMessage, Engine, EngineError, EventStream, GenerateRequest, ModelInfo, StatsSnapshot,
};

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
    /// Queues a request of `req.n` choices (at least one): one stream per choice, in order.
    /// The engine decodes the prompt once for all of them; this default (for stand-ins)
    /// submits each choice on its own.
    fn submit_choices(&self, req: GenerateRequest) -> Result<Vec<EventStream>, EngineError> {
        (0..req.n.max(1))
            .map(|_| {
                self.submit(GenerateRequest {
                    n: 1,
                    ..req.clone()
                })
            })
            .collect()
    }
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
    fn submit_choices(&self, req: GenerateRequest) -> Result<Vec<EventStream>, EngineError> {
        Engine::submit_choices(self, req)
    }
    fn shutdown(&self) {
        Engine::shutdown(self)
    }
    fn is_shutting_down(&self) -> bool {
        Engine::is_shutting_down(self)
    }
}

/// The generator this node serves, which may arrive after the node has started (`mesh --auto`
/// joins a mesh first, then downloads and loads its model), with its fairly shared [`Slots`].
/// Empty on a client. Clones share it.
#[derive(Clone, Default)]
pub struct LocalSlot(Arc<OnceLock<Filled>>);

struct Filled {
    generator: Arc<dyn Generate>,
    slots: Slots,
}

impl LocalSlot {
    pub fn get(&self) -> Option<&Arc<dyn Generate>> {
        self.0.get().map(|f| &f.generator)
    }

    /// The generator's slots, shared between local requests and each peer (see [`Slots`]).
    pub fn slots(&self) -> Option<&Slots> {
        self.0.get().map(|f| &f.slots)
    }

    /// Fills the slot; a slot is filled at most once (the generator is handed back otherwise).
    pub fn set(&self, local: Arc<dyn Generate>) -> Result<(), Arc<dyn Generate>> {
        let info = local.info();
        let slots = Slots::new(info.parallel.max(1), info.queue_capacity.max(1));
        self.0
            .set(Filled {
                generator: local,
                slots,
            })
            .map_err(|f| f.generator)
    }

    /// A slot holding `local` from the start.
    pub fn with(local: Arc<dyn Generate>) -> Self {
        let slot = Self::default();
        let _ = slot.set(local);
        slot
    }
}
