//! Routing against hostile replicas (issue 12): real nodes on loopback, where one member
//! announces a model and then answers every tunnelled request with a 500 at once, or accepts
//! requests and never answers. A client node must keep serving its users through the honest
//! replica, with the hostile one getting almost nothing. And a prompt too long for a replica's
//! context is served by a replica with a larger one.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use futures::StreamExt;
use mesh::http::fake::{Script, Scripted};
use mesh::mesh::proto::ticket::Ticket;
use mesh::mesh::{Mesh, ModelOffer, Serving, ServingFn};
use serde_json::{json, Value};

const JOIN_WITHIN: Duration = Duration::from_secs(20);
/// "A few seconds" (the bound) for the one request a silent replica may cost: the
/// tunnel's response-head deadline (10 s) plus the retry, on a loaded machine.
const SILENT_COSTS_AT_MOST: Duration = Duration::from_secs(15);

/// A member announcing `model` (context 4096, all slots free) whose tunnel answers with `app`;
/// `hits` counts the requests that reached it.
async fn hostile(join: Ticket, model: &str, app: axum::Router) -> Mesh {
    let offer = ModelOffer {
        name: model.into(),
        free_slots: 8,
        slots: 8,
        ctx: 4096,
    };
    let serving: ServingFn = Arc::new(move || Serving {
        models: vec![offer.clone()],
        ..Serving::default()
    });
    Mesh::start(mesh_config(vec![join]), serving, app)
        .await
        .expect("hostile member starts")
}

/// A tunnel app that counts requests and answers each with `answer`.
fn counting<F, Fut>(hits: &Arc<AtomicUsize>, answer: F) -> axum::Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = StatusCode> + Send + 'static,
{
    let hits = hits.clone();
    axum::Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        answer()
    })
}

/// Waits until `a` sees every node of `ids` serving `model`.
async fn sees(a: &TestNode, ids: &[String], model: &str) {
    a.wait_peers(JOIN_WITHIN, "every replica serving the model", |p| {
        ids.iter().all(|id| serves(p, id, model))
    })
    .await;
}

