//! Several models on one node: the test model and Gemma 3 270M, each with its own engine and
//! slots, both listed (`/v1/models`, `/api/status`, the mesh's announcements) and both
//! answering from a client node over the mesh; a request picks its engine by model name.

use crate::common;

use std::time::Duration;

use common::*;
use mesh::engine::EngineConfig;
use serde_json::json;

/// Gemma 3 270M with the test settings of `common::config`, two slots.
fn gemma() -> EngineConfig {
    EngineConfig {
        model_path: model2_path(),
        model_name: Some("gemma-3-270m".into()),
        parallel: 2,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_models_on_one_node_are_listed_and_answer_from_a_client_node() {
    let b = start_mesh_models(vec![config(), gemma()], mesh_config(vec![]))
        .await
        .unwrap();
    let both = [MODEL, "gemma-3-270m"];
    assert_eq!(b.model_ids().await, both);
    let status = b.status().await;
    assert_eq!(status["role"], "host");
    assert_eq!(
        status["model"], MODEL,
        "the first model keeps the top-level fields"
    );
    let listed: Vec<_> = status["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].clone(), m["slots"]["total"].clone()))
        .collect();
    assert_eq!(
        listed,
        [(json!(MODEL), json!(4)), (json!("gemma-3-270m"), json!(2))]
    );

    let a = start_mesh(None, mesh_config(vec![b.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(20), "B announcing both models", |p| {
        both.iter().all(|m| serves(p, &b_id, m))
    })
    .await;
    let mut listed = a.model_ids().await;
    listed.sort();
    let mut want = both.to_vec();
    want.sort();
    assert_eq!(listed, want);
    for model in both {
        let (status, v) = a
            .post_json("/v1/chat/completions", &chat(model, false))
            .await;
        assert_eq!(status, 200, "{model}: {v}");
        assert_eq!(v["model"], model, "answered by the engine of {model}");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    }
    // Each model's engine counted its own request.
    b.wait_status(
        Duration::from_secs(10),
        "one request served by each model",
        |s| {
            s["models"]
                .as_array()
                .is_some_and(|m| m.len() == 2 && m.iter().all(|m| m["requests_served"] == 1))
        },
    )
    .await;
    // A model neither serves: 404 from both nodes.
    let (status, v) = a
        .post_json("/v1/chat/completions", &chat("nope", false))
        .await;
    assert_eq!(status, 404, "{v}");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}
