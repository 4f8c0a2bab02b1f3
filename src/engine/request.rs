//! What the engine accepts and what it sends back: a validated generation request and the
//! stream of events that answers it. Plain data; HTTP parsing lives in `proxy::validate`.

use tokio::sync::mpsc;

/// Sampling settings, already range-checked by the caller (see `proxy::validate`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy decoding.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    pub min_p: f32,
    /// Fixed seed for reproducible sampling; random when absent.
    pub seed: Option<u32>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Never sample an end-of-generation token (llama-server's `ignore_eos`; for benchmarks).
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    /// OpenAI's defaults: temperature 1, top_p 1, no penalties; llama.cpp's min_p 0.05.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.05,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            ignore_eos: false,
        }
    }
}

/// Most choices one request may ask for (`n`); each takes one of the engine's slots.
pub const MAX_CHOICES: u32 = 8;
/// Most alternatives reported per token (`top_logprobs`), as OpenAI allows.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// One generation job: a tokenized prompt and how to continue it.
#[derive(Debug, Clone, Default)]
pub struct GenerateRequest {
    pub prompt: Vec<i32>,
    pub sampling: SamplingParams,
    /// Stop after this many generated tokens; `None` runs to end of sequence or context.
    pub max_tokens: Option<u32>,
    /// Generation ends before the first occurrence of any of these strings.
    pub stop: Vec<String>,
    /// A GBNF grammar (root rule `root`) every choice's output must match (structured output).
    pub grammar: Option<String>,
    /// Report each generated token's log-probability with this many alternatives
    /// (0..=[`MAX_TOP_LOGPROBS`]) as [`Event::Logprob`]; `None`: no log-probabilities.
    pub logprobs: Option<u32>,
    /// Choices to generate (0 counts as 1): the prompt is decoded once and its KV cells are
    /// copied to one sequence per extra choice (`Engine::submit_choices`).
    pub n: u32,
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached or the context is full.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Token counts, by the model's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens not decoded because a slot's KV cache held them already (prefix reuse;
    /// OpenAI's `usage.prompt_tokens_details.cached_tokens`). Included in `prompt_tokens`.
    pub cached_tokens: u32,
}

/// A generated token's log-probability under the model (log-softmax of the raw logits at that
/// position: before temperature, penalties and grammar, as OpenAI and llama-server report it).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's bytes (a token may hold part of a UTF-8 character).
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely tokens at that position, most likely first.
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// What the engine sends for one choice, in order: zero or more `Text` (each token's
/// `Logprob` before the text it makes, when asked for), then `Done` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of generated text (never empty).
    Text(String),
    /// The log-probability of the next generated token (only when the request asks for it).
    /// Text is released after UTF-8 and stop-string checks, so it may lag behind; a token cut
    /// by a stop string still had its `Logprob` sent.
    Logprob(TokenLogprob),
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    /// Generation broke off (shutdown or an engine failure); no `Done` follows.
    Error(String),
}

/// Receiving end of a request's events. Dropping it cancels the request and frees its slot.
pub type EventStream = mpsc::UnboundedReceiver<Event>;
