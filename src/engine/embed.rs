//! Embeddings (`/v1/embeddings`): one vector per input, pooled as the model declares.
//!
//! Any loaded model can embed. Its embedding context is a second llama.cpp context on the same
//! weights, created on the first embeddings request (on its own thread, so generation is not
//! held up) and kept: a node that never embeds pays nothing. The context has embeddings on and
//! the model's pooling type (GGUF `<arch>.pooling_type`); a model that declares none — a chat
//! model such as the test model — is mean-pooled. Vectors are L2-normalised, as llama-server
//! does by default. A reranker (rank pooling) is refused: its output is a score, not a vector.
//!
//! Inputs are packed into batches of whole sequences ([`plan_batches`]); one input may not be
//! longer than one batch, since llama.cpp pools a sequence within one micro-batch. The batch
//! size is bounded by [`EMBED_OUTPUT_BUDGET`]: a causal model computes logits for every token
//! of an embedding batch, `n_vocab` floats each.
//!
//! The pure parts (pooling choice, batch size, packing, normalising) are plain functions.

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::model::Model;
use super::EngineError;

/// Bytes an embedding batch may spend on logits (`n_vocab` × 4 bytes per token): 256 MiB.
pub const EMBED_OUTPUT_BUDGET: u64 = 256 * 1024 * 1024;
/// Tokens per input an embedding batch always allows (unless the context is smaller).
pub const EMBED_MIN_TOKENS: u32 = 64;
/// Sequences decoded together in one embedding batch.
pub const EMBED_SEQS: usize = 16;
/// Embedding requests that may wait for the embedding thread; beyond it: 503.
pub const EMBED_QUEUE: usize = 16;

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// Token ids, as OpenAI's API accepts them.
    Tokens(Vec<i32>),
}

/// The answer: one vector per input, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs together.
    pub prompt_tokens: usize,
}

/// Where an embeddings answer arrives.
pub type EmbedReply = oneshot::Receiver<Result<Embeddings, EngineError>>;

/// How a sequence's token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    Last,
}

/// The pooling for a model declaring `declared` (GGUF `<arch>.pooling_type`: 0 none, 1 mean,
/// 2 cls, 3 last, 4 rank). None or "none": mean. Rank (a reranker) and unknown values: refused.
pub fn pooling_for(declared: Option<i64>) -> Result<Pooling, String> {
    match declared {
        None | Some(0) | Some(1) => Ok(Pooling::Mean),
        Some(2) => Ok(Pooling::Cls),
        Some(3) => Ok(Pooling::Last),
        Some(4) => {
            Err("the model is a reranker (rank pooling): it scores, it does not embed".into())
        }
        Some(n) => Err(format!("the model declares an unknown pooling type {n}")),
    }
}

/// Tokens one embedding batch holds, which is also the longest input: what
/// [`EMBED_OUTPUT_BUDGET`] allows for the vocabulary, at least [`EMBED_MIN_TOKENS`], at most
/// the context per sequence.
pub fn batch_tokens(ctx: u32, n_vocab: u32) -> u32 {
    let per_token = u64::from(n_vocab.max(1)) * 4;
    let budget = (EMBED_OUTPUT_BUDGET / per_token).min(u64::from(u32::MAX)) as u32;
    budget.max(EMBED_MIN_TOKENS).min(ctx.max(1))
}

/// Packs inputs of `lens` tokens, in order, into batches of at most `max_tokens` tokens and
/// `max_seqs` sequences. Every length must be at most `max_tokens` (checked by the caller).
pub fn plan_batches(lens: &[usize], max_tokens: usize, max_seqs: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        if i > start && (tokens + len > max_tokens || i - start >= max_seqs) {
            out.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += len;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Scales `v` to unit length (Euclidean), as llama-server's default `embd_normalize = 2`.
/// A zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

/// Checks inputs and turns them into token lists: none empty, none longer than `max_tokens`,
/// every token id inside the vocabulary.
pub fn check_inputs(
    tokens: &[Vec<i32>],
    max_tokens: usize,
    n_vocab: i32,
) -> Result<(), EngineError> {
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(EngineError::BadInput(format!("input {i} is empty")));
        }
        if t.len() > max_tokens {
            return Err(EngineError::PromptTooLong {
                prompt: t.len(),
                ctx: max_tokens as u32,
            });
        }
        if let Some(bad) = t.iter().find(|&&id| id < 0 || id >= n_vocab) {
            return Err(EngineError::BadInput(format!(
                "input {i} holds token {bad}, outside the vocabulary of {n_vocab}"
            )));
        }
    }
    Ok(())
}

/// An embedding model declares how to pool (mean, CLS or last); chat models declare none.
pub(super) fn is_embedding_model(model: &llama_cpp_2::model::LlamaModel) -> bool {
    matches!(declared_pooling(model), Some(1..=3))
}

