//! The `mesh models` / `mesh download` commands end to end: the real binary against the fake
//! hub, with HF_HOME in a temp dir.

use crate::common::hub as common_hub;
use crate::common::{eventually, mesh_command, MeshProcess};

use std::path::Path;
use std::process::Output;

use common_hub::{synthetic, FakeHub};
use tempfile::TempDir;

const REPO: &str = "org/tiny-GGUF";
const FILE: &str = "tiny.Q4_0.gguf";

/// Runs `mesh args…` with a clean Hugging Face environment rooted at `home`.
async fn mesh(home: &Path, args: &[&str]) -> Output {
    let mut cmd = mesh_command(home);
    cmd.args(args).env("HOME", home).env("RUST_LOG", "warn");
    tokio::task::spawn_blocking(move || cmd.output().expect("run mesh"))
        .await
        .unwrap()
}

fn write_catalog(dir: &Path, size: usize) -> String {
    let path = dir.join("catalog.toml");
    std::fs::write(
        &path,
        format!(
            "[[model]]\nname = \"Tiny-Q4_0\"\nrepo = \"{REPO}\"\nfiles = [\"{FILE}\"]\nsize = {size}\n\
             params = 1000000\nquant = \"Q4_0\"\nfamily = \"tiny\"\ncontext = 2048\nlicense = \"mit\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn download_json_models_list_and_rm() {
    let hub = FakeHub::start().await;
    let content = synthetic(250_000, 1);
    let sha = hub.add_file(REPO, FILE, content.clone());
    let home = TempDir::new().unwrap();
    let catalog = write_catalog(home.path(), content.len());
    let endpoint = hub.url();

    // Download by catalog name with JSON progress.
    let out = mesh(
        home.path(),
        &[
            "download",
            "Tiny-Q4_0",
            "--json",
            "--catalog",
            &catalog,
            "--hf-endpoint",
            &endpoint,
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "start");
    assert!(events
        .iter()
        .any(|e| e["event"] == "verified" && e["sha256"] == sha.as_str()));
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    let path = done["path"].as_str().unwrap();
    assert!(
        path.starts_with(
            home.path()
                .join("hf/hub/models--org--tiny-GGUF/snapshots")
                .to_str()
                .unwrap()
        ),
        "{path}"
    );
    assert_eq!(std::fs::read(path).unwrap(), content);

    // `models --json` shows it installed.
    let out = mesh(home.path(), &["models", "--json", "--catalog", &catalog]).await;
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["name"], "Tiny-Q4_0");
    assert_eq!(rows[0]["installed"], true);
    assert_eq!(rows[0]["fits"], true);

    // `models show` names the installed path.
    let out = mesh(
        home.path(),
        &["models", "show", "Tiny-Q4_0", "--catalog", &catalog],
    )
    .await;
    assert!(stdout(&out).contains(path), "{}", stdout(&out));

    // `models rm` deletes the blob; the model is no longer installed.
    let out = mesh(
        home.path(),
        &["models", "rm", "Tiny-Q4_0", "--catalog", &catalog],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home
        .path()
        .join("hf/hub/models--org--tiny-GGUF/blobs")
        .join(&sha)
        .exists());
    let out = mesh(home.path(), &["models", "--json", "--catalog", &catalog]).await;
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(rows[0]["installed"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_env_and_unknown_names_fail_with_clear_messages() {
    let hub = FakeHub::start().await;
    let home = TempDir::new().unwrap();
    let endpoint = hub.url();

    let out = mesh(
        home.path(),
        &["download", "Qwen3-8B-Q4K", "--hf-endpoint", &endpoint],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean Qwen3-8B-Q4_K_M"), "{err}");

    let out = mesh(
        home.path(),
        &[
            "download",
            "SmolLM2-135M-Instruct-Q4_1",
            "--offline",
            "--hf-endpoint",
            &endpoint,
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not in the cache"), "{err}");
    assert!(hub.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn models_table_lists_the_whole_embedded_catalog() {
    let home = TempDir::new().unwrap();
    let out = mesh(home.path(), &["models", "--json"]).await;
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(rows.len() >= 30);
    assert!(rows.iter().all(|r| r["installed"] == false));
    let out = mesh(home.path(), &["models"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("SmolLM2-135M-Instruct-Q4_1") && text.contains("INSTALLED"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_download_resumes_from_the_bytes_on_disk() {
    let hub = FakeHub::start().await;
    let content = synthetic(2_000_000, 2);
    let sha = hub.add_file(REPO, FILE, content.clone());
    hub.state
        .throttle
        .store(20_000, std::sync::atomic::Ordering::SeqCst); // ~2 MB/s
    let home = TempDir::new().unwrap();
    let endpoint = hub.url();
    let spec = format!("{REPO}/{FILE}");
    let partial = home.path().join(format!(
        "hf/hub/models--org--tiny-GGUF/blobs/{sha}.incomplete"
    ));

    // Start a download and kill the process (SIGKILL: no cleanup) once some bytes are on disk.
    let mut cmd = mesh_command(home.path());
    cmd.args(["download", &spec, "--hf-endpoint", &endpoint]);
    let mut child = MeshProcess::spawn(cmd);
    eventually(
        std::time::Duration::from_secs(20),
        "download progress (300 kB on disk)",
        || async { std::fs::metadata(&partial).map_or(0, |m| m.len()) >= 300_000 },
    )
    .await;
    child.kill(); // SIGKILL: no cleanup
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(
        kept >= 300_000 && kept < content.len() as u64,
        "kept {kept}"
    );

    // Run again: it asks only for the rest and ends with the right bytes.
    hub.state
        .throttle
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let out = mesh(
        home.path(),
        &["download", &spec, "--hf-endpoint", &endpoint],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = stdout(&out).trim().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let gets = hub.blob_gets();
    let last = gets.last().unwrap().range.clone().unwrap_or_default();
    let resumed_at: u64 = last
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap_or(0);
    assert!(
        resumed_at >= kept,
        "second run asked for {last:?}, {kept} bytes were on disk"
    );
    assert!(!partial.exists());
}
