//! Builds llama.cpp's sampler chain from [`SamplingParams`], in llama-server's order:
//! (banned end tokens) → penalties → top-k → top-p → min-p → temperature → draw (or greedy at temperature 0).

use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use super::request::SamplingParams;

/// How many recent tokens the presence/frequency penalties look at (llama.cpp's default).
const PENALTY_LAST_N: i32 = 64;

/// `eog` lists the model's end-of-generation tokens, banned when `ignore_eos` is set.
pub fn build(params: &SamplingParams, n_vocab: i32, eog: &[i32]) -> LlamaSampler {
    let mut chain = Vec::new();
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
    chain.push(LlamaSampler::dist(params.seed.unwrap_or_else(rand::random)));
    LlamaSampler::chain_simple(chain)
}
