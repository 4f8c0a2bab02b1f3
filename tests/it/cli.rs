//! The `mesh` binary as a user runs it: startup output, the official `openai` Python client,
//! Ctrl-C during a stream, clear errors for a missing model or a busy port, and the decode speed
//! a served model reached kept for `mesh models --fits`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{
    mesh_command, model_path, serve_test_model, temp_home, MeshProcess, SseReader, MODEL,
};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A `mesh serve` process and the base URL of its OpenAI API; the home is removed on drop.
struct Served {
    proc: MeshProcess,
    base: String,
    _home: TempDir,
}

/// The binary, with its home in a temporary directory (never the user's ~/.mesh).
fn mesh(home: &TempDir) -> Command {
    mesh_command(home.path())
}

/// Starts `mesh serve` on free ports and reads the API address from its startup lines.
fn serve() -> Served {
    let home = temp_home();
    let cmd = serve_test_model(home.path());
    let proc = MeshProcess::start(cmd)
        .unwrap_or_else(|lines| panic!("no startup output naming the API address: {lines:?}"));
    let base = proc.base();
    Served {
        proc,
        base,
        _home: home,
    }
}

#[test]
fn official_openai_python_client_works_streaming_and_not() {
    let s = serve();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/it/openai_client.py"
        ))
        .arg(format!("{}/v1", s.base))
        .arg(MODEL)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client failed (install it with scripts/setup.sh):\n{}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("openai client: ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_inflight_streams_with_an_error_chunk_and_exits_cleanly() {
    let mut s = serve();
    let http = common::http_client();
    let body = json!({"model": MODEL, "prompt": "Tell a long story.", "max_tokens": 100000, "ignore_eos": true, "stream": true});
    let resp = http
        .post(format!("{}/v1/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(resp);
    sse.next().await.expect("stream running");
    s.proc.signal(libc::SIGINT);
    let rest = tokio::time::timeout(Duration::from_secs(20), sse.all())
        .await
        .expect("stream ends after Ctrl-C");
    let last: Value = serde_json::from_str(rest.last().expect("a final chunk"))
        .expect("last chunk is JSON, not [DONE]");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{last}"
    );
    let status = s
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("mesh exits after Ctrl-C");
    assert!(status.success(), "exit status {status}");
}

/// A single-stream decode `mesh serve` ran is kept in the home's `machine.json` (model, device,
/// tok/s, weights read a second), survives the bandwidth measurement `mesh models --fits` makes
/// there, and the table's footer names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_decode_is_kept_for_the_speed_estimate() {
    let s = serve();
    let file = s._home.path().join("machine.json");
    let read = || -> Value {
        std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    assert!(read()["decode"].as_array().is_none_or(|d| d.is_empty()));
    let body = json!({"model": MODEL, "prompt": "Tell a long story.", "max_tokens": 80,
        "ignore_eos": true, "temperature": 0});
    let url = format!("{}/v1/completions", s.base);
    let answer = common::post_value(&common::http_client(), &url, &body).await;
    assert_eq!(answer["usage"]["completion_tokens"], 80, "{answer}");
    let kept = common::eventually_value(
        Duration::from_secs(10),
        "the decode kept in machine.json",
        || async { read() },
        |doc| doc["decode"][0]["tokens_per_sec"].as_f64().is_some(),
    )
    .await;
    let d = &kept["decode"][0];
    assert_eq!(d["device"], "cpu", "{kept}");
    assert_eq!(d["model"], MODEL);
    let tps = d["tokens_per_sec"].as_f64().unwrap();
    assert!(tps > 1.0 && tps < 10_000.0, "{tps}");
    let weights = std::fs::metadata(model_path()).unwrap().len() as f64;
    let per_sec = d["weights_per_sec"].as_f64().unwrap();
    assert!(
        (per_sec - tps * weights).abs() < 1.0,
        "{per_sec} vs {tps} × {weights}"
    );

    let out = mesh(&s._home).args(["models", "--fits"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Named whether it raised the estimate (tests run the engine on one thread) or not.
    let footer = stdout.lines().last().unwrap_or_default();
    assert!(
        footer.contains("the fastest decode `mesh serve` measured here")
            && footer.contains(&format!("{MODEL} at ")),
        "{stdout}"
    );
    let after = read();
    assert!(after["memory_bandwidth"].as_f64().unwrap() > 0.0, "{after}");
    assert_eq!(after["decode"], kept["decode"]);
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let home = temp_home();
    let out = mesh(&home)
        .args([
            "serve",
            "--model",
            "/nonexistent/model.gguf",
            "--port",
            "0",
            "--api-port",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let home = temp_home();
    let out = mesh(&home)
        .args(["serve", "--model"])
        .arg(model_path())
        .args(["--port", &port, "--api-port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
}