/// The model's GGUF `<arch>.pooling_type`, when it declares one.
fn declared_pooling(model: &llama_cpp_2::model::LlamaModel) -> Option<i64> {
    let arch = model.meta_val_str("general.architecture").ok()?;
    let value = model.meta_val_str(&format!("{arch}.pooling_type")).ok()?;
    value.trim().parse().ok()
}

struct Job {
    inputs: Vec<EmbedInput>,
    reply: oneshot::Sender<Result<Embeddings, EngineError>>,
}

/// A model's embedder: starts its thread and context on first use.
pub(super) struct Embedder {
    backend: &'static LlamaBackend,
    model: Arc<Model>,
    threads: u32,
    max_tokens: u32,
    pooling: Result<Pooling, String>,
    /// The embedding thread's queue, once started; `None` after shutdown too.
    jobs: Mutex<Option<SyncSender<Job>>>,
    shut: std::sync::atomic::AtomicBool,
}

impl Embedder {
    pub fn new(backend: &'static LlamaBackend, model: Arc<Model>, ctx: u32, threads: u32) -> Self {
        let n_vocab = u32::try_from(model.inner.n_vocab()).unwrap_or(0);
        let pooling = pooling_for(declared_pooling(&model.inner));
        Self {
            backend,
            max_tokens: batch_tokens(ctx, n_vocab),
            model,
            threads,
            pooling,
            jobs: Mutex::new(None),
            shut: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Length of every vector.
    pub fn dims(&self) -> usize {
        usize::try_from(self.model.inner.n_embd_out()).unwrap_or(0)
    }

    /// Queues `inputs`; the answer comes on the returned receiver.
    pub fn submit(&self, inputs: Vec<EmbedInput>) -> Result<EmbedReply, EngineError> {
        use std::sync::atomic::Ordering;
        let pooling = self.pooling.clone().map_err(EngineError::BadInput)?;
        if inputs.is_empty() {
            return Err(EngineError::BadInput("no input to embed".into()));
        }
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if self.shut.load(Ordering::SeqCst) {
            return Err(EngineError::ShuttingDown);
        }
        if jobs.is_none() {
            *jobs = Some(self.start(pooling)?);
        }
        let (tx, rx) = oneshot::channel();
        let sender = jobs.as_ref().expect("started above");
        match sender.try_send(Job { inputs, reply: tx }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(EngineError::Overloaded {
                parallel: 1,
                queue: EMBED_QUEUE,
            }),
            Err(TrySendError::Disconnected(_)) => {
                // The thread died (a failed context): the next request starts it again.
                *jobs = None;
                Err(EngineError::Context("the embedding thread stopped".into()))
            }
        }
    }

    /// Lets the embedding thread finish its current request and stop; later requests fail.
    pub fn shutdown(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Creates the embedding context on a new thread; returns once it exists.
    fn start(&self, pooling: Pooling) -> Result<SyncSender<Job>, EngineError> {
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.max_tokens))
            .with_n_batch(self.max_tokens)
            .with_n_ubatch(self.max_tokens)
            .with_n_seq_max(EMBED_SEQS as u32)
            .with_kv_unified(true)
            .with_embeddings(true)
            .with_pooling_type(match pooling {
                Pooling::Mean => LlamaPoolingType::Mean,
                Pooling::Cls => LlamaPoolingType::Cls,
                Pooling::Last => LlamaPoolingType::Last,
            })
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let (tx, inbox) = sync_channel::<Job>(EMBED_QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (backend, model, max_tokens) = (self.backend, Arc::clone(&self.model), self.max_tokens);
        std::thread::Builder::new()
            .name("mesh-embed".into())
            .spawn(move || {
                let ctx = match model.inner.new_context(backend, params) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::Context(e.to_string())));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tracing::info!(max_tokens, ?pooling, "embedding context ready");
                run(&model, ctx, max_tokens as usize, inbox);
            })
            .map_err(|e| EngineError::Context(format!("cannot start embedding thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| EngineError::Context("embedding thread died while starting".into()))??;
        Ok(tx)
    }
}

/// The embedding thread: one request at a time, until every sender is gone.
fn run(model: &Model, mut ctx: LlamaContext<'_>, max_tokens: usize, inbox: Receiver<Job>) {
    let mut batch = LlamaBatch::new(max_tokens, EMBED_SEQS as i32);
    while let Ok(job) = inbox.recv() {
        if job.reply.is_closed() {
            continue;
        }
        let answer = embed(model, &mut ctx, &mut batch, max_tokens, job.inputs);
        let _ = job.reply.send(answer);
    }
    tracing::debug!("embedding thread stopped");
}

fn embed(
    model: &Model,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    max_tokens: usize,
    inputs: Vec<EmbedInput>,
) -> Result<Embeddings, EngineError> {
    let tokens: Vec<Vec<i32>> = inputs
        .into_iter()
        .map(|i| match i {
            EmbedInput::Text(t) => model.tokenize(&t),
            EmbedInput::Tokens(t) => t,
        })
        .collect();
    check_inputs(&tokens, max_tokens, model.inner.n_vocab())?;
    let lens: Vec<usize> = tokens.iter().map(Vec::len).collect();
    let mut vectors = Vec::with_capacity(tokens.len());
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        EngineError::Context(format!("embedding {what} failed: {e}"))
    };
    for range in plan_batches(&lens, max_tokens, EMBED_SEQS) {
        batch.clear();
        ctx.clear_kv_cache();
        for (seq, input) in tokens[range.clone()].iter().enumerate() {
            for (pos, &tok) in input.iter().enumerate() {
                batch
                    .add(LlamaToken(tok), pos as i32, &[seq as i32], true)
                    .map_err(|e| failed("batch", &e))?;
            }
        }
        ctx.decode(batch).map_err(|e| failed("decode", &e))?;
        for seq in 0..range.len() {
            let mut v = ctx
                .embeddings_seq_ith(seq as i32)
                .map_err(|e| failed("read", &e))?
                .to_vec();
            normalize(&mut v);
            vectors.push(v);
        }
    }
    ctx.clear_kv_cache();
    Ok(Embeddings {
        vectors,
        prompt_tokens: lens.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_without_a_pooling_type_are_mean_pooled_and_rerankers_refused() {
        assert_eq!(pooling_for(None), Ok(Pooling::Mean));
        assert_eq!(pooling_for(Some(0)), Ok(Pooling::Mean));
        assert_eq!(pooling_for(Some(1)), Ok(Pooling::Mean));
        assert_eq!(pooling_for(Some(2)), Ok(Pooling::Cls));
        assert_eq!(pooling_for(Some(3)), Ok(Pooling::Last));
        assert!(pooling_for(Some(4)).unwrap_err().contains("reranker"));
        assert!(pooling_for(Some(9))
            .unwrap_err()
            .contains("unknown pooling type 9"));
    }

    #[test]
    fn batch_tokens_fit_the_logits_budget_within_min_and_context() {
        // SmolLM2's 49,152-token vocabulary: the budget allows 1365, the context caps it.
        assert_eq!(batch_tokens(512, 49_152), 512);
        assert_eq!(batch_tokens(4096, 49_152), 1365);
        // Gemma 3's 262,144 tokens: 256 per batch.
        assert_eq!(batch_tokens(4096, 262_144), 256);
        // A huge vocabulary still gets the minimum, a tiny context caps even that.
        assert_eq!(batch_tokens(4096, u32::MAX), EMBED_MIN_TOKENS);
        assert_eq!(batch_tokens(16, u32::MAX), 16);
        assert_eq!(batch_tokens(0, 0), 1);
    }

    #[test]
    fn batches_keep_inputs_in_order_within_tokens_and_sequences() {
        assert_eq!(plan_batches(&[], 10, 4), Vec::<Range<usize>>::new());
        assert_eq!(plan_batches(&[3, 3, 3, 3], 10, 4), vec![0..3, 3..4]);
        assert_eq!(plan_batches(&[10, 1, 9], 10, 4), vec![0..1, 1..3]);
        assert_eq!(plan_batches(&[1; 5], 100, 2), vec![0..2, 2..4, 4..5]);
        let lens = [7, 2, 5, 5, 1, 9, 3];
        let batches = plan_batches(&lens, 10, 3);
        let flat: Vec<usize> = batches.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..lens.len()).collect::<Vec<_>>());
        for r in &batches {
            assert!(lens[r.clone()].iter().sum::<usize>() <= 10 && r.len() <= 3);
        }
    }

    #[test]
    fn vectors_are_scaled_to_unit_length_and_zero_stays_zero() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }

    #[test]
    fn empty_overlong_and_out_of_vocabulary_inputs_are_refused() {
        assert!(check_inputs(&[vec![1, 2]], 2, 10).is_ok());
        assert!(matches!(
            check_inputs(&[vec![1], vec![]], 2, 10),
            Err(EngineError::BadInput(m)) if m.contains("input 1 is empty")
        ));
        assert!(matches!(
            check_inputs(&[vec![1, 2, 3]], 2, 10),
            Err(EngineError::PromptTooLong { prompt: 3, ctx: 2 })
        ));
        assert!(matches!(
            check_inputs(&[vec![10]], 2, 10),
            Err(EngineError::BadInput(m)) if m.contains("token 10")
        ));
        assert!(check_inputs(&[vec![-1]], 2, 10).is_err());
    }
}
