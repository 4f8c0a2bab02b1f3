//! The engine: llama.cpp in-process, serving one GGUF model with continuous batching.
//!
//! [`Engine::start`] loads the model and starts the scheduler thread; the returned handle is
//! cheap to clone and is what the HTTP layer talks to. Request flow:
//! `http::openai::validate` (checks and normalises) → [`Engine::submit`] (bounded queue) →
//! `scheduler` (batches, samples) → [`Event`]s back to the caller. Embeddings go to a second
//! context of the same model, created on first use (`embed`). A node serving several models
//! runs one engine per model.
//!
//! A domain module: it imports only `util` and `catalog` (no HTTP, no mesh, no clap, no printing).

mod batch;
mod config;
pub mod embed;
pub mod grammar;
mod logprobs;
mod model;
mod prefix;
pub mod request;
pub mod rpc;
mod sampling;
mod scheduler;
pub mod stats;
pub mod text;
pub mod tools;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use tokio::sync::mpsc;

pub use config::{EngineConfig, ModelInfo, Placement, DEFAULT_CTX};
pub use embed::{EmbedInput, EmbedReply, Embeddings};
pub use model::ChatMessage;
pub use request::{
    Event, EventStream, FinishReason, GenerateRequest, SamplingParams, TokenLogprob, TopLogprob,
    Usage, MAX_CHOICES, MAX_TOP_LOGPROBS,
};
pub use stats::{Stats, StatsSnapshot};

use embed::Embedder;
use model::Model;
use scheduler::{Inbound, Job, Scheduler};

/// Most tokens decoded in one step (prompt chunks plus one token per generating sequence).
const N_BATCH: u32 = 512;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load model: {0}")]
    Load(String),
    #[error("cannot create llama.cpp context: {0}")]
    Context(String),
    #[error("{0}")]
    BadInput(String),
    #[error("prompt has {prompt} tokens but the context holds {ctx} per request")]
    PromptTooLong { prompt: usize, ctx: u32 },
    #[error(
        "server overloaded: all {parallel} slots busy and {queue} requests queued; retry later"
    )]
    Overloaded { parallel: u32, queue: usize },
    #[error("server is shutting down")]
    ShuttingDown,
}

/// State shared by the handle and the scheduler thread.
pub(crate) struct Shared {
    parallel: u32,
    shutdown: AtomicBool,
    stats: Stats,
}

/// Handle to a running engine. Clone freely.
#[derive(Clone)]
pub struct Engine {
    model: Arc<Model>,
    info: Arc<ModelInfo>,
    jobs: SyncSender<Inbound>,
    shared: Arc<Shared>,
    embedder: Arc<Embedder>,
    placement: Placement,
}

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let b =
        LlamaBackend::init().map_err(|e| EngineError::Load(format!("llama.cpp backend: {e}")))?;
    Ok(BACKEND.get_or_init(|| b))
}

impl Engine {
    /// Loads the model and starts the scheduler thread. Blocking: call from `spawn_blocking`.
    pub fn start(cfg: EngineConfig) -> Result<Self, EngineError> {
        let backend = backend()?;
        // Split serving: the RPC servers' devices take the last `gpu_layers` layers.
        let devices = rpc::add_servers(&cfg.rpc)?;
        let model = Arc::new(Model::load(
            backend,
            &cfg.model_path,
            cfg.gpu_layers,
            &devices,
        )?);
        let mut info = config::resolve(
            &cfg,
            model.n_ctx_train(),
            num_cpus::get_physical(),
            crate::util::time::unix_secs(),
        )?;
        info.embedding = embed::is_embedding_model(&model.inner);
        let placement = config::placement(
            crate::catalog::bandwidth::discrete_gpu(),
            cfg.gpu_layers,
            model.inner.n_layer(),
            !cfg.rpc.is_empty(),
        );
        let shared = Arc::new(Shared {
            parallel: info.parallel,
            shutdown: AtomicBool::new(false),
            stats: Stats::default(),
        });
        // A queue of 0 would make every request wait for a rendezvous: keep at least one place.
        let (jobs, inbox) = sync_channel::<Inbound>(info.queue_capacity.max(1));
        spawn_scheduler(
            backend,
            Arc::clone(&model),
            &info,
            cfg.prefix_cache,
            Arc::clone(&shared),
            inbox,
        )?;
        tracing::info!(
            model = %info.name,
            ctx = info.ctx,
            parallel = info.parallel,
            threads = info.threads,
            "model loaded"
        );
        let embedder = Arc::new(Embedder::new(
            backend,
            Arc::clone(&model),
            info.ctx,
            info.threads,
        ));
        Ok(Self {
            model,
            info: Arc::new(info),
            jobs,
            shared,
            embedder,
            placement,
        })
    }

