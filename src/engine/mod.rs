//! The engine: llama.cpp in-process, serving one GGUF model with continuous batching.
//!
//! [`Engine::start`] loads the model and starts the scheduler thread; the returned handle is
//! cheap to clone and is what the HTTP layer talks to. Request flow:
//! `http::openai::validate` (checks and normalises) → [`Engine::submit`] (bounded queue) →
//! `scheduler` (batches, samples) → [`Event`]s back to the caller.
//!
//! A domain module: it imports only `util` (no HTTP, no mesh, no clap, no printing).

mod model;
pub mod request;
mod sampling;
mod scheduler;
pub mod stats;
pub mod text;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use tokio::sync::mpsc;

pub use model::ChatMessage;
pub use request::{Event, EventStream, FinishReason, GenerateRequest, SamplingParams, Usage};
pub use stats::{Stats, StatsSnapshot};

use crate::util::model_id::model_id_from_file;
use model::Model;
use scheduler::{Job, Scheduler};

/// Context per sequence when neither `--ctx` nor a smaller training context says otherwise.
pub const DEFAULT_CTX: u32 = 4096;
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

/// How to start the engine (`mesh serve` flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// Model id in the API; derived from the file name when absent.
    pub model_name: Option<String>,
    pub parallel: u32,
    /// Context per sequence; default: training context, at most [`DEFAULT_CTX`].
    pub ctx: Option<u32>,
    /// CPU threads; default: physical cores.
    pub threads: Option<u32>,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Layers to offload to a GPU back end (ignored on CPU builds).
    pub gpu_layers: u32,
}

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_name: None,
            parallel: 4,
            ctx: None,
            threads: None,
            queue: 64,
            gpu_layers: u32::MAX,
        }
    }
}

/// What the engine serves, for `/v1/models` and `/api/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    /// Context per sequence.
    pub ctx: u32,
    pub n_ctx_train: u32,
    pub parallel: u32,
    pub threads: u32,
    pub queue_capacity: usize,
    /// Unix time the model was loaded.
    pub created: u64,
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
    jobs: SyncSender<Job>,
    shared: Arc<Shared>,
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
        let model = Arc::new(Model::load(backend, &cfg.model_path, cfg.gpu_layers)?);
        let n_ctx_train = model.n_ctx_train();
        let ctx = cfg
            .ctx
            .unwrap_or_else(|| DEFAULT_CTX.min(n_ctx_train.max(256)));
        if ctx < 16 {
            return Err(EngineError::Context(format!(
                "context of {ctx} tokens is too small"
            )));
        }
        let threads = cfg
            .threads
            .unwrap_or_else(|| num_cpus::get_physical().max(1) as u32);
        let parallel = cfg.parallel.max(1);
        let info = ModelInfo {
            name: cfg
                .model_name
                .clone()
                .unwrap_or_else(|| model_id_from_file(&cfg.model_path.to_string_lossy())),
            path: cfg.model_path.clone(),
            ctx,
            n_ctx_train,
            parallel,
            threads,
            queue_capacity: cfg.queue,
            created: crate::util::time::unix_secs(),
        };
        let shared = Arc::new(Shared {
            parallel,
            shutdown: AtomicBool::new(false),
            stats: Stats::default(),
        });
        // A queue of 0 would make every request wait for a rendezvous: keep at least one place.
        let (jobs, rx) = sync_channel::<Job>(cfg.queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_model = Arc::clone(&model);
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("mesh-engine".into())
            .spawn(move || {
                let params = LlamaContextParams::default()
                    .with_n_ctx(NonZeroU32::new(ctx * parallel))
                    .with_n_batch(N_BATCH)
                    .with_n_ubatch(N_BATCH)
                    .with_n_seq_max(parallel)
                    .with_kv_unified(false)
                    .with_n_threads(threads as i32)
                    .with_n_threads_batch(threads as i32);
                let ctx_llama = match thread_model.inner.new_context(backend, params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::Context(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                Scheduler::new(
                    &thread_model,
                    ctx_llama,
                    N_BATCH as usize,
                    ctx,
                    thread_shared,
                )
                .run(rx);
                tracing::debug!("engine thread stopped");
            })
            .map_err(|e| EngineError::Context(format!("cannot start engine thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| EngineError::Context("engine thread died while starting".into()))??;
        tracing::info!(model = %info.name, ctx, parallel, threads, "model loaded");
        Ok(Self {
            model,
            info: Arc::new(info),
            jobs,
            shared,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        self.model.apply_chat_template(messages)
    }

    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        self.model.tokenize(text)
    }

    /// Queues a request. Fails at once when the prompt cannot fit, the queue is full, or the
    /// engine is shutting down. Dropping the returned stream cancels the request.
    pub fn submit(&self, req: GenerateRequest) -> Result<EventStream, EngineError> {
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
        let (tx, rx) = mpsc::unbounded_channel();
        // Count before sending so the scheduler's decrement can never run first.
        self.shared.stats.queue_len.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(Job { req, events: tx }) {
            Ok(()) => Ok(rx),
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

    /// Ends every running and queued request with an error event and stops the scheduler.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::SeqCst)
    }
}
