//! Split serving over llama.cpp's RPC backend through `mesh/rpc/1`: the test model split over
//! two local `mesh serve` processes (`--split 2` and `--split-worker`) answers exactly as the
//! whole model does (greedy), and a worker killed mid-stream ends the stream with an error
//! chunk, after which the model leaves routing (503).

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Time for a split to come up on a loaded 2-core machine: both children start, the model
/// loads and its layers travel to the worker.
pub(crate) const SPLIT_UP: Duration = Duration::from_secs(120);
const NAME: &str = "split-model";

/// Common flags of a test `mesh serve` on loopback.
pub(crate) fn serve(home: &std::path::Path) -> std::process::Command {
    let mut cmd = mesh_command(home);
    cmd.args(["serve", "--port", "0", "--api-port", "0", "--ephemeral"])
        .args(["--mesh-bind", "127.0.0.1:0", "--threads", "1"]);
    cmd
}

/// A worker (`--split-worker`, no model) and a host splitting the test model over both;
/// returns them once the host's API lists the model.
async fn split_pair(ctx: u32) -> (MeshProcess, MeshProcess, tempfile::TempDir) {
    let home = temp_home();
    let mut w = serve(&home.path().join("w"));
    w.arg("--split-worker");
    let worker = MeshProcess::start_async(w).await;
    let ticket = worker.value("ticket");
    let mut h = serve(&home.path().join("h"));
    h.arg("--model")
        .arg(model_path())
        .args(["--model-name", NAME, "--split", "2", "--parallel", "1"])
        .args(["--ctx", &ctx.to_string(), "--join", &ticket]);
    let host = MeshProcess::start_async(h).await;
    let http = http_client();
    let models = format!("{}/v1/models", host.base());
    eventually(SPLIT_UP, "the split model to be served", || {
        let (http, models) = (http.clone(), models.clone());
        async move {
            let v = get_json(&http, &models).await;
            v["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|m| m["id"] == NAME))
        }
    })
    .await;
    (worker, host, home)
}

pub(crate) fn greedy(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": user("List the planets of the solar system, one per line."),
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

pub(crate) async fn answer(http: &reqwest::Client, base: &str, body: &Value) -> String {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("JSON");
    v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_split_over_two_nodes_answers_as_the_whole_model_does() {
    let whole = start(config()).await;
    let expected = answer(&whole.http, &whole.base, &greedy(MODEL, 48, false)).await;
    whole.node.shutdown().await;
    assert!(!expected.is_empty());

    let (worker, host, _home) = split_pair(512).await;
    let http = http_client();
    let got = answer(&http, &host.base(), &greedy(NAME, 48, false)).await;
    assert_eq!(got, expected, "split and whole greedy answers differ");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_ends_the_stream_with_an_error_and_the_model_leaves_routing() {
    let (mut worker, host, _home) = split_pair(1024).await;
    let http = http_client();
    let url = format!("{}/v1/chat/completions", host.base());
    let resp = http
        .post(&url)
        .json(&greedy(NAME, 900, true))
        .send()
        .await
        .expect("request sent");
    let mut sse = SseReader::new(resp);
    let first = sse.next().await.expect("a first chunk");
    assert!(!first.contains("\"error\""), "{first}");
    worker.kill();
    let killed = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(60), sse.all())
        .await
        .expect("the stream ends after the worker died");
    eprintln!(
        "stream ended {:?} after the kill, {} chunks after the first",
        killed.elapsed(),
        rest.len()
    );
    let last = rest.last().expect("chunks after the kill");
    assert!(
        last.contains("\"error\"") && !rest.iter().any(|d| d == "[DONE]"),
        "the stream should end with an error chunk, not [DONE]: {:?}",
        &rest[rest.len().saturating_sub(3)..]
    );
    // The model leaves routing: no member is left to lend memory, so requests get 503.
    let models = format!("{}/v1/models", host.base());
    eventually(
        Duration::from_secs(30),
        "the split model to leave routing",
        || {
            let (http, models) = (http.clone(), models.clone());
            async move {
                let v = get_json(&http, &models).await;
                !v["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|m| m["id"] == NAME))
            }
        },
    )
    .await;
    let r = http
        .post(&url)
        .json(&greedy(NAME, 8, false))
        .send()
        .await
        .expect("request sent");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON error");
    assert_eq!(status, 503, "{body}");
    // A clear reason: no node serves it now (not "not found", not an engine failure).
    assert_eq!(body["error"]["code"], "model_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("serves model"), "{body}");
}
