//! `mesh --auto` and `mesh discover` as a user runs them, against a real relay on 127.0.0.1:
//! a client joins the mesh the documented factors prefer; a serving node that finds nothing
//! starts and publishes a public mesh that an `--auto --client` then joins and chats through;
//! an unreachable relay gives a clear error in bounded time.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mesh::discovery::nostr_io::{self, Query};
use mesh::discovery::publish::unix_now;
use serde_json::{json, Value};

/// A `mesh` child process, interrupted (Ctrl-C) and reaped on drop.
struct Proc {
    child: Child,
    lines: Vec<String>,
}

impl Proc {
    fn value(&self, label: &str) -> String {
        banner_value(&self.lines, label).unwrap_or_else(|| panic!("no {label}: {:?}", self.lines))
    }

    fn base(&self) -> String {
        self.value("OpenAI API").trim_end_matches("/v1").to_owned()
    }

    fn api(&self) -> String {
        self.value("management")
            .trim_end_matches("/api/status")
            .to_owned()
    }

    /// Ctrl-C, then the exit status within 20 s.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no exit after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.interrupt();
    }
}

fn home(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "mesh-auto-{tag}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn mesh(home: &PathBuf) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.env("MESH_HOME", home).env_remove("MESH_RELAYS");
    cmd
}

/// Starts `mesh ARGS` on free loopback ports and reads its startup lines (off the runtime).
async fn spawn(home: PathBuf, args: Vec<String>) -> Proc {
    tokio::task::spawn_blocking(move || {
        let mut child = mesh(&home)
            .args(&args)
            .args([
                "--port",
                "0",
                "--api-port",
                "0",
                "--mesh-bind",
                "127.0.0.1:0",
                "--ephemeral",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mesh starts");
        let lines = read_banner_lines(&mut child);
        let lines = lines.unwrap_or_else(|| panic!("mesh {args:?} ended before its banner"));
        Proc { child, lines }
    })
    .await
    .unwrap()
}

async fn wait_for_model(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: Vec<String> = match http.get(format!("{base}/v1/models")).send().await {
            Ok(r) => r.json::<Value>().await.ok().and_then(|v| {
                v["data"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|m| m["id"].as_str().map(String::from))
                        .collect()
                })
            }),
            Err(_) => None,
        }
        .unwrap_or_default();
        if ids.iter().any(|m| m == MODEL) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{MODEL} never listed at {base}: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn chat_text(http: &reqwest::Client, base: &str) -> String {
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": user("Say hi"), "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn published_node(relay: &TestRelay, region: &str) -> TestNode {
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    let node = start_node(
        Some(config()),
        cfg,
        Some(discovery(vec![relay.url.clone()], true, Some(region))),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while node.get_json(&format!("{}/api/publish", node.api)).await["state"]["published"] == 0 {
        assert!(Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node
}

fn mesh_id(node: &TestNode) -> String {
    node.node.mesh.as_ref().unwrap().mesh_id().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_client_joins_the_mesh_the_factors_prefer_and_chats_through_it() {
    let relay = start_relay().await;
    let eu = published_node(&relay, "eu").await;
    let us = published_node(&relay, "us").await;
    let dir = home("client");
    let http = http_client();

    // Equal meshes but for the region: the client in `us` joins the `us` mesh.
    let args = |region: &str| {
        [
            "--auto",
            "--client",
            "--relay",
            relay.url.as_str(),
            "--region",
            region,
        ]
        .map(String::from)
        .to_vec()
    };
    let mut a = spawn(dir.clone(), args("us")).await;
    let joining = a
        .lines
        .iter()
        .find(|l| l.starts_with("auto: joining"))
        .expect("a join line");
    assert!(joining.contains(&mesh_id(&us)), "{:?}", a.lines);
    assert!(
        a.lines
            .iter()
            .any(|l| l.contains("region") && l.contains("+15.00")),
        "{:?}",
        a.lines
    );
    let status: Value = http
        .get(format!("{}/api/status", a.api()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["mesh_id"], mesh_id(&us));
    wait_for_model(&http, &a.base()).await;
    assert!(!chat_text(&http, &a.base()).await.is_empty());
    assert!(a.interrupt().success());

    // Next time the last mesh (`us`) gets +10, but region `eu` is worth +15: it joins `eu`.
    let mut b = spawn(dir.clone(), args("eu")).await;
    let joining = b
        .lines
        .iter()
        .find(|l| l.starts_with("auto: joining"))
        .expect("a join line");
    assert!(joining.contains(&mesh_id(&eu)), "{:?}", b.lines);
    assert!(b.interrupt().success());
    eu.node.shutdown().await;
    us.node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_node_starts_a_public_mesh_when_none_fits_and_an_auto_client_joins_it() {
    let relay = start_relay().await;
    let http = http_client();
    let dir = home("host");
    let model = model_path().to_string_lossy().into_owned();
    let host_args = [
        "--auto",
        "--relay",
        relay.url.as_str(),
        "--model",
        &model,
        "--threads",
        "1",
        "--ctx",
        "512",
    ];
    let host = spawn(dir.join("host"), host_args.map(String::from).to_vec()).await;
    assert!(
        host.lines
            .iter()
            .any(|l| l.contains("no mesh fits; starting a new public mesh")),
        "{:?}",
        host.lines
    );
    // The offer is republished as soon as the model is loaded: it then lists the model.
    let deadline = Instant::now() + Duration::from_secs(60);
    let offer = loop {
        let found =
            nostr_io::fetch_offers(&[relay.url.clone()], &Query::default(), unix_now()).await;
        if let Some(o) = found
            .offers
            .into_iter()
            .find(|o| !o.content.models.is_empty())
        {
            break o;
        }
        assert!(Instant::now() < deadline, "no offer with the model");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(offer.content.models[0].name, MODEL);
    assert!(offer.content.public);

    let client_args = ["--auto", "--client", "--relay", relay.url.as_str()];
    let client = spawn(dir.join("client"), client_args.map(String::from).to_vec()).await;
    let joining = client
        .lines
        .iter()
        .find(|l| l.starts_with("auto: joining"))
        .expect("a join line");
    assert!(
        joining.contains(&offer.mesh_id.to_string()),
        "{:?}",
        client.lines
    );
    wait_for_model(&http, &client.base()).await;
    assert!(!chat_text(&http, &client.base()).await.is_empty());
    drop(client);
    drop(host);
    // The host deleted its offer on Ctrl-C.
    let after = nostr_io::fetch_offers(&[relay.url.clone()], &Query::default(), unix_now()).await;
    assert!(after.offers.is_empty(), "{:?}", after.offers);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_prints_offers_and_fails_clearly_when_no_relay_answers() {
    let relay = start_relay().await;
    let node = published_node(&relay, "eu").await;
    let dir = home("discover");
    let url = relay.url.to_string();
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            mesh(&dir)
                .args(["discover", "--json", "--relay", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["offers"][0]["mesh_id"], mesh_id(&node));
    assert_eq!(v["offers"][0]["offer"]["models"][0]["name"], MODEL);
    assert!(v["offers"][0]["score"].as_f64().unwrap() > 0.0);

    // Nothing listens on this port: a clear error, well within the connect timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        mesh(&dir)
            .args(["discover", "--relay", &format!("ws://127.0.0.1:{closed}")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 of 1 relays did not answer"), "{err}");
    assert!(err.contains("no relay answered"), "{err}");
    node.node.shutdown().await;
}
