//! The OpenAI-compatible API: real answers, exact usage, determinism, stop strings, penalties
//! and the context end against the real test model; the model list, streaming format (role
//! chunk, usage chunk, `[DONE]`, the error chunk of a generation that breaks off), the
//! over-long prompt and refusals against the scripted fake generator, which needs no model.

use crate::common;

use common::{
    chunk_text, config, done_chunks, fake, fake_with, start, start_fake, user, SseReader, MODEL,
};
use mesh::engine::EngineError;
use mesh::http::fake::{Script, Scripted};
use serde_json::{json, Value};
use std::sync::Arc;

/// Ten one-word pieces: enough for `max_tokens` to cut a stream short.
fn ten_pieces() -> Script {
    Script::Text((0..10).map(|i| format!(" w{i}")).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_the_served_model() {
    let n = start_fake(fake()).await;
    let v: Value = n
        .http
        .get(format!("{}/v1/models", n.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], MODEL);
    assert_eq!(data[0]["object"], "model");
    assert!(data[0]["created"].as_u64().unwrap() > 1_700_000_000);
    assert!(data[0]["owned_by"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_with_text_and_consistent_usage() {
    let n = start(config()).await;
    let (status, v) = n
        .post_json(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": user("What is the capital of France?"), "temperature": 0, "max_tokens": 24}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let text = choice["message"]["content"].as_str().unwrap();
    assert!(!text.trim().is_empty());
    assert!(
        text.contains("Paris"),
        "greedy SmolLM2 knows this one: {text}"
    );
    let u = &v["usage"];
    let (p, c) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 5 && c > 0 && c <= 24);
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c);
    match choice["finish_reason"].as_str().unwrap() {
        "length" => assert_eq!(c, 24),
        "stop" => assert!(c < 24),
        other => panic!("finish_reason {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_tokens_exactly() {
    let n = start(config()).await;
    let ask = |prompt: String| json!({"model": MODEL, "prompt": prompt, "max_tokens": 7, "ignore_eos": true, "temperature": 0});
    let (s1, short) = n.post_json("/v1/completions", &ask("Hello".into())).await;
    // " a" is one token in SmolLM2's vocabulary: ten more of them are exactly ten more tokens.
    let (s2, long) = n
        .post_json("/v1/completions", &ask(format!("Hello{}", " a".repeat(10))))
        .await;
    assert_eq!((s1, s2), (200, 200));
    let p1 = short["usage"]["prompt_tokens"].as_u64().unwrap();
    let p2 = long["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(p2, p1 + 10);
    for v in [&short, &long] {
        assert_eq!(v["object"], "text_completion");
        assert_eq!(
            v["usage"]["completion_tokens"], 7,
            "max_tokens with ignore_eos is exact"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty());
    }
    let status = n.status().await;
    assert_eq!(status["requests_served"], 2);
    assert_eq!(status["tokens_generated"], 14);
    assert_eq!(status["prompt_tokens"].as_u64().unwrap(), p1 + p2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_has_openai_chunks_usage_and_done() {
    let n = start_fake(fake()).await;
    let body = |stream: bool| {
        json!({"model": MODEL, "messages": user("Name three colours."), "temperature": 0, "max_tokens": 20,
               "stream": stream, "stream_options": {"include_usage": true}})
    };
    let (_, whole) = n.post_json("/v1/chat/completions", &body(false)).await;
    let data = SseReader::new(n.post("/v1/chat/completions", &body(true)).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk" && c["model"] == MODEL));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // The usage chunk comes last, with no choices; the one before it carries the finish reason.
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage_chunk["usage"], whole["usage"]);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(
        finish["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    assert!(chunks[..chunks.len() - 2]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    let streamed: String = chunks.iter().map(chunk_text).collect();
    assert_eq!(
        streamed,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_stream_without_usage_option_sends_no_usage_chunk() {
    let n = start_fake(fake_with(MODEL, ten_pieces())).await;
    let req = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6, "ignore_eos": true, "stream": true});
    let data = SseReader::new(n.post("/v1/completions", &req).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "text_completion" && c.get("usage").is_none()));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    let text: String = chunks.iter().map(chunk_text).collect();
    assert!(!text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_and_seeded_outputs_repeat_exactly() {
    let n = start(config()).await;
    for extra in [
        json!({"temperature": 0}),
        json!({"temperature": 0.9, "seed": 1234, "top_k": 40, "top_p": 0.95}),
    ] {
        let mut req = json!({"model": MODEL, "messages": user("Tell me a short story about a cat."), "max_tokens": 32});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (_, a) = n.post_json("/v1/chat/completions", &req).await;
        let (_, b) = n.post_json("/v1/chat/completions", &req).await;
        let text = a["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!text.is_empty());
        assert_eq!(
            text,
            b["choices"][0]["message"]["content"].as_str().unwrap(),
            "for {extra}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_string_ends_the_text_before_it() {
    let n = start(config()).await;
    let base = json!({"model": MODEL, "prompt": "The days of the week are Monday,", "max_tokens": 24, "temperature": 0, "ignore_eos": true});
    let (_, free) = n.post_json("/v1/completions", &base).await;
    let full = free["choices"][0]["text"].as_str().unwrap().to_owned();
    // Stop on a piece of text from the middle of the free-running answer.
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "need some words: {full:?}");
    let stop = words[2];
    let cut = full.find(stop).unwrap();
    let mut with_stop = base.clone();
    with_stop["stop"] = json!([stop, "never-appears"]);
    let (_, stopped) = n.post_json("/v1/completions", &with_stop).await;
    assert_eq!(
        stopped["choices"][0]["text"].as_str().unwrap(),
        &full[..cut]
    );
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    // Streaming never leaks any part of the stop string either.
    with_stop["stream"] = json!(true);
    let data = SseReader::new(n.post("/v1/completions", &with_stop).await)
        .all()
        .await;
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| chunk_text(&serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(text, &full[..cut]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frequency_penalty_changes_greedy_output() {
    let n = start(config()).await;
    let req = |penalty: f64| {
        json!({"model": MODEL, "prompt": "one one one one one one", "max_tokens": 24, "temperature": 0,
               "ignore_eos": true, "frequency_penalty": penalty, "presence_penalty": penalty / 2.0})
    };
    let (_, plain) = n.post_json("/v1/completions", &req(0.0)).await;
    let (_, penalised) = n.post_json("/v1/completions", &req(2.0)).await;
    let (a, b) = (
        plain["choices"][0]["text"].as_str().unwrap(),
        penalised["choices"][0]["text"].as_str().unwrap(),
    );
    assert_ne!(a, b, "penalties must reach the sampler");
    // The plain greedy answer keeps repeating; penalised it must use more distinct words.
    let distinct = |s: &str| {
        s.split_whitespace()
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(distinct(b) > distinct(a), "{a:?} vs {b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_longer_than_context_is_400() {
    let n = start_fake(Arc::new(Scripted::new(MODEL).ctx(512))).await; // as config(): 512 per sequence
    let prompt = "word ".repeat(600);
    let (status, v) = n
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": prompt}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("512"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_stops_at_context_end_with_length() {
    let cfg = mesh::engine::EngineConfig {
        ctx: Some(64),
        ..config()
    };
    let n = start(cfg).await;
    let (status, v) = n
        .post_json("/v1/completions", &json!({"model": MODEL, "prompt": "Count: 1, 2, 3,", "ignore_eos": true, "temperature": 0}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"]["total_tokens"], 64,
        "prompt + completion fill the context exactly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_without_usage_option_has_role_chunk_text_finish_and_done() {
    let n = start_fake(fake()).await;
    let req = json!({"model": MODEL, "messages": user("Hi"), "stream": true});
    let data = SseReader::new(n.post("/v1/chat/completions", &req).await)
        .all()
        .await;
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    let chunks = done_chunks(&data);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "{chunks:?}"
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let text: String = chunks.iter().map(chunk_text).collect();
    assert_eq!(text, "Hello, world!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_that_breaks_off_ends_the_stream_with_an_error_chunk_and_no_done() {
    let script = Script::Fail(vec!["Hel".into(), "lo".into()], "decode failed".into());
    let n = start_fake(fake_with(MODEL, script)).await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": user("Hi"), "stream": true}),
        ),
        (
            "/v1/completions",
            json!({"model": MODEL, "prompt": "Hi", "stream": true}),
        ),
    ] {
        let data = SseReader::new(n.post(path, &body).await).all().await;
        assert!(!data.iter().any(|d| d == "[DONE]"), "{path}: {data:?}");
        let last: Value =
            serde_json::from_str(data.last().expect("a final chunk")).expect("last chunk is JSON");
        let e = &last["error"];
        assert!(
            e["message"].as_str().unwrap().contains("decode failed"),
            "{path}: {last}"
        );
        assert!(e["type"].is_string() && e["code"].is_string(), "{last}");
        let text: String = data[..data.len() - 1]
            .iter()
            .map(|d| chunk_text(&serde_json::from_str(d).unwrap()))
            .collect();
        assert_eq!(text, "Hello", "{path}: the pieces before the break arrive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_off_generation_without_streaming_is_an_error_in_openai_shape() {
    let script = Script::Fail(vec!["Hel".into()], "decode failed".into());
    let n = start_fake(fake_with(MODEL, script)).await;
    let (status, v) = n
        .post_json("/v1/completions", &json!({"model": MODEL, "prompt": "Hi"}))
        .await;
    assert!(status >= 500, "{status} {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decode failed"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_generator_is_503_in_openai_shape() {
    let script = Script::Refuse(|| EngineError::Overloaded {
        parallel: 2,
        queue: 4,
    });
    let n = start_fake(fake_with(MODEL, script)).await;
    for stream in [false, true] {
        let (status, v) = n
            .post_json(
                "/v1/chat/completions",
                &json!({"model": MODEL, "messages": user("Hi"), "stream": stream}),
            )
            .await;
        assert_eq!(status, 503, "stream {stream}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("overloaded"),
            "{v}"
        );
        assert!(v["error"]["code"].is_string(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_reaches_the_generator_and_cuts_with_length() {
    let g = fake_with(MODEL, ten_pieces());
    let n = start_fake(g.clone()).await;
    let (status, v) = n
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Hi", "max_tokens": 4, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], " w0 w1 w2 w3");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(
        v["usage"]["prompt_tokens"], 2,
        "the fake counts one token per byte"
    );
    assert_eq!(v["usage"]["total_tokens"], 6);
    assert_eq!(g.last_request().expect("a request").max_tokens, Some(4));
}
