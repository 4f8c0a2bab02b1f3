//! Issue 14 item 4, tools (function calling): the official `openai` client's round trip with the
//! test model (its template has no tools: the generic format, enforced by a grammar), on the
//! serving node and through a client node; and, with a scripted generator, the response shapes
//! (whole and streamed, assembled by a forwarding node) and the 400s for invalid tools.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh::http::fake::{Script, Scripted};
use serde_json::{json, Value};

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather", "description": "The current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }})
}

/// Runs tests/it/openai_tools.py against `base` (…/v1); `short` leaves its slowest step out.
async fn openai_tools_client(base: String, short: bool) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/it/openai_tools.py"
            ))
            .arg(base)
            .arg(MODEL)
            .args(short.then_some("--short"))
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai tools client failed (install it with scripts/setup.sh):\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("openai tools: ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openai_client_tool_call_round_trip_on_the_serving_node_and_through_a_client_node() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh(Some(config()), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(30), "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;
    openai_tools_client(format!("{}/v1", b.base), false).await;
    // Through the client node: the body travels unchanged, B renders and parses.
    openai_tools_client(format!("{}/v1", a.base), true).await;
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

/// What a model answering in the generic format says when it calls `get_weather`.
const GENERIC_CALL: &str =
    r#"{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}"#;

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "fake", "messages": user("Weather in Paris?"), "tools": [weather_tool()],
        "tool_choice": "required", "parallel_tool_calls": false, "stream": stream,
    })
}

/// The one tool call of a whole answer, checked for OpenAI's shape.
fn the_call(v: &Value) -> &Value {
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert!(choice["message"]["content"].is_null(), "{v}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{v}");
    assert_eq!(calls[0]["type"], "function");
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"), "{v}");
    &calls[0]["function"]
}

/// The tool calls of a stream, from its deltas, and its finish reason.
fn streamed_calls(data: &[String]) -> (Vec<Value>, String) {
    let mut calls = Vec::new();
    let mut finish = String::new();
    for c in done_chunks(data) {
        for ch in c["choices"].as_array().unwrap() {
            assert!(
                ch["delta"]["content"].as_str().unwrap_or("").is_empty(),
                "{ch}"
            );
            for d in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                assert!(d["index"].is_u64() && d["id"].is_string(), "{d}");
                calls.push(d["function"].clone());
            }
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        }
    }
    (calls, finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generic_tool_calls_come_back_as_tool_calls_whole_streamed_and_through_a_client_node() {
    // The fake's tokens are bytes: room for the tool description in the system prompt.
    // The fake's tokens are bytes: room for the tool description in the system prompt.
    let fake = Arc::new(
        Scripted::with_script(
            "fake",
            Script::Text(vec![GENERIC_CALL[..20].into(), GENERIC_CALL[20..].into()]),
        )
        .ctx(2048),
    );
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh_fake(fake.clone(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(20), "B serving the fake", |p| {
        serves(p, &b_id, "fake")
    })
    .await;
    for node in [&b, &a] {
        let (status, v) = node
            .post_json("/v1/chat/completions", &tool_request(false))
            .await;
        assert_eq!(status, 200, "{v}");
        let f = the_call(&v);
        assert_eq!(f["name"], "get_weather");
        assert_eq!(f["arguments"], r#"{"city":"Paris"}"#);
        let data = SseReader::new(node.post("/v1/chat/completions", &tool_request(true)).await)
            .all()
            .await;
        let (calls, finish) = streamed_calls(&data);
        assert_eq!(finish, "tool_calls");
        assert_eq!(
            calls,
            [json!({"name": "get_weather", "arguments": r#"{"city":"Paris"}"#})]
        );
    }
    // The serving node enforced the format with a grammar and described the tool in the prompt.
    let req = fake.last_request().unwrap();
    assert!(
        req.grammar
            .as_deref()
            .is_some_and(|g| g.contains("get_weather")),
        "{req:?}"
    );
    let prompt: String = req.prompt.iter().map(|&t| t as u8 as char).collect();
    assert!(
        prompt.starts_with("<system>You can call the following tools"),
        "{prompt}"
    );
    // tool_choice "none": no grammar, plain text back.
    let mut none = tool_request(false);
    none["tool_choice"] = json!("none");
    let (status, v) = b.post_json("/v1/chat/completions", &none).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["choices"][0]["message"]["content"], GENERIC_CALL);
    assert!(fake.last_request().unwrap().grammar.is_none());
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tools_are_400_naming_the_problem() {
    let n = start_fake(fake_with("fake", Script::Text(vec!["x".into()]))).await;
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "strnig"}}}}}]}),
            "strnig",
        ),
        (
            json!({"tools": [weather_tool()],
            "tool_choice": {"type": "function", "function": {"name": "launch_rocket"}}}),
            "launch_rocket",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "bad name",
        ),
        (
            json!({"tools": [weather_tool()], "tool_choice": "always"}),
            "always",
        ),
        (json!({"tool_choice": "required"}), "required"),
        (
            json!({"tools": [weather_tool()], "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"tools": "get_weather"}), "invalid request"),
    ];
    for (extra, needle) in cases {
        let mut body = json!({"model": "fake", "messages": user("hi")});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, v) = n.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{extra}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{extra}: {message}");
    }
    n.node.shutdown().await;
}
