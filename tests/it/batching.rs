//! Continuous batching, proved from the outside: concurrent streams interleave, a client that
//! goes away frees its slot, and a full queue answers 503 at once.

use crate::common;

use std::time::{Duration, Instant};

use common::{chunk_text, config, start, SseReader, MODEL};
use mesh::engine::EngineConfig;
use serde_json::{json, Value};

fn long_stream(tokens: u32) -> Value {
    json!({"model": MODEL, "prompt": "Write a long story about the sea.", "max_tokens": tokens,
           "ignore_eos": true, "temperature": 0.7, "stream": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_streams_interleave() {
    let n = start(EngineConfig {
        parallel: 8,
        threads: Some(2),
        ..config()
    })
    .await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, base) = (n.http.clone(), n.base.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{base}/v1/completions"))
                    .json(&long_stream(24))
                    .send()
                    .await
                    .unwrap();
                let mut sse = SseReader::new(resp);
                let (mut first, mut tokens) = (None, 0);
                while let Some(d) = sse.next().await {
                    if d == "[DONE]" {
                        break;
                    }
                    let chunk: Value = serde_json::from_str(&d).unwrap();
                    if !chunk_text(&chunk).is_empty() {
                        first.get_or_insert_with(|| t0.elapsed());
                        tokens += 1;
                    }
                }
                (first.expect("some text"), t0.elapsed(), tokens)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let earliest_end = results.iter().map(|r| r.1).min().unwrap();
    for (first, end, tokens) in &results {
        assert!(
            *tokens >= 20,
            "each stream completes ({tokens} text chunks)"
        );
        // Served one after another, the last streams could not start before the first ended.
        assert!(
            first < &earliest_end,
            "a stream started at {first:?}, after another finished at {earliest_end:?}"
        );
        assert!(first < end);
    }
    let status = n.status().await;
    assert_eq!(status["requests_served"], 8);
    assert_eq!(status["slots"]["busy"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_mid_stream_frees_the_slot() {
    let n = start(EngineConfig {
        parallel: 1,
        ..config()
    })
    .await;
    let resp = n.post("/v1/completions", &long_stream(100_000)).await;
    let mut sse = SseReader::new(resp);
    for _ in 0..3 {
        sse.next().await.expect("chunks flow");
    }
    let busy = n.status().await;
    assert_eq!(busy["slots"]["busy"], 1);
    drop(sse); // client goes away
    n.wait_status(Duration::from_secs(10), "slot freed", |s| {
        s["slots"]["busy"] == 0
    })
    .await;
    // The only slot serves the next request.
    let (status, v) = n
        .post_json(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "Hi", "max_tokens": 3}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let generated = n.status().await["tokens_generated"].as_u64().unwrap();
    assert!(
        generated < 2000,
        "the abandoned stream stopped generating ({generated} tokens)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_at_once_and_queued_requests_run_later() {
    let n = start(EngineConfig {
        parallel: 1,
        queue: 1,
        ..config()
    })
    .await;
    // Occupy the slot, then the one queue place.
    let mut running = SseReader::new(n.post("/v1/completions", &long_stream(100_000)).await);
    running.next().await.unwrap();
    let queued = {
        let (http, base) = (n.http.clone(), n.base.clone());
        tokio::spawn(async move {
            let body = json!({"model": MODEL, "prompt": "Hi", "max_tokens": 2});
            let r = http
                .post(format!("{base}/v1/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        })
    };
    n.wait_status(Duration::from_secs(10), "one queued request", |s| {
        s["queue"]["length"] == 1
    })
    .await;
    let (status, v) = n
        .post_json("/v1/completions", &json!({"model": MODEL, "prompt": "Hi"}))
        .await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overloaded"),
        "{v}"
    );
    // Freeing the slot lets the queued request through.
    drop(running);
    let (status, v) = queued.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 2);
}