fn text_of(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_answering_500_at_once_gets_under_5_percent_of_50_concurrent_requests() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    // An honest replica with room for all 50 from one peer (as `mesh serve`'s default queue
    // of 64 has): only the hostile one may fail.
    let roomy = Arc::new(Scripted::new(MODEL).capacity(2, 64));
    let honest = start_mesh_fake(roomy, mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let bad = hostile(
        a.ticket(),
        MODEL,
        counting(&hits, || async { StatusCode::INTERNAL_SERVER_ERROR }),
    )
    .await;
    sees(&a, &[honest.node_id(), bad.node_id().to_string()], MODEL).await;

    let body = chat(MODEL, false);
    let answers =
        futures::future::join_all((0..50).map(|_| a.post_json("/v1/chat/completions", &body)))
            .await;
    for (status, v) in &answers {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(text_of(v), "Hello, world!", "{v}");
    }
    let got = hits.load(Ordering::SeqCst);
    eprintln!("the 500-replica got {got} of 50 concurrent requests");
    assert!(got * 100 < 5 * 50, "the 500-replica got {got} of 50");
    bad.shutdown().await;
    for n in [a, honest] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_never_answers_costs_one_request_a_few_seconds_then_none() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let honest = start_mesh_fake(fake(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let silent = hostile(
        a.ticket(),
        MODEL,
        counting(&hits, std::future::pending::<StatusCode>),
    )
    .await;
    sees(&a, &[honest.node_id(), silent.node_id().to_string()], MODEL).await;

    // Eight requests at once. Both replicas are untried; whichever request is picked while the
    // honest one is busy goes to the silent one (an idle, untried host), which then has its one
    // trial running and gets no more. That request costs the head deadline, then the honest
    // replica serves it.
    let start = Instant::now();
    let body = chat(MODEL, false);
    let answers =
        futures::future::join_all((0..8).map(|_| a.post_json("/v1/chat/completions", &body))).await;
    let cost = start.elapsed();
    for (status, v) in &answers {
        assert_eq!((*status, text_of(v)), (200, "Hello, world!"), "{v}");
    }
    eprintln!("the silent replica cost {cost:?}");
    assert!(cost < SILENT_COSTS_AT_MOST, "took {cost:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the silent replica got one request"
    );

    // From now on it gets none: ten requests in a row, all answered by the honest replica.
    let start = Instant::now();
    for _ in 0..10 {
        let (status, v) = a
            .post_json("/v1/chat/completions", &chat(MODEL, false))
            .await;
        assert_eq!((status, text_of(&v)), (200, "Hello, world!"), "{v}");
    }
    eprintln!("ten requests after it took {:?}", start.elapsed());
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "no request reached it again"
    );
    silent.shutdown().await;
    for n in [a, honest] {
        n.node.shutdown().await;
    }
}

/// Replies "small" / "large" so the test sees which replica answered.
fn sized(ctx: u32, answer: &str) -> Arc<Scripted> {
    Arc::new(Scripted::with_script(MODEL, Script::Text(vec![answer.into()])).ctx(ctx))
}

fn long_chat(bytes: usize, stream: bool) -> Value {
    json!({
        "model": MODEL,
        "messages": user(&"word ".repeat(bytes / 5)),
        "max_tokens": 8,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prompt_too_long_for_a_small_context_is_served_by_a_larger_replica() {
    // A serves the model itself, with a small context; B has a large one; C is a client.
    let a = start_mesh_fake(sized(64, "small"), mesh_config(vec![]))
        .await
        .unwrap();
    let b = start_mesh_fake(sized(4096, "large"), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let c = start_mesh(None, mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    sees(&a, &[b.node_id()], MODEL).await;
    sees(&c, &[a.node_id(), b.node_id()], MODEL).await;

    // Short prompts fit everywhere; A answers its own.
    let (status, v) = a
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!((status, text_of(&v)), (200, "small"), "{v}");

    // 100 bytes: the byte estimate (about 40 tokens) says it fits in 64, the real count (one
    // token a byte in the fake) does not. A's own context refuses it: B serves it.
    let (status, v) = a
        .post_json("/v1/chat/completions", &long_chat(100, false))
        .await;
    assert_eq!((status, text_of(&v)), (200, "large"), "{v}");
    let data = SseReader::new(a.post("/v1/chat/completions", &long_chat(100, true)).await)
        .all()
        .await;
    let text: String = done_chunks(&data).iter().map(chunk_text).collect();
    assert_eq!(text, "large");

    // Through the client C, concurrently: both replicas get tried (each gets a first trial),
    // and A's context_length_exceeded sends the prompt on to B.
    let body = long_chat(100, false);
    let answers =
        futures::future::join_all((0..10).map(|_| c.post_json("/v1/chat/completions", &body)))
            .await;
    for (status, v) in &answers {
        assert_eq!((*status, text_of(v)), (200, "large"), "{v}");
    }
    // A prompt too long for every replica is refused as such.
    let (status, v) = c
        .post_json("/v1/chat/completions", &long_chat(6000, false))
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    for n in [c, b, a] {
        n.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_stalls_after_its_first_bytes_ends_with_an_error_chunk() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    // Sends a valid first chunk, then nothing: no tokens, no keep-alives.
    let app = axum::Router::new().fallback(|| async {
        let first = "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(first))])
            .chain(futures::stream::pending());
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(body))
            .unwrap()
    });
    let staller = hostile(a.ticket(), MODEL, app).await;
    sees(&a, &[staller.node_id().to_string()], MODEL).await;
    let start = Instant::now();
    let data = SseReader::new(a.post("/v1/chat/completions", &chat(MODEL, true)).await)
        .all()
        .await;
    eprintln!("the stalled stream ended after {:?}", start.elapsed());
    assert_eq!(data.len(), 2, "{data:?}");
    let last: Value = serde_json::from_str(&data[1]).unwrap();
    assert_eq!(last["error"]["code"], "generation_failed", "{last}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stalled"),
        "{last}"
    );
    staller.shutdown().await;
    a.node.shutdown().await;
}