    /// Where the model's layers run.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The best single-stream decode rate measured so far, tokens per second (see
    /// [`Stats::single_stream`]).
    pub fn single_stream(&self) -> tokio::sync::watch::Receiver<Option<f64>> {
        self.shared.stats.single_stream()
    }

    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        self.model.apply_chat_template(messages)
    }

    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        self.model.tokenize(text)
    }

    /// The prompt of a request with tools (or a history with tool calls): see [`tools::plan`].
    pub fn tool_prompt(
        &self,
        turns: &[tools::Turn],
        tools: &tools::Tools,
    ) -> Result<tools::ToolPrompt, EngineError> {
        self.model.tool_prompt(turns, tools)
    }

    /// Queues a request of one choice (`req.n` must be at most 1; see [`Self::submit_choices`]).
    pub fn submit(&self, req: GenerateRequest) -> Result<EventStream, EngineError> {
        if req.n > 1 {
            return Err(EngineError::BadInput(
                "several choices need submit_choices".into(),
            ));
        }
        let mut streams = self.submit_choices(req)?;
        Ok(streams.remove(0))
    }

    /// Queues a request of `req.n` choices (at least one), one event stream per choice, in
    /// choice order. Fails at once when the prompt cannot fit, `n` exceeds the slots, the
    /// grammar does not parse, the queue is full, or the engine is shutting down. Dropping a
    /// stream cancels its choice.
    pub fn submit_choices(&self, req: GenerateRequest) -> Result<Vec<EventStream>, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        if req.prompt.is_empty() {
            return Err(EngineError::BadInput("prompt is empty".into()));
        }
        if req.prompt.len() >= self.info.ctx as usize {
            return Err(EngineError::PromptTooLong {
                prompt: req.prompt.len(),
                ctx: self.info.ctx,
            });
        }
        if req
            .grammar
            .as_ref()
            .is_some_and(|g| g.len() > grammar::MAX_GRAMMAR_BYTES)
        {
            return Err(EngineError::BadInput(format!(
                "the grammar is over {} bytes",
                grammar::MAX_GRAMMAR_BYTES
            )));
        }
        let n = req.n.max(1);
        if n > self.info.parallel.min(MAX_CHOICES) {
            return Err(EngineError::BadInput(format!(
                "'n' is {n} but this node generates at most {} choices at once",
                self.info.parallel.min(MAX_CHOICES)
            )));
        }
        if req.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(EngineError::BadInput(format!(
                "'top_logprobs' must be at most {MAX_TOP_LOGPROBS}"
            )));
        }
        let mut choices = Vec::with_capacity(n as usize);
        let mut streams = Vec::with_capacity(n as usize);
        for choice in 0..n {
            // Parsed here, on the caller's thread: a grammar llama.cpp refuses is a 400, and
            // the engine thread never meets one.
            let grammar = match &req.grammar {
                Some(g) => {
                    Some(sampling::grammar(&self.model.inner, g).map_err(EngineError::BadInput)?)
                }
                None => None,
            };
            let sampler = sampling::build(
                &req.sampling,
                choice,
                self.model.inner.n_vocab(),
                &self.model.eog_tokens,
                grammar,
            );
            let (tx, rx) = mpsc::unbounded_channel();
            choices.push((tx, sampler));
            streams.push(rx);
        }
        // Count before sending so the scheduler's decrement can never run first.
        self.shared.stats.queue_len.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(Inbound::Job(Job { req, choices })) {
            Ok(()) => Ok(streams),
            Err(e) => {
                self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => EngineError::Overloaded {
                        parallel: self.info.parallel,
                        queue: self.info.queue_capacity,
                    },
                    TrySendError::Disconnected(_) => EngineError::ShuttingDown,
                })
            }
        }
    }

    /// Embeds `inputs` on the model's embedding context (created on first use: see `embed`).
    pub fn embed(&self, inputs: Vec<EmbedInput>) -> Result<EmbedReply, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        self.embedder.submit(inputs)
    }

    /// Length of the vectors [`Engine::embed`] returns.
    pub fn embedding_dims(&self) -> usize {
        self.embedder.dims()
    }

    /// Ends every running and queued request with an error event and stops the scheduler.
    pub fn shutdown(&self) {
        self.embedder.shutdown();
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake an idle scheduler blocked on the queue. When the queue is full the scheduler is
        // not blocked and sees the flag before its next step; when it is gone, nothing to wake.
        let _ = self.jobs.try_send(Inbound::Wake);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }
}

/// llama.cpp context parameters: `parallel` sequences of `ctx` tokens each, every one in its own
/// KV stream (see docs/DESIGN.md "The scheduler").
fn context_params(info: &ModelInfo) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(info.ctx * info.parallel))
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_seq_max(info.parallel)
        .with_kv_unified(false)
        .with_n_threads(info.threads as i32)
        .with_n_threads_batch(info.threads as i32)
}

/// Starts the engine thread, which creates the llama.cpp context and runs the scheduler on it.
/// Returns once the context exists, or with the error that prevented it.
fn spawn_scheduler(
    backend: &'static LlamaBackend,
    model: Arc<Model>,
    info: &ModelInfo,
    prefix_cache: bool,
    shared: Arc<Shared>,
    inbox: Receiver<Inbound>,
) -> Result<(), EngineError> {
    let params = context_params(info);
    let ctx = info.ctx;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("mesh-engine".into())
        .spawn(move || {
            let ctx_llama = match model.inner.new_context(backend, params) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(EngineError::Context(e.to_string())));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            Scheduler::new(
                &model,
                ctx_llama,
                N_BATCH as usize,
                ctx,
                prefix_cache,
                shared,
            )
            .run(inbox);
            tracing::debug!("engine thread stopped");
        })
        .map_err(|e| EngineError::Context(format!("cannot start engine thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| EngineError::Context("engine thread died while starting".into()))?
}
