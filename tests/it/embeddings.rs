//! `/v1/embeddings`: with the test model (mean-pooled, as it declares no pooling), the vectors
//! have the model's width, come one per input in order, are unit length, put similar sentences
//! closer than unrelated ones, and read the same as base64; through the mesh (the scripted
//! fake on another node) a client node gets the serving node's vectors, even from a batch that
//! takes longer than the tunnel's response-head deadline.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh::http::fake::Scripted;
use serde_json::{json, Value};

fn vector(v: &Value) -> Vec<f32> {
    v["embedding"]
        .as_array()
        .expect("a float array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// SmolLM2-135M's hidden size.
const N_EMBD: usize = 576;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_have_the_model_width_one_per_input_in_order_and_sane_cosines() {
    let node = start(config()).await;
    let sentences = [
        "The cat sat on the mat.",
        "A cat was sitting on the mat.",
        "Quarterly tax filings are due in April.",
        "The cat sat on the mat.",
    ];
    let (status, v) = node
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": sentences}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], MODEL);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), sentences.len());
    let vectors: Vec<Vec<f32>> = data.iter().map(vector).collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(vectors[i].len(), N_EMBD);
        let norm = vectors[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "input {i} has norm {norm}");
    }
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens >= 20, "{v}");
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens);

    // Identical inputs: the same vector (cosine 1), wherever they sit in the batch.
    let same = cosine(&vectors[0], &vectors[3]);
    assert!(
        (same - 1.0).abs() < 1e-3,
        "identical sentences: cosine {same}"
    );
    let similar = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!(
        similar > unrelated,
        "similar sentences should be closer: {similar} vs unrelated {unrelated}"
    );

    // In order: each input alone gives the vector it got in the batch.
    for i in [2, 1] {
        let (status, one) = node
            .post_json(
                "/v1/embeddings",
                &json!({"model": MODEL, "input": sentences[i]}),
            )
            .await;
        assert_eq!(status, 200, "{one}");
        let alone = vector(&one["data"][0]);
        let c = cosine(&alone, &vectors[i]);
        assert!(
            (c - 1.0).abs() < 1e-3,
            "input {i} alone vs in the batch: cosine {c}"
        );
    }
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_embeddings_decode_to_the_same_floats_and_token_input_is_accepted() {
    let node = start(config()).await;
    let input = json!(["hello world", "goodbye"]);
    let (_, floats) = node
        .post_json("/v1/embeddings", &json!({"model": MODEL, "input": input}))
        .await;
    let (status, b64) = node
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": input, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{b64}");
    for i in 0..2 {
        let text = b64["data"][i]["embedding"]
            .as_str()
            .expect("a base64 string");
        let bytes = data_encoding::BASE64.decode(text.as_bytes()).unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let direct = vector(&floats["data"][i]);
        assert_eq!(decoded.len(), N_EMBD);
        let c = cosine(&decoded, &direct);
        assert!((c - 1.0).abs() < 1e-4, "input {i}: cosine {c}");
    }

    // Token ids in, one vector out; an id outside the vocabulary is a 400.
    let (status, v) = node
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": [[1, 2, 3], [4, 5]]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    let (status, v) = node
        .post_json(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": [[999_999]]}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = node
        .post_json("/v1/embeddings", &json!({"model": MODEL, "input": []}))
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = node
        .post_json("/v1/embeddings", &json!({"model": "nope", "input": "x"}))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_node_gets_embeddings_from_the_node_serving_the_model() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh_fake(fake(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(20), "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;
    let body = json!({"model": MODEL, "input": ["abc", "xyz", "abc"]});
    let (status, remote) = a.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 200, "{remote}");
    let (_, direct) = b.post_json("/v1/embeddings", &body).await;
    assert_eq!(remote["data"], direct["data"]);
    assert_eq!(remote["data"].as_array().unwrap().len(), 3);
    assert_eq!(remote["model"], MODEL);
    // A 4xx from the serving node reaches the client as it is.
    assert_dimensions_refused(&a).await;
    // A model nobody serves: 404, as on a single node.
    let (status, v) = a
        .post_json("/v1/embeddings", &json!({"model": "nope", "input": "x"}))
        .await;
    assert_eq!(status, 404, "{v}");
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_slower_than_the_tunnel_head_timeout_still_reaches_a_client_node() {
    use mesh::mesh::net::tunnel::HEAD_TIMEOUT;
    // The serving node computes for longer than the forwarding node waits for a response head.
    let slow = Arc::new(Scripted::new(MODEL).embed_delay(HEAD_TIMEOUT + Duration::from_secs(2)));
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh_fake(slow, mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(20), "B serving the model", |p| {
        serves(p, &b_id, MODEL)
    })
    .await;
    let body = json!({"model": MODEL, "input": ["abc", "xyz"]});
    let (status, v) = a.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2, "{v}");
    // An error found after the early head still reaches the client as a 400.
    assert_dimensions_refused(&a).await;
    for n in [a, b] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_says_which_local_model_is_an_embedding_model() {
    for (generator, want) in [
        (Scripted::new("embed-model").embedding_model(), json!(true)),
        (Scripted::new("chat-model"), Value::Null),
    ] {
        let n = start_fake(Arc::new(generator)).await;
        let v: Value = http_client()
            .get(format!("{}/v1/models", n.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"][0]["embedding"], want, "{v}");
        n.node.shutdown().await;
    }
}

/// `dimensions` (not supported) asked of `node` is a 400 naming the field.
async fn assert_dimensions_refused(node: &TestNode) {
    let body = json!({"model": MODEL, "input": "x", "dimensions": 3});
    let (status, v) = node.post_json("/v1/embeddings", &body).await;
    assert_eq!(status, 400, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("dimensions"), "{v}");
}
