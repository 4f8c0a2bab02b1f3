//! The Ollama-compatible API on the OpenAI port: the official `ollama` Python client against a
//! real `mesh serve` (list, chat and generate, streaming and not), a model served by another
//! node reached through a client node's Ollama API, and Ollama-shaped errors for bad input.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use mesh::http::fake::Script;
use serde_json::{json, Value};

const JOIN_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn the_official_ollama_python_client_lists_models_chats_and_generates() {
    let home = temp_home();
    let cmd = serve_test_model(home.path());
    let proc = MeshProcess::start(cmd)
        .unwrap_or_else(|lines| panic!("no startup output naming the API address: {lines:?}"));
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/ollama_client.py"
        ))
        .arg(proc.base())
        .arg(MODEL)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "ollama client failed (install it with scripts/setup.sh):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ollama client: ok"));
}

/// The NDJSON lines of a streamed Ollama answer.
async fn ndjson(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "application/x-ndjson");
    let text = resp.text().await.unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_on_another_node_answers_through_the_ollama_api_of_a_client_node() {
    let c = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let g = fake_with(
        MODEL,
        Script::Text(vec!["Hello".into(), ", world".into(), "!".into()]),
    );
    let b = start_mesh_fake(g.clone(), mesh_config(vec![c.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    c.wait_peers(JOIN_WITHIN, "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;

    let tags = c.get_json(&format!("{}/api/tags", c.base)).await;
    assert_eq!(tags["models"][0]["name"], MODEL, "{tags}");
    let ps = c.get_json(&format!("{}/api/ps", c.base)).await;
    assert_eq!(ps["models"][0]["context_length"], 256, "{ps}");

    let question = json!([{"role": "user", "content": "hi"}]);
    let body = json!({"model": MODEL, "messages": question, "stream": false,
                      "options": {"num_predict": 8, "temperature": 0.5, "seed": 7, "top_k": 3}});
    let (status, v) = c.post_json("/api/chat", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["message"]["content"], "Hello, world!");
    assert_eq!(
        (v["done"].clone(), v["done_reason"].clone()),
        (json!(true), json!("stop"))
    );
    assert_eq!(v["eval_count"], 3);
    let asked = g.last_request().expect("the request reached B's generator");
    assert_eq!(asked.max_tokens, Some(8));
    assert_eq!((asked.sampling.seed, asked.sampling.top_k), (Some(7), 3));

    let lines = ndjson(
        c.post("/api/chat", &json!({"model": MODEL, "messages": question}))
            .await,
    )
    .await;
    let text: String = lines
        .iter()
        .filter(|l| l["done"] == false)
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello, world!");
    let last = lines.last().unwrap();
    assert_eq!(
        (last["done"].clone(), last["done_reason"].clone()),
        (json!(true), json!("stop"))
    );
    assert_eq!(lines.iter().filter(|l| l["done"] == true).count(), 1);

    let lines = ndjson(
        c.post(
            "/api/generate",
            &json!({"model": MODEL, "prompt": "Once", "raw": true, "options": {"num_predict": 2}}),
        )
        .await,
    )
    .await;
    let text: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    assert_eq!(text, "Hello, world");
    assert_eq!(lines.last().unwrap()["done_reason"], "length");
    let (status, v) = c
        .post_json(
            "/api/generate",
            &json!({"model": MODEL, "prompt": "Once", "stream": false}),
        )
        .await;
    assert_eq!(
        (status, v["response"].clone()),
        (200, json!("Hello, world!")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ollama_requests_get_ollamas_error_shape_and_status() {
    let n = start_fake(fake()).await;
    let error_of = |v: &Value| v["error"].as_str().map(str::to_owned);
    let (status, v) = n
        .post_json(
            "/api/chat",
            &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 404);
    assert!(error_of(&v).unwrap().contains("nope"), "{v}");
    for (body, field) in [
        (json!({"model": MODEL, "messages": "hi"}), "invalid request"),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "options": {"temperature": 9}}),
            "temperature",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}),
            "role",
        ),
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x", "images": ["AA"]}]}),
            "images",
        ),
        (
            json!({"model": MODEL, "prompt": "x", "context": [1]}),
            "context",
        ),
    ] {
        let path = if body.get("prompt").is_some() {
            "/api/generate"
        } else {
            "/api/chat"
        };
        let (status, v) = n.post_json(path, &body).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert!(error_of(&v).unwrap().contains(field), "{v}");
    }
    // A client of its own: the server answers 413 without reading the body and closes the
    // connection, which a pooled client would otherwise reuse for the next request.
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/api/chat", n.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert!(error_of(&v).is_some(), "{v}");
    let (status, v) = n.post_json("/api/show", &json!({"model": "nope"})).await;
    assert_eq!((status, error_of(&v).is_some()), (404, true));
    let (status, v) = n.post_json("/api/generate", &json!({"model": MODEL})).await;
    assert_eq!(
        (status, v["done_reason"].clone()),
        (200, json!("load")),
        "{v}"
    );
    let version = n.get_json(&format!("{}/api/version", n.base)).await;
    assert!(version["version"].is_string());
}
