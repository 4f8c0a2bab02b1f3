//! Forwarding over the mesh, with the scripted fake generator on the serving node (no model):
//! a client node's requests reach the fake on another node and come back answered or streamed
//! in OpenAI's format, a generation that breaks off there ends the client's stream with an
//! error chunk, and bad input is refused by the client node before anything is forwarded.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh::http::fake::{Script, Scripted};
use serde_json::{json, Value};

const JOIN_WITHIN: Duration = Duration::from_secs(20);

/// A client node A and a node B serving `script` under [`MODEL`], A seeing B's model.
async fn a_and_b(script: Script) -> (TestNode, TestNode, Arc<Scripted>) {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let g = fake_with(MODEL, script);
    let b = start_mesh_fake(g.clone(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(JOIN_WITHIN, "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;
    (a, b, g)
}

fn pieces(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_node_gets_answers_and_streams_from_a_generator_on_another_node() {
    let (a, b, g) = a_and_b(Script::Text(pieces(&["Hello", ", world", "!"]))).await;
    assert_eq!(a.model_ids().await, [MODEL]);

    let (status, v) = a
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello, world!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let asked = g.last_request().expect("the request reached B's generator");
    assert_eq!(asked.max_tokens, Some(8));

    let data = SseReader::new(a.post("/v1/chat/completions", &chat(MODEL, true)).await)
        .all()
        .await;
    let chunks = done_chunks(&data);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks.iter().map(chunk_text).collect();
    assert_eq!(text, "Hello, world!");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(a.status().await["role"], "client");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_generation_that_breaks_off_on_another_node_ends_the_stream_with_an_error_chunk() {
    let (a, b, _) = a_and_b(Script::Fail(pieces(&["Hel", "lo"]), "decode failed".into())).await;
    let data = SseReader::new(a.post("/v1/chat/completions", &chat(MODEL, true)).await)
        .all()
        .await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().expect("a final chunk")).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("decode failed"),
        "{last}"
    );
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| chunk_text(&serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(text, "Hello");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_for_a_mesh_model_is_refused_before_it_is_forwarded() {
    let (a, b, g) = a_and_b(Script::Text(pieces(&["x"]))).await;
    for body in [
        json!({"model": MODEL, "messages": []}),
        json!({"model": MODEL, "messages": user("x"), "temperature": "hot"}),
        json!({"model": MODEL, "messages": user("x"), "max_tokens": -5}),
    ] {
        let (status, v) = a.post_json("/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    assert!(g.last_request().is_none(), "nothing reached B");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}
