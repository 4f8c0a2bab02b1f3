//! Prefix reuse, proved from the outside: a second chat turn decodes only what the first turn's
//! KV cache lacks (`usage.prompt_tokens_details.cached_tokens`, `/api/status`), and answers
//! exactly what a node without reuse answers; a slot holding another prompt keeps only what is
//! shared; concurrent requests sharing a system prompt stay correct.

use crate::common;

use common::{config, done_chunks, start, SseReader, TestNode, MODEL};
use mesh::engine::EngineConfig;
use serde_json::{json, Value};

/// Largest difference in a first-token log-probability taken as rounding noise (about twice
/// the largest measured).
const LOGPROB_NOISE: f64 = 0.3;

/// The first generated position of choice `i`: the chosen token and its log-probability, and
/// the alternatives' (chat `logprobs.content` or the legacy completions shape).
fn first_position(v: &Value, i: usize) -> (String, f64, Vec<(String, f64)>) {
    let lp = &v["choices"][i]["logprobs"];
    if let Some(content) = lp["content"].as_array() {
        let t = &content[0];
        let top = t["top_logprobs"].as_array().unwrap().iter();
        let top = top.map(|a| {
            (
                a["token"].as_str().unwrap().to_owned(),
                a["logprob"].as_f64().unwrap(),
            )
        });
        return (
            t["token"].as_str().unwrap().to_owned(),
            t["logprob"].as_f64().unwrap(),
            top.collect(),
        );
    }
    let token = lp["tokens"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no logprobs: {v}"));
    let top = lp["top_logprobs"][0].as_object().unwrap().iter();
    let top = top.map(|(k, x)| (k.clone(), x.as_f64().unwrap()));
    (
        token.to_owned(),
        lp["token_logprobs"][0].as_f64().unwrap(),
        top.collect(),
    )
}

/// Choice `i` of `got` starts as `want`'s first choice: the same first token, unless the two
/// leading ones are a near tie, and every log-probability of that position both report within
/// [`LOGPROB_NOISE`] (concurrent requests share batches in an order that varies from run to
/// run, which moves log-probabilities by rounding as well).
fn assert_same_start(got: &Value, i: usize, want: &Value, what: &str) {
    let (gt, glp, gtop) = first_position(got, i);
    let (wt, wlp, wtop) = first_position(want, 0);
    let near_tie = |top: &[(String, f64)], best: f64, other: &str| {
        top.iter()
            .any(|(t, lp)| t == other && best - lp < 2.0 * LOGPROB_NOISE)
    };
    assert!(
        gt == wt || (near_tie(&gtop, glp, &wt) && near_tie(&wtop, wlp, &gt)),
        "{what}: first token {gt:?} {glp} vs {wt:?} {wlp}: {gtop:?} vs {wtop:?}"
    );
    let mut compared = 0;
    for (tok, lp) in &gtop {
        if let Some((_, w)) = wtop.iter().find(|(t, _)| t == tok) {
            assert!(
                (lp - w).abs() < LOGPROB_NOISE,
                "{what}: alternative {tok:?} {lp} vs {w}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 2, "{what}: {gtop:?} vs {wtop:?}");
}

/// About 150 tokens of system prompt.
fn system_prompt() -> String {
    "You are a careful assistant for a lighthouse keeper on a small northern island. ".repeat(8)
}

fn chat_body(messages: Value, extra: Value) -> Value {
    let mut v = json!({"model": MODEL, "messages": messages, "max_tokens": 12,
                       "ignore_eos": true, "temperature": 0, "logprobs": true, "top_logprobs": 5});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn content(v: &Value, i: usize) -> String {
    v["choices"][i]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {v}"))
        .to_owned()
}

fn cached(v: &Value) -> u64 {
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens: {v}"))
}

async fn ask(n: &TestNode, path: &str, body: &Value) -> Value {
    let (status, v) = n.post_json(path, body).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// A node serving the test model without prefix reuse: the reference answers.
async fn without_reuse(parallel: u32) -> TestNode {
    start(EngineConfig {
        parallel,
        ctx: Some(1024),
        prefix_cache: false,
        ..config()
    })
    .await
}

async fn with_reuse(parallel: u32) -> TestNode {
    start(EngineConfig {
        parallel,
        ctx: Some(1024),
        ..config()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_reuses_the_first_turns_cache_and_starts_as_without_reuse() {
    let (r, f) = (with_reuse(2).await, without_reuse(2).await);
    let turn1 = json!([{"role": "system", "content": system_prompt()},
                       {"role": "user", "content": "What should I check first tonight?"}]);
    let one = ask(
        &r,
        "/v1/chat/completions",
        &chat_body(turn1.clone(), json!({})),
    )
    .await;
    assert_eq!(cached(&one), 0, "nothing to reuse on a fresh node");
    let turn1_tokens = one["usage"]["prompt_tokens"].as_u64().unwrap();
    let mut turn2 = turn1.as_array().unwrap().clone();
    turn2.push(json!({"role": "assistant", "content": content(&one, 0)}));
    turn2.push(json!({"role": "user", "content": "And after that?"}));
    let turn2 = Value::Array(turn2);

    let reused = ask(
        &r,
        "/v1/chat/completions",
        &chat_body(turn2.clone(), json!({})),
    )
    .await;
    let fresh = ask(
        &f,
        "/v1/chat/completions",
        &chat_body(turn2.clone(), json!({})),
    )
    .await;
    assert_eq!(cached(&fresh), 0);
    assert!(
        cached(&reused) >= turn1_tokens - 2,
        "turn 2 reuses turn 1's {turn1_tokens} prompt tokens: {reused}"
    );
    assert!(cached(&reused) < reused["usage"]["prompt_tokens"].as_u64().unwrap());
    assert_eq!(
        reused["usage"]["prompt_tokens"],
        fresh["usage"]["prompt_tokens"]
    );
    assert_same_start(&reused, 0, &fresh, "turn 2");
    let status = r.status().await;
    assert!(status["prompt_tokens_cached"].as_u64().unwrap() >= cached(&reused));

    // Again with two choices: the first choice's slot holds the whole prompt now, the second
    // gets a copy of its cells; both start as without reuse, and greedy choices agree.
    let both = ask(
        &r,
        "/v1/chat/completions",
        &chat_body(turn2.clone(), json!({"n": 2})),
    )
    .await;
    assert!(cached(&both) > 0, "{both}");
    for i in 0..2 {
        assert_same_start(&both, i, &fresh, &format!("choice {i}"));
    }
    assert_eq!(content(&both, 0), content(&both, 1));

    // Streaming reports the reuse in its usage chunk too.
    let body = chat_body(
        turn2,
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let data = SseReader::new(r.post("/v1/chat/completions", &body).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    let usage = &chunks.last().unwrap()["usage"];
    assert!(
        usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{usage}"
    );
    r.node.shutdown().await;
    f.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_holding_another_prompt_keeps_only_what_is_shared() {
    // One slot: every request lands in the sequence the previous one left behind.
    let (r, f) = (with_reuse(1).await, without_reuse(1).await);
    // No trailing space: the longer prompt's next word brings its own, so `a`'s tokens stay.
    let a = "The lighthouse stood on the rocks above the harbour, and every night its lamp "
        .repeat(3)
        .trim_end()
        .to_owned();
    let b = "Seven ships left the port of Bergen in the spring of that year, carrying ".repeat(3);
    let longer_a = format!("{a}turned slowly while the keeper wrote in his log that");
    let body = |p: &str| json!({"model": MODEL, "prompt": p, "max_tokens": 8, "ignore_eos": true, "temperature": 0, "logprobs": 5});
    let mut cached_counts = Vec::new();
    for p in [&a, &b, &a, &a, &longer_a] {
        let got = ask(&r, "/v1/completions", &body(p)).await;
        let want = ask(&f, "/v1/completions", &body(p)).await;
        assert_same_start(&got, 0, &want, &format!("prompt {p:.20}… after the others"));
        cached_counts.push(cached(&got));
    }
    let a_tokens = ask(&f, "/v1/completions", &body(&a)).await["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    // B and the first A again share at most a start-of-text token with what the slot held.
    assert!(
        cached_counts[1] <= 1 && cached_counts[2] <= 1,
        "{cached_counts:?}"
    );
    // The same prompt twice: all but its last token; then it again under a longer one (its
    // last token may merge differently before more text).
    assert_eq!(cached_counts[3], a_tokens - 1, "{cached_counts:?}");
    assert!(cached_counts[4] >= a_tokens - 1, "{cached_counts:?}");
    r.node.shutdown().await;
    f.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_sharing_a_system_prompt_start_as_without_reuse() {
    let (r, f) = (with_reuse(4).await, without_reuse(4).await);
    let messages = |q: &str| json!([{"role": "system", "content": system_prompt()}, {"role": "user", "content": q}]);
    // One slot holds the system prompt before the burst.
    ask(
        &r,
        "/v1/chat/completions",
        &chat_body(messages("Hello?"), json!({})),
    )
    .await;
    let questions = [
        "Is the lamp lit?",
        "How is the sea?",
        "Any ships?",
        "Is it cold?",
    ];
    let burst = |n: &TestNode| {
        let n = (n.http.clone(), n.base.clone());
        futures::future::join_all(questions.iter().map(move |q| {
            let (http, base) = n.clone();
            let body = chat_body(messages(q), json!({}));
            async move {
                let resp = http
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.json::<Value>().await.unwrap()
            }
        }))
    };
    let (got, want) = (burst(&r).await, burst(&f).await);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_same_start(g, 0, w, &format!("question {i}"));
    }
    let reused: u64 = got.iter().map(cached).sum();
    assert!(
        reused > 100,
        "the slot holding the system prompt was reused: {reused}"
    );
    r.node.shutdown().await;
    f.node.shutdown().await;
}
