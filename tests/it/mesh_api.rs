//! The management API and CLI of a mesh node: status fields, the peer table, joining by ticket
//! at runtime, the event stream, and `mesh status` / `mesh peers`.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_peers_events_join_and_the_cli() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let s = a.status().await;
    assert_eq!(s["node_id"], a.node_id().as_str());
    assert_eq!(s["role"], "client");
    assert_eq!(s["mesh_public"], false);
    // The ticket (with a private mesh's secret) is on its own loopback-only route.
    assert!(s.get("ticket").is_none(), "{s}");
    let t = a.get_json(&format!("{}/api/ticket", a.api)).await;
    assert!(t["ticket"].as_str().unwrap().starts_with("mesh1"));
    assert_eq!(t["ticket"], a.ticket().encode().as_str());
    assert!(s["mesh_id"].as_str().unwrap().len() == 32);
    assert_eq!(s["peers"], json!([]));

    // Events: a status snapshot first, then the join of B and its model.
    let events = a
        .http
        .get(format!("{}/api/events", a.api))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(events);
    let first: Value = serde_json::from_str(&events.next().await.unwrap()).unwrap();
    assert_eq!(first["node_id"], a.node_id().as_str());

    // B serves the scripted fake: what is checked here is the management API, not a model.
    let b = start_mesh_fake(fake(), mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    let mut seen = Vec::new();
    while !(seen.contains(&"peer_joined".to_owned()) && seen.contains(&"model_added".to_owned())) {
        let ev = tokio::time::timeout(WITHIN, events.next())
            .await
            .expect("events arrive")
            .expect("stream open");
        let ev: Value = serde_json::from_str(&ev).unwrap();
        if ev["type"] == "peer_joined" {
            assert_eq!(ev["node_id"], b_id.as_str());
        }
        if ev["type"] == "model_added" {
            assert_eq!(ev["model"], MODEL);
        }
        seen.push(ev["type"].as_str().unwrap().to_owned());
    }
    let peers = a
        .wait_peers(WITHIN, "B with a connection", |p| {
            p.len() == 1 && p[0]["connection"] == "direct"
        })
        .await;
    assert_eq!(peers[0]["role"], "host");
    assert!(peers[0]["rtt_ms"].as_f64().is_some());
    assert_eq!(a.status().await["peers"].as_array().unwrap().len(), 1);

    // Join at runtime: C starts alone in the same mesh (via A), then joins B's ticket too.
    let c = start_mesh(None, mesh_config(vec![a.ticket()]))
        .await
        .unwrap();
    let resp = c
        .http
        .post(format!("{}/api/join", c.api))
        .json(&json!({"ticket": b.ticket().encode()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    c.wait_peers(WITHIN, "B from C", |p| serves(p, &b_id, MODEL))
        .await;
    // A ticket of another mesh and garbage are refused with a reason.
    let other = start_mesh(None, mesh_config(vec![])).await.unwrap();
    for (ticket, code) in [(other.ticket().encode(), 409), ("garbage".to_owned(), 400)] {
        let resp = c
            .http
            .post(format!("{}/api/join", c.api))
            .json(&json!({ "ticket": ticket }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), code);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().is_some(), "{body}");
    }

    // The CLI reads the same API.
    let home = temp_home();
    let out = mesh_command(home.path())
        .args(["peers", "--api", &a.api])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(
        table.contains(&b_id[..10]) && table.contains("direct"),
        "{table}"
    );
    let out = mesh_command(home.path())
        .args(["status", "--json", "--api", &a.api])
        .output()
        .unwrap();
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["node_id"], a.node_id().as_str());

    for n in [other, c, b, a] {
        n.node.shutdown().await;
    }
}
