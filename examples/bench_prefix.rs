//! Prefix reuse: time to first token of the second turn of a ~2k-token conversation, with and
//! without reuse of the first turn's KV cache (docs/BENCHMARKS.md, `just bench-prefix`).
//!
//! Usage: `bench_prefix MODEL.gguf [ROUNDS] [THREADS]`. Each round is a new conversation (its
//! system prompt starts with the round number): turn 1 (~1,900 prompt tokens, 32 generated),
//! then turn 2 (turn 1, its answer, a short question), timed from submit to its first text.
//! Prints one line per engine setting: median turn-2 TTFT, prompt tokens and tokens reused.

use std::time::{Duration, Instant};

use mesh::engine::{
    ChatMessage, Engine, EngineConfig, Event, EventStream, GenerateRequest, SamplingParams,
};

/// What one request came to.
struct Answer {
    text: String,
    first: Duration,
    prompt_tokens: u32,
    cached_tokens: u32,
}

fn run(engine: &Engine, messages: &[ChatMessage], max_tokens: u32) -> Answer {
    let prompt = engine
        .apply_chat_template(messages)
        .map(|t| engine.tokenize(&t))
        .expect("chat template");
    let start = Instant::now();
    let mut events: EventStream = engine
        .submit(GenerateRequest {
            prompt,
            sampling: SamplingParams {
                temperature: 0.0,
                ignore_eos: true,
                ..SamplingParams::default()
            },
            max_tokens: Some(max_tokens),
            ..GenerateRequest::default()
        })
        .expect("submit");
    let (mut text, mut first) = (String::new(), None);
    loop {
        match events.blocking_recv().expect("engine answers") {
            Event::Text(t) => {
                first.get_or_insert_with(|| start.elapsed());
                text.push_str(&t);
            }
            Event::Logprob(_) => {}
            Event::Done { usage, .. } => {
                return Answer {
                    text,
                    first: first.unwrap_or_else(|| start.elapsed()),
                    prompt_tokens: usage.prompt_tokens,
                    cached_tokens: usage.cached_tokens,
                }
            }
            Event::Error(e) => panic!("generation failed: {e}"),
        }
    }
}

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// Turn 1 of conversation `round`: a long system prompt and a question (~1,900 tokens).
fn turn1(round: usize) -> Vec<ChatMessage> {
    let mut system = format!("Conversation {round}. You are the assistant of a harbour master. ");
    for i in 0..95 {
        system.push_str(&format!(
            "Rule {i}: ships of class {} keep {} metres from the pier and report at {}:00. ",
            i % 7,
            10 + i,
            i % 24
        ));
    }
    vec![
        msg("system", &system),
        msg(
            "user",
            "Which rules apply to a class 3 ship arriving at night?",
        ),
    ]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .expect("usage: bench_prefix MODEL.gguf [ROUNDS] [THREADS]");
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS"));
    let threads: Option<u32> = args.next().map(|t| t.parse().expect("THREADS"));
    for reuse in [false, true] {
        let engine = Engine::start(EngineConfig {
            parallel: 1,
            ctx: Some(4096),
            threads,
            prefix_cache: reuse,
            ..EngineConfig::new(&model)
        })
        .expect("engine starts");
        let (mut ttft, mut prompt, mut cached) = (Vec::new(), 0, 0);
        for round in 0..rounds {
            let mut messages = turn1(round);
            let one = run(&engine, &messages, 32);
            messages.push(msg("assistant", &one.text));
            messages.push(msg("user", "And if it arrives in fog?"));
            let two = run(&engine, &messages, 8);
            ttft.push(two.first);
            (prompt, cached) = (two.prompt_tokens, two.cached_tokens);
        }
        println!(
            "prefix reuse {:>3}: turn 2 time to first token {:>7.1} ms (median of {rounds}), \
             prompt {prompt} tokens, {cached} reused",
            if reuse { "on" } else { "off" },
            median(ttft).as_secs_f64() * 1e3,
        );
        engine.shutdown();
    }
}
