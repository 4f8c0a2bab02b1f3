//! The `mesh` binary as a user runs it: startup output, the official `openai` Python client,
//! Ctrl-C during a stream, and clear errors for a missing model or a busy port.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{model_path, SseReader, MODEL};
use serde_json::{json, Value};

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, with its home in a temporary directory (never the user's ~/.mesh).
fn mesh() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.env(
        "MESH_HOME",
        std::env::temp_dir().join(format!("mesh-cli-test-{}", std::process::id())),
    );
    cmd
}

/// Starts `mesh serve` on free ports and reads the API address from its startup lines.
fn serve() -> Served {
    let mut child = mesh()
        .args(["serve", "--model"])
        .arg(model_path())
        .args([
            "--port",
            "0",
            "--api-port",
            "0",
            "--ctx",
            "256",
            "--threads",
            "1",
            "--parallel",
            "2",
            "--ephemeral",
            "--mesh-bind",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mesh starts");
    let base = common::read_banner(&mut child)
        .expect("startup output names the OpenAI API address")
        .trim_end_matches("/v1")
        .to_owned();
    Served { child, base }
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
    let pid = s.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
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
    let start = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "mesh did not exit after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let out = mesh()
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
    let out = mesh()
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
