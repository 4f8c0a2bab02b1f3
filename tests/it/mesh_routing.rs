//! Three nodes act as one: A is a client, B and C serve models. Requests to A reach the model
//! wherever it runs, streaming; replicas share load; a killed node leaves routing within the
//! documented expiry and comes back when it restarts.

use crate::common;

use std::time::Duration;

use common::*;
use mesh::http::fake::Script;
use serde_json::Value;

/// Expiry (3 s) + sweep (0.25 s) on loopback; the issue asks for removal within 5 s.
const GONE_WITHIN: Duration = Duration::from_secs(5);
/// Joining is a few round trips on loopback; generous for a loaded 2-core machine.
const JOIN_WITHIN: Duration = Duration::from_secs(20);

async fn served(node: &TestNode) -> u64 {
    node.status().await["requests_served"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reaches_replicas_spreads_load_and_survives_a_killed_replica() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let ticket = a.ticket();
    let b = start_mesh(Some(config()), mesh_config(vec![ticket.clone()]))
        .await
        .unwrap();
    let c_key = iroh::SecretKey::generate();
    let mut c_cfg = mesh_config(vec![ticket.clone()]);
    c_cfg.secret_key = c_key.clone();
    let c = start_mesh(Some(config()), c_cfg.clone()).await.unwrap();
    let (b_id, c_id) = (b.node_id(), c.node_id());
    a.wait_peers(JOIN_WITHIN, "B and C serving the model", |p| {
        serves(p, &b_id, MODEL) && serves(p, &c_id, MODEL)
    })
    .await;
    assert_eq!(a.model_ids().await, vec![MODEL.to_owned()]);
    assert_eq!(a.status().await["role"], "client");

    // Streaming through A: chunks arrive as SSE and end with [DONE].
    let chunks = SseReader::new(a.post("/v1/chat/completions", &chat(MODEL, true)).await)
        .all()
        .await;
    assert_eq!(
        chunks.last().map(String::as_str),
        Some("[DONE]"),
        "{chunks:?}"
    );
    let first: Value = serde_json::from_str(&chunks[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], MODEL);

    // Concurrent load reaches both replicas.
    let (b0, c0) = (served(&b).await, served(&c).await);
    let body = chat(MODEL, false);
    let answers =
        futures::future::join_all((0..8).map(|_| a.post_json("/v1/chat/completions", &body))).await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["object"], "chat.completion");
    }
    let (b1, c1) = (served(&b).await, served(&c).await);
    assert_eq!(b1 - b0 + c1 - c0, 8);
    assert!(
        b1 > b0 && c1 > c0,
        "both replicas serve: B {b0}→{b1}, C {c0}→{c1}"
    );

    // Kill C without a goodbye. Requests sent at once still succeed (through B), and C is out
    // of A's table within the expiry.
    c.node.kill().await;
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200, "{body}");
    a.wait_peers(GONE_WITHIN, "C to expire", |p| {
        !p.iter().any(|x| x["node_id"] == c_id.as_str())
    })
    .await;
    let before = served(&b).await;
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served(&b).await, before + 1);

    // C comes back with the same identity and is re-admitted.
    let c = start_mesh(Some(config()), c_cfg).await.unwrap();
    a.wait_peers(JOIN_WITHIN, "C to come back", |p| serves(p, &c_id, MODEL))
        .await;
    let (status, body) = a
        .post_json(
            "/v1/completions",
            &serde_json::json!({
                "model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0,
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    for n in [a, b, c] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_that_leaves_the_mesh_is_503_naming_it() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    // C serves the scripted fake: what is checked is routing, not the model.
    let c = start_mesh_fake(
        fake_with("second-model", Script::Text(vec!["Hi".into()])),
        mesh_config(vec![a.ticket()]),
    )
    .await
    .unwrap();
    let c_id = c.node_id();
    a.wait_peers(JOIN_WITHIN, "C serving second-model", |p| {
        serves(p, &c_id, "second-model")
    })
    .await;
    assert_eq!(a.model_ids().await, vec!["second-model".to_owned()]);
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat("second-model", false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "second-model");

    // A graceful stop tells the mesh at once.
    c.node.shutdown().await;
    a.wait_peers(GONE_WITHIN, "C's leave", |p| p.is_empty())
        .await;
    assert!(a.model_ids().await.is_empty());
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat("second-model", false))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "model_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'second-model'"), "{message}");
    // A model no node ever served is "not found", as on a single node.
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat("never-served", false))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    a.node.shutdown().await;
}
