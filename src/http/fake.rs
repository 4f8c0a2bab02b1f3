//! A generator without a model, for tests and benchmarks of the HTTP layer: it "tokenizes" one
//! token per byte and answers every request with a scripted list of events; it embeds a text
//! as its normalised histogram of tokens modulo [`FAKE_EMBED_DIMS`]. Small on purpose;
//! it lives in the library so integration tests and examples can use it too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::generate::Generate;
use crate::engine::{
    ChatMessage, EmbedInput, EmbedReply, Embeddings, EngineError, Event, EventStream, FinishReason,
    GenerateRequest, ModelInfo, StatsSnapshot, Usage,
};

/// Length of the fake's embedding vectors.
pub const FAKE_EMBED_DIMS: usize = 8;

/// What [`Scripted`] answers.
#[derive(Debug, Clone)]
pub enum Script {
    /// These text pieces, then `Done` with `stop` (or `length` when `max_tokens` cuts it).
    Text(Vec<String>),
    /// These text pieces, then an error event (a generation that breaks off).
    Fail(Vec<String>, String),
    /// Refuse at submit with this error.
    Refuse(fn() -> EngineError),
    /// Accept, then never send anything (a stalled engine).
    Stall,
}

/// A fake [`Generate`]: context `ctx`, answers with its [`Script`], remembers the last request.
pub struct Scripted {
    info: ModelInfo,
    script: Script,
    shutting_down: AtomicBool,
    last: Mutex<Option<GenerateRequest>>,
    /// Senders of stalled requests, kept so their streams stay open.
    held: Mutex<Vec<mpsc::UnboundedSender<Event>>>,
    /// How long an embeddings request takes (a big batch).
    embed_delay: std::time::Duration,
}

impl Scripted {
    /// Answers "Hello, world!" in three pieces; context 256 tokens.
    pub fn new(name: &str) -> Self {
        Self::with_script(
            name,
            Script::Text(vec!["Hello".into(), ", world".into(), "!".into()]),
        )
    }

    pub fn with_script(name: &str, script: Script) -> Self {
        Self {
            info: ModelInfo {
                name: name.to_owned(),
                path: PathBuf::from(format!("/fake/{name}.gguf")),
                ctx: 256,
                n_ctx_train: 256,
                parallel: 2,
                threads: 1,
                queue_capacity: 4,
                created: crate::util::time::unix_secs(),
                embedding: false,
            },
            script,
            shutting_down: AtomicBool::new(false),
            last: Mutex::new(None),
            held: Mutex::new(Vec::new()),
            embed_delay: std::time::Duration::ZERO,
        }
    }

    /// Announces itself as an embedding model (as a GGUF declaring a pooling type does).
    pub fn embedding_model(mut self) -> Self {
        self.info.embedding = true;
        self
    }

    /// Makes every embeddings request take `delay` (as a big batch would).
    pub fn embed_delay(mut self, delay: std::time::Duration) -> Self {
        self.embed_delay = delay;
        self
    }

    /// Sets the context per request (prompts at or over it are refused, as by the engine).
    pub fn ctx(mut self, ctx: u32) -> Self {
        self.info.ctx = ctx;
        self
    }

    /// Sets the slots and the waiting room (per origin) it announces, as `--parallel` and
    /// `--queue` do for the engine.
    pub fn capacity(mut self, parallel: u32, queue: usize) -> Self {
        self.info.parallel = parallel;
        self.info.queue_capacity = queue;
        self
    }

    /// Ends the oldest stalled request ([`Script::Stall`]) with `Done`; false when none is held.
    pub fn finish_oldest(&self) -> bool {
        let Some(tx) = self
            .held
            .lock()
            .ok()
            .and_then(|mut h| (!h.is_empty()).then(|| h.remove(0)))
        else {
            return false;
        };
        let _ = tx.send(Event::Done {
            finish: FinishReason::Stop,
            usage: Usage::default(),
        });
        true
    }

    /// The last request submitted.
    pub fn last_request(&self) -> Option<GenerateRequest> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

impl Generate for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::default()
    }

    fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<i32>, EngineError> {
        let text: String = messages
            .iter()
            .map(|m| format!("<{}>{}", m.role, m.content))
            .collect();
        Ok(self.tokenize(&text))
    }

    fn tokenize(&self, text: &str) -> Vec<i32> {
        text.bytes().map(i32::from).collect()
    }

    fn submit(&self, req: GenerateRequest) -> Result<EventStream, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        if req.prompt.len() >= self.info.ctx as usize {
            return Err(EngineError::PromptTooLong {
                prompt: req.prompt.len(),
                ctx: self.info.ctx,
            });
        }
        if let Script::Refuse(error) = &self.script {
            return Err(error());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let prompt_tokens = req.prompt.len() as u32;
        let max = req.max_tokens.map_or(usize::MAX, |m| m as usize);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(req);
        }
        let (pieces, end) = match &self.script {
            Script::Text(p) => (p.clone(), None),
            Script::Fail(p, e) => (p.clone(), Some(e.clone())),
            Script::Stall | Script::Refuse(_) => {
                if let Ok(mut held) = self.held.lock() {
                    held.push(tx);
                }
                return Ok(rx);
            }
        };
        let sent = pieces.len().min(max);
        for p in pieces.into_iter().take(sent) {
            let _ = tx.send(Event::Text(p));
        }
        let _ = tx.send(match end {
            Some(e) => Event::Error(e),
            None => Event::Done {
                finish: if sent < max {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                },
                usage: Usage {
                    prompt_tokens,
                    completion_tokens: sent as u32,
                    cached_tokens: 0,
                },
            },
        });
        Ok(rx)
    }

    fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        if let Ok(mut held) = self.held.lock() {
            for tx in held.drain(..) {
                let _ = tx.send(Event::Error("server shutting down".into()));
            }
        }
    }

    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    fn embed(&self, inputs: Vec<EmbedInput>) -> Result<EmbedReply, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let mut prompt_tokens = 0;
        let vectors = inputs
            .into_iter()
            .map(|input| {
                let tokens = match input {
                    EmbedInput::Text(t) => self.tokenize(&t),
                    EmbedInput::Tokens(t) => t,
                };
                prompt_tokens += tokens.len();
                let mut v = vec![0.0f32; FAKE_EMBED_DIMS];
                for t in tokens {
                    v[t.unsigned_abs() as usize % FAKE_EMBED_DIMS] += 1.0;
                }
                crate::engine::embed::normalize(&mut v);
                v
            })
            .collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let delay = self.embed_delay;
        let answer = Ok(Embeddings {
            vectors,
            prompt_tokens,
        });
        if delay.is_zero() {
            let _ = tx.send(answer);
        } else {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = tx.send(answer);
            });
        }
        Ok(rx)
    }
}
