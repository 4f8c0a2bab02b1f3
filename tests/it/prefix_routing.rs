//! Prefix-aware routing through a client node: A is a client, B and C serve the same (fake)
//! model. A request sharing a long system prompt with an earlier one follows it to the replica
//! that got it, even when the other replica is less busy; a request with another prompt does not.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh::http::fake::{Script, Scripted};
use serde_json::json;

const JOIN_WITHIN: Duration = Duration::from_secs(20);
/// A forwarded request reaches its replica in milliseconds on loopback; generous for 2 cores.
const ARRIVE_WITHIN: Duration = Duration::from_secs(10);

/// A replica that holds every request open until the test finishes it, with room for long
/// prompts (the fake counts a token per byte).
fn stalling() -> Arc<Scripted> {
    Arc::new(
        Scripted::with_script(MODEL, Script::Stall)
            .ctx(1 << 16)
            .capacity(4, 8),
    )
}

/// The text of the last prompt `g` got (the fake's tokens are bytes).
fn last_prompt(g: &Scripted) -> String {
    g.last_request()
        .map(|r| r.prompt.iter().map(|&t| t as u8 as char).collect())
        .unwrap_or_default()
}

/// Sends a streaming chat request through `a` in the background (held open by the replica).
fn send(a: &TestNode, system: &str, question: &str) -> tokio::task::JoinHandle<()> {
    let body = json!({"model": MODEL, "stream": true, "max_tokens": 4, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": question}]});
    let (http, base) = (a.http.clone(), a.base.clone());
    tokio::spawn(async move {
        if let Ok(resp) = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
        {
            let _ = resp.bytes().await;
        }
    })
}

/// Which of `replicas` got the request whose prompt contains `marker` (waits for it).
async fn landed(replicas: &[&Arc<Scripted>; 2], marker: &str) -> usize {
    eventually(
        ARRIVE_WITHIN,
        &format!("'{marker}' to reach a replica"),
        || std::future::ready((0..2).find(|&i| last_prompt(replicas[i]).contains(marker))),
    )
    .await
}

/// Ends every held request on both replicas.
fn finish_all(replicas: &[&Arc<Scripted>; 2]) {
    for g in replicas {
        while g.finish_oldest() {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_sharing_a_long_system_prompt_follows_it_to_the_same_replica() {
    let (gb, gc) = (stalling(), stalling());
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let b = start_mesh_fake(gb.clone(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let c = start_mesh_fake(gc.clone(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let (b_id, c_id) = (b.node_id(), c.node_id());
    a.wait_peers(JOIN_WITHIN, "B and C serving the model", |p| {
        serves(p, &b_id, MODEL) && serves(p, &c_id, MODEL)
    })
    .await;
    let replicas = [&gb, &gc];

    // Both replicas answer once, so both are proven and only load and affinity decide.
    let warm1 = send(&a, "short", "warm one");
    let first = landed(&replicas, "warm one").await;
    let warm2 = send(&a, "short", "warm two");
    let second = landed(&replicas, "warm two").await;
    assert_ne!(first, second, "the second request went to the idle replica");
    finish_all(&replicas);
    warm1.await.unwrap();
    warm2.await.unwrap();

    let system = "You are the assistant of a lighthouse keeper; answer briefly. ".repeat(40);
    let turn1 = send(&a, &system, "question one");
    let holder = landed(&replicas, "question one").await;
    // The holder has a request in flight from A, the other none: load alone would pick the
    // other one.
    let turn2 = send(&a, &system, "question two");
    assert_eq!(
        landed(&replicas, "question two").await,
        holder,
        "the request with the same system prompt goes where that prompt is cached"
    );
    // Another long prompt has no such preference: it goes to the idle replica.
    let other = "Translate each sentence the user sends into French, keeping names. ".repeat(40);
    let unrelated = send(&a, &other, "question three");
    assert_ne!(landed(&replicas, "question three").await, holder);

    finish_all(&replicas);
    for t in [turn1, turn2, unrelated] {
        t.await.unwrap();
    }
    for n in [a, b, c] {
        n.node.shutdown().await;
    }
}
