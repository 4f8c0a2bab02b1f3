//! What the HTTP layer generates with: the [`Generate`] trait, which the llama.cpp engine
//! implements and which tests replace with [`super::fake::Scripted`] (so validation, SSE,
//! forwarding and error tests run without loading a model), and the node's [`LocalSlot`]
//! (its generators, one per model served, each with its own [`Slots`]).

use std::sync::{Arc, OnceLock};

use super::slots::Slots;
use super::upstream::Upstreams;

use crate::engine::tools::{Rendered, ToolPrompt, Tools, Turn};
use crate::engine::{
    ChatMessage, EmbedInput, EmbedReply, Engine, EngineError, EventStream, GenerateRequest,
    ModelInfo, StatsSnapshot,
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
    /// The prompt of a request with tools (see `engine::tools::plan`). This default (for
    /// stand-ins, which have no Jinja template) uses the generic format through
    /// [`Self::chat_prompt`]. CPU work: call off the async workers.
    fn tool_prompt(&self, turns: &[Turn], tools: &Tools) -> Result<ToolPrompt, EngineError> {
        let (rendered, grammar, format) = crate::engine::tools::plan(turns, tools, None, "", "")
            .map_err(EngineError::BadInput)?;
        let tokens = match rendered {
            Rendered::Plain(messages) => self.chat_prompt(&messages)?,
            Rendered::Jinja(text) => self.tokenize(&text),
        };
        Ok(ToolPrompt {
            tokens,
            grammar,
            format,
        })
    }
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
    /// Queues inputs to embed (`/v1/embeddings`); one vector per input comes back, in order.
    fn embed(&self, inputs: Vec<EmbedInput>) -> Result<EmbedReply, EngineError> {
        let _ = inputs;
        Err(EngineError::BadInput(format!(
            "model '{}' does not compute embeddings",
            self.info().name
        )))
    }
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
    fn tool_prompt(&self, turns: &[Turn], tools: &Tools) -> Result<ToolPrompt, EngineError> {
        Engine::tool_prompt(self, turns, tools)
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
    fn embed(&self, inputs: Vec<EmbedInput>) -> Result<EmbedReply, EngineError> {
        Engine::embed(self, inputs)
    }
}

/// The generators this node serves, one per model, which may arrive after the node has started
/// (`mesh --auto` joins a mesh first, then downloads and loads its model), each with its fairly
/// shared [`Slots`]; and the upstream engines whose models it serves too (`--upstream`). Empty
/// on a client. Filled once, with every model at once; clones share it. The first model is
/// "the" model where one is shown (the status document's top-level fields).
#[derive(Clone, Default)]
pub struct LocalSlot {
    filled: Arc<OnceLock<Vec<Filled>>>,
    upstreams: Upstreams,
}

struct Filled {
    generator: Arc<dyn Generate>,
    slots: Slots,
}

impl LocalSlot {
    /// The first model's generator.
    pub fn get(&self) -> Option<&Arc<dyn Generate>> {
        self.filled().first().map(|f| &f.generator)
    }

    /// The first model's slots, shared between local requests and each peer (see [`Slots`]).
    pub fn slots(&self) -> Option<&Slots> {
        self.filled().first().map(|f| &f.slots)
    }

    /// Every generator with its slots, in the order given.
    pub fn all(&self) -> impl Iterator<Item = (&Arc<dyn Generate>, &Slots)> {
        self.filled().iter().map(|f| (&f.generator, &f.slots))
    }

    /// The generator serving `model`, with its slots.
    pub fn find(&self, model: &str) -> Option<(&Arc<dyn Generate>, &Slots)> {
        self.all().find(|(g, _)| g.info().name == model)
    }

    fn filled(&self) -> &[Filled] {
        self.filled.get().map_or(&[], Vec::as_slice)
    }

    /// Fills the slot with one generator; a slot is filled at most once (the generator is
    /// handed back otherwise).
    pub fn set(&self, local: Arc<dyn Generate>) -> Result<(), Arc<dyn Generate>> {
        self.set_all(vec![local])
            .map_err(|mut v| v.pop().expect("one given"))
    }

    /// Fills the slot with several generators (their model names must differ: the first one
    /// of a name would hide the others). Handed back when filled already or when `all` is empty.
    pub fn set_all(&self, all: Vec<Arc<dyn Generate>>) -> Result<(), Vec<Arc<dyn Generate>>> {
        if all.is_empty() {
            return Err(all);
        }
        let filled = all
            .into_iter()
            .map(|generator| {
                let info = generator.info();
                let slots = Slots::new(info.parallel.max(1), info.queue_capacity.max(1));
                Filled { generator, slots }
            })
            .collect();
        self.filled
            .set(filled)
            .map_err(|v| v.into_iter().map(|f| f.generator).collect())
    }

    /// The upstream engines this node also serves (`--upstream`).
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// A slot holding `local` from the start.
    pub fn with(local: Arc<dyn Generate>) -> Self {
        let slot = Self::default();
        let _ = slot.set(local);
        slot
    }
}
