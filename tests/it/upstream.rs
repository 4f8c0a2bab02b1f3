//! `mesh serve --upstream URL`: an OpenAI-compatible engine already running (here a second
//! `mesh serve` with the test model, meshed with nobody) becomes a provider of node B; client
//! node C, in B's mesh, chats with its model through the mesh, streaming and not; when the
//! engine stops, its model leaves B's and C's model lists and routing, and comes back when it
//! answers again.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// How long the mesh may take to show the upstream's model, or to drop it: polls every 2 s,
/// two failed polls withdraw, then one announcement (the bound, generous for a loaded
/// 2-core machine).
const WITHIN: Duration = Duration::from_secs(40);

fn serve_cmd(home: &tempfile::TempDir, args: &[&str]) -> std::process::Command {
    serve_cmd_on(home, "0", args)
}

/// `mesh serve ARGS` with its OpenAI API on `port`.
fn serve_cmd_on(home: &tempfile::TempDir, port: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = mesh_command(home.path());
    cmd.arg("serve").args(args).args(["--port", port]).args([
        "--api-port",
        "0",
        "--ephemeral",
        "--mesh-bind",
        "127.0.0.1:0",
    ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_engine_serves_through_the_mesh_and_leaves_routing_when_it_stops() {
    let (u_home, b_home, c_home) = (temp_home(), temp_home(), temp_home());
    let model = model_path().to_string_lossy().into_owned();
    let mut u = MeshProcess::start_async(serve_cmd(
        &u_home,
        &[
            "--model",
            &model,
            "--ctx",
            "256",
            "--threads",
            "1",
            "--parallel",
            "2",
        ],
    ))
    .await;
    let u_base = u.base();
    let b = MeshProcess::start_async(serve_cmd(&b_home, &["--upstream", &u_base])).await;
    let ticket = b.value("ticket");
    let c = MeshProcess::start_async(serve_cmd(&c_home, &["--client", "--join", &ticket])).await;
    let http = http_client();
    let (b_base, c_base) = (b.base(), c.base());

    eventually_value(
        WITHIN,
        "the upstream's model on C",
        || model_ids(&http, &c_base),
        |m| m.iter().any(|m| m == MODEL),
    )
    .await;
    assert_eq!(model_ids(&http, &b_base).await, [MODEL]);

    let chat = |stream: bool| {
        json!({"model": MODEL, "messages": user("Say hi."), "max_tokens": 8,
               "temperature": 0, "stream": stream})
    };
    let answer: Value = http
        .post(format!("{c_base}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = answer["choices"][0]["message"]["content"].as_str();
    assert!(text.is_some_and(|t| !t.is_empty()), "{answer}");
    assert_eq!(answer["model"], MODEL);
    let resp = http
        .post(format!("{c_base}/v1/chat/completions"))
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    let data = SseReader::new(resp).all().await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let streamed: String = done_chunks(&data).iter().map(chunk_text).collect();
    assert_eq!(Some(streamed.as_str()), text, "the same answer, streamed");

    u.kill();
    for (node, base) in [("B", &b_base), ("C", &c_base)] {
        eventually_value(
            WITHIN,
            format!("the stopped upstream's model gone from {node}"),
            || model_ids(&http, base),
            |m| m.is_empty(),
        )
        .await;
    }
    let resp = http
        .post(format!("{c_base}/v1/chat/completions"))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert!(
        [404, 503].contains(&resp.status().as_u16()),
        "no route to a stopped upstream: {}",
        resp.status()
    );

    // The engine answers again (same port): its model comes back.
    let port = u_base.rsplit(':').next().unwrap().to_owned();
    let _u = MeshProcess::start_async(serve_cmd_on(
        &u_home,
        &port,
        &[
            "--model",
            &model,
            "--ctx",
            "256",
            "--threads",
            "1",
            "--parallel",
            "2",
        ],
    ))
    .await;
    eventually_value(
        WITHIN,
        "the restarted upstream's model back on C",
        || model_ids(&http, &c_base),
        |m| m.iter().any(|m| m == MODEL),
    )
    .await;
}
