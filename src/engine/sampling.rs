//! Builds llama.cpp's sampler chain from [`SamplingParams`], in llama-server's order:
//! (grammar) → (banned end tokens) → penalties → top-k → top-p → min-p → temperature → draw (or
//! greedy at temperature 0). The grammar comes first, so every later step only sees tokens the
//! grammar allows (and an end-of-generation token only once the grammar is complete).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use super::request::SamplingParams;

/// How many recent tokens the presence/frequency penalties look at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// `eog` lists the model's end-of-generation tokens, banned when `ignore_eos` is set;
/// `grammar`, when set, is the grammar sampler (see [`grammar`]). `choice` (0 for the first of a
/// request's `n` choices) is added to a fixed seed, so choices differ yet stay reproducible.
pub fn build(
    params: &SamplingParams,
    choice: u32,
    n_vocab: i32,
    eog: &[i32],
    grammar: Option<LlamaSampler>,
) -> LlamaSampler {
    let mut chain = Vec::new();
    chain.extend(grammar);
    if params.ignore_eos && !eog.is_empty() {
        let bans: Vec<_> = eog
            .iter()
            .map(|&t| LlamaLogitBias::new(LlamaToken(t), f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &bans));
    }
    if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            PENALTY_LAST_N,
            1.0,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(params.top_k));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    if params.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(params.min_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    let seed = params
        .seed
        .map_or_else(rand::random, |s| s.wrapping_add(choice));
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

/// llama.cpp's grammar sampler for a GBNF grammar with root rule `root`; an error when
/// llama.cpp cannot parse it (its parser returns no sampler then).
pub fn grammar(model: &LlamaModel, gbnf: &str) -> Result<LlamaSampler, String> {
    LlamaSampler::grammar(model, gbnf, "root").map_err(|e| format!("invalid grammar: {e}"))
}
