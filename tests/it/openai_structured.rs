//! Issue 14 items 1-3 against the real test model: structured output (`response_format`
//! json_object / json_schema, llama.cpp's `grammar`) enforced by the grammar sampler, streaming
//! too; log-probabilities in OpenAI's chat and legacy shapes; `n` choices decoded from one
//! prompt evaluation; and the same through a client node of a mesh.

use crate::common;

use std::time::Duration;

use common::*;
use mesh::engine::EngineConfig;
use serde_json::{json, Value};

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "mood": {"enum": ["happy", "sad", "angry"]},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}
        },
        "required": ["name", "mood", "age"],
        "additionalProperties": false
    })
}

fn schema_format(schema: Value) -> Value {
    json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}})
}

/// The schema's promises hold for `text`.
fn obeys_person_schema(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    assert_eq!(o.len(), 3, "exactly the three properties: {text}");
    assert!(
        o["name"].as_str().is_some_and(|n| n.chars().count() <= 12),
        "{text}"
    );
    assert!(
        ["happy", "sad", "angry"].contains(&o["mood"].as_str().unwrap_or("")),
        "{text}"
    );
    assert!(o["age"].as_u64().is_some_and(|a| a <= 120), "{text}");
}

/// `body` with the fields of `extra` set.
fn with(mut body: Value, extra: &Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn chat_with(extra: Value) -> Value {
    let body = json!({
        "model": MODEL,
        "messages": user("Describe a person as JSON with a name, a mood and an age."),
        "max_tokens": 120,
    });
    with(body, &extra)
}

fn content(v: &Value, i: usize) -> &str {
    v["choices"][i]["message"]["content"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_output_always_parses_as_an_object() {
    let n = start(config()).await;
    for seed in 0..4 {
        let body = chat_with(json!({
            "response_format": {"type": "json_object"}, "seed": seed, "temperature": 0.8,
            // A JSON object may legitimately run long: string lengths are bounded by a schema.
            "max_tokens": 200,
        }));
        let (status, v) = n.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        let text = content(&v, 0);
        if v["choices"][0]["finish_reason"] == "stop" {
            let parsed: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {text}"));
            assert!(parsed.is_object(), "seed {seed}: {text}");
        } else {
            // Cut by max_tokens: still the start of an object.
            assert!(text.trim_start().starts_with('{'), "seed {seed}: {text}");
        }
    }
    // Without the grammar the model answers free text (the complaint).
    let (_, free) = n
        .post_json(
            "/v1/chat/completions",
            &chat_with(json!({"temperature": 0, "max_tokens": 40})),
        )
        .await;
    assert!(
        serde_json::from_str::<Value>(content(&free, 0)).is_err(),
        "{free}"
    );
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schema_with_required_fields_and_enums_is_obeyed_over_20_seeded_runs() {
    let n = start(config()).await;
    // Four at a time: the node's four slots.
    for batch in 0..5u64 {
        let asks = (0..4u64).map(|i| {
            let seed = batch * 4 + i;
            let body = chat_with(json!({
                "response_format": schema_format(person_schema()),
                "seed": seed, "temperature": 1.0,
            }));
            let n = &n;
            async move { (seed, n.post_json("/v1/chat/completions", &body).await) }
        });
        for (seed, (status, v)) in futures::future::join_all(asks).await {
            assert_eq!(status, 200, "seed {seed}: {v}");
            assert_eq!(v["choices"][0]["finish_reason"], "stop", "seed {seed}: {v}");
            obeys_person_schema(content(&v, 0));
        }
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_streams_and_llama_cpp_grammars_are_obeyed() {
    let n = start(config()).await;
    let body = chat_with(json!({
        "response_format": schema_format(person_schema()), "seed": 7, "temperature": 1.0,
        "stream": true,
    }));
    let data = SseReader::new(n.post("/v1/chat/completions", &body).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    let text: String = chunks.iter().map(chunk_text).collect();
    obeys_person_schema(&text);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );

    // llama-server's spellings: a schema in json_object, a top-level json_schema, a grammar.
    for extra in [
        json!({"response_format": {"type": "json_object", "schema": person_schema()}}),
        json!({"json_schema": person_schema()}),
    ] {
        let (status, v) = n
            .post_json(
                "/v1/chat/completions",
                &with(chat_with(json!({"seed": 3, "temperature": 1.0})), &extra),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        obeys_person_schema(content(&v, 0));
    }
    for seed in 0..3 {
        let (status, v) = n
            .post_json(
                "/v1/completions",
                &json!({"model": MODEL, "prompt": "Is the sky blue? Answer:", "seed": seed,
                        "temperature": 1.0, "max_tokens": 10,
                        "grammar": "root ::= \" \" (\"yes\" | \"no\") \".\""}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["text"].as_str().unwrap();
        assert!(text == " yes." || text == " no.", "{text}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_schemas_and_grammars_are_400_naming_the_problem() {
    let n = start(config()).await;
    let cases = [
        (
            json!({"response_format": schema_format(json!({"type": "object", "properties": {"a": {"type": "strnig"}}}))}),
            "strnig",
        ),
        (
            json!({"response_format": schema_format(json!("a string"))}),
            "must be an object",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "json_schema.schema",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": schema_format(json!({"$ref": "#/nowhere"}))}),
            "JSON schema",
        ),
        (json!({"grammar": "root ::= undefined-rule"}), "grammar"),
        (json!({"grammar": "root ::= (\"a\""}), "grammar"),
        (
            json!({"grammar": "x", "response_format": {"type": "json_object"}}),
            "at most one",
        ),
    ];
    for (extra, needle) in cases {
        let (status, v) = n
            .post_json("/v1/chat/completions", &chat_with(extra.clone()))
            .await;
        assert_eq!(status, 400, "{extra}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{extra}: {msg}");
    }
    // The engine is fine afterwards.
    let (status, _) = n
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200);
    n.node.shutdown().await;
}

/// Checks a chat `logprobs.content` list: shape, bounds, sorted alternatives, and that its
/// tokens' bytes spell `text`.
fn check_chat_logprobs(content: &[Value], text: &str, top: usize, greedy: bool) {
    let mut bytes = Vec::new();
    for t in content {
        let lp = t["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "{t}");
        let tb: Vec<u8> = t["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        bytes.extend(&tb);
        let alts = t["top_logprobs"].as_array().unwrap();
        assert_eq!(alts.len(), top, "{t}");
        let lps: Vec<f64> = alts
            .iter()
            .map(|a| a["logprob"].as_f64().unwrap())
            .collect();
        assert!(lps.windows(2).all(|w| w[0] >= w[1]), "sorted: {t}");
        assert!(lps.iter().all(|&l| l <= 0.0));
        assert!(lps.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-4);
        if greedy {
            assert_eq!(lp, lps[0], "greedy takes the top-1: {t}");
            assert_eq!(t["token"], alts[0]["token"], "{t}");
        } else if let Some(best) = lps.first() {
            assert!(lp <= best + 1e-6);
        }
    }
    assert_eq!(String::from_utf8_lossy(&bytes), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_have_openais_shape_in_chat_and_completions_streaming_and_not() {
    let n = start(config()).await;
    // No `ignore_eos`: banning end tokens would make greedy skip a top-1 end token.
    let ask = json!({"model": MODEL, "messages": user("Name three colors."), "max_tokens": 12,
                     "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let (status, v) = n.post_json("/v1/chat/completions", &ask).await;
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        content.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap(),
        "one entry per generated token"
    );
    assert!(!content.is_empty());
    check_chat_logprobs(content, self::content(&v, 0), 3, true);

    // Streaming: the entries ride on the chunks and add up to the same list.
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let data = SseReader::new(n.post("/v1/chat/completions", &streamed).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    let mut all = Vec::new();
    for c in &chunks {
        if let Some(list) = c["choices"][0]["logprobs"]["content"].as_array() {
            all.extend(list.iter().cloned());
        }
    }
    let text: String = chunks.iter().map(chunk_text).collect();
    assert_eq!(all, *content, "same tokens and numbers as the whole answer");
    check_chat_logprobs(&all, &text, 3, true);

    // No logprobs asked: null; temperature 1 with no alternatives asked: chosen only.
    let (_, plain) = n
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert!(plain["choices"][0]["logprobs"].is_null());
    let mut sampled = ask.clone();
    sampled["temperature"] = json!(1.0);
    sampled["seed"] = json!(5);
    sampled["top_logprobs"] = json!(0);
    let (_, v) = n.post_json("/v1/chat/completions", &sampled).await;
    check_chat_logprobs(
        v["choices"][0]["logprobs"]["content"].as_array().unwrap(),
        self::content(&v, 0),
        0,
        false,
    );

    // Completions: the legacy shape.
    let legacy = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8,
                        "temperature": 0, "logprobs": 2});
    let (status, v) = n.post_json("/v1/completions", &legacy).await;
    assert_eq!(status, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        tokens.len() as u64,
        v["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert!(!tokens.is_empty());
    assert_eq!(tokens.concat(), v["choices"][0]["text"].as_str().unwrap());
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
    for (i, top) in lp["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let top = top.as_object().unwrap();
        assert!(top.len() <= 2 && !top.is_empty());
        let best = top
            .values()
            .map(|l| l.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(
            lp["token_logprobs"][i].as_f64().unwrap(),
            best,
            "greedy: top-1"
        );
    }
    let mut streamed = legacy.clone();
    streamed["stream"] = json!(true);
    let data = SseReader::new(n.post("/v1/completions", &streamed).await)
        .all()
        .await;
    let mut offsets_streamed = Vec::new();
    for c in done_chunks(&data) {
        if let Some(o) = c["choices"][0]["logprobs"]["text_offset"].as_array() {
            offsets_streamed.extend(o.iter().map(|o| o.as_u64().unwrap()));
        }
    }
    assert_eq!(offsets_streamed, offsets);

    for bad in [
        json!({"top_logprobs": 21, "logprobs": true}),
        json!({"top_logprobs": 2}),
    ] {
        let body = with(chat(MODEL, false), &bad);
        let (status, v) = n.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("top_logprobs"));
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_share_one_prompt_evaluation_streaming_and_not() {
    // Without prefix reuse, so the same prompt asked again is decoded again and counted here
    // (reuse with several choices is tested in `prefix_cache`).
    let n = start(EngineConfig {
        prefix_cache: false,
        ..config()
    })
    .await;
    let ask = |n_choices: u32, stream: bool| {
        json!({"model": MODEL, "messages": user("Write a short sentence about the sea."),
               "max_tokens": 8, "ignore_eos": true, "temperature": 0, "n": n_choices, "stream": stream,
               "stream_options": {"include_usage": true}})
    };
    let (_, one) = n.post_json("/v1/chat/completions", &ask(1, false)).await;
    let greedy = content(&one, 0).to_owned();
    let prompt_tokens = one["usage"]["prompt_tokens"].as_u64().unwrap();

    let before = n.status().await["prompt_tokens"].as_u64().unwrap();
    let (status, v) = n.post_json("/v1/chat/completions", &ask(3, false)).await;
    assert_eq!(status, 200, "{v}");
    let after = n.status().await["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        after - before,
        prompt_tokens,
        "the prompt is decoded once for three choices"
    );
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
        // Greedy from copied prompt cells: exactly the one-choice answer.
        assert_eq!(c["message"]["content"], greedy.as_str(), "choice {i}");
    }
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 24);

    // Streaming: every chunk names its choice; each choice finishes once; one [DONE].
    let before = n.status().await["prompt_tokens"].as_u64().unwrap();
    let data = SseReader::new(n.post("/v1/chat/completions", &ask(3, true)).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    let mut texts: Vec<String> = (0..3).map(|_| String::new()).collect();
    let mut finishes = [0; 3];
    for c in &chunks {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            texts[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            if !ch["finish_reason"].is_null() {
                finishes[i] += 1;
            }
        }
    }
    assert_eq!(finishes, [1, 1, 1]);
    assert_eq!(texts, vec![greedy.clone(); 3]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 24);
    let after = n.status().await["prompt_tokens"].as_u64().unwrap();
    assert_eq!(after - before, prompt_tokens);

    // Sampled choices differ (seeded per choice), and completions take n too.
    let (status, v) = n
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "My favourite animal is", "max_tokens": 12,
                    "ignore_eos": true, "temperature": 1.0, "seed": 11, "n": 3}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let texts: std::collections::BTreeSet<&str> = v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert!(texts.len() > 1, "{v}");

    // More choices than slots (4) or than the cap: 400.
    for n_choices in [5, 9, 0] {
        let (status, v) = n
            .post_json("/v1/chat/completions", &ask(n_choices, false))
            .await;
        assert_eq!(status, 400, "n={n_choices}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("'n'"),
            "{v}"
        );
    }
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn structured_output_logprobs_and_n_work_through_a_remote_node() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh(Some(config()), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(30), "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;
    let body = chat_with(json!({
        "response_format": schema_format(person_schema()), "seed": 1, "temperature": 1.0,
        "n": 2, "logprobs": true, "top_logprobs": 2,
    }));
    // Not streaming: A assembles B's stream back into two choices with their logprobs.
    let (status, v) = a.post_json("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    for i in 0..2 {
        assert_eq!(v["choices"][i]["index"], i);
        obeys_person_schema(content(&v, i));
        let lps = v["choices"][i]["logprobs"]["content"].as_array().unwrap();
        check_chat_logprobs(lps, content(&v, i), 2, false);
    }
    // Streaming: passed through.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let data = SseReader::new(a.post("/v1/chat/completions", &streamed).await)
        .all()
        .await;
    let mut texts: Vec<String> = (0..2).map(|_| String::new()).collect();
    for c in done_chunks(&data) {
        for ch in c["choices"].as_array().unwrap() {
            let i = ch["index"].as_u64().unwrap() as usize;
            texts[i].push_str(ch["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    for t in &texts {
        obeys_person_schema(t);
    }
    // An invalid schema is refused by A itself.
    let bad = chat_with(json!({"response_format": schema_format(json!({"type": "strnig"}))}));
    let (status, v) = a.post_json("/v1/chat/completions", &bad).await;
    assert_eq!(status, 400, "{v}");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}
