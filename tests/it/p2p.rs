//! Issue 15 from the shell, with real `mesh` processes on loopback and a local Nostr relay
//! (`mesh relay`'s code, in process): join codes (a code joins a private mesh; a wrong code
//! fails and burns it; used-up and expired codes are refused, each with its own error),
//! messages (to one member, to all, on `/api/events`), `mesh leave`, `mesh logs`, `mesh chat`.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn local_relay() -> mesh::relay::RunningRelay {
    mesh::relay::start(mesh::relay::RelayOptions {
        port: 0,
        ..Default::default()
    })
    .await
    .expect("relay starts")
}

/// `mesh serve --client` (or with `extra` flags) on free loopback ports, using `relay`.
fn serve(home: &Path, relay: &str, extra: &[&str]) -> Command {
    let mut cmd = mesh_command(home);
    cmd.env("MESH_OFFLINE", "true");
    cmd.args(["serve", "--ephemeral", "--port", "0", "--api-port", "0"])
        .args(["--mesh-bind", "127.0.0.1:0", "--relay", relay])
        .args(extra);
    if !extra.contains(&"--model") {
        cmd.arg("--client");
    }
    cmd
}

/// Runs `mesh ARGS` to its end (off the runtime).
async fn run(home: &Path, args: &[&str]) -> Output {
    let mut cmd = mesh_command(home);
    cmd.env("MESH_OFFLINE", "true").args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
        .await
        .expect("run task")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn peer_ids(api: &str) -> Vec<String> {
    let v = get_json(&http_client(), &format!("{api}/api/peers")).await;
    v["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most 30 s) until `api`'s peer list does (or does not) hold `id`.
async fn wait_peer(api: &str, id: &str, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer_ids(api).await.iter().any(|p| p == id) != present {
        assert!(
            Instant::now() < deadline,
            "{api}: {id} present={} never became {present}",
            !present
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn invite(home: &Path, api: &str, extra: &[&str]) -> String {
    let out = run(home, &[&["invite", "--api", api], extra].concat()).await;
    assert!(out.status.success(), "invite: {}", stderr(&out));
    let code = stdout(&out).trim().to_string();
    assert!(
        mesh::discovery::invite::Code::parse(&code).is_ok(),
        "{code:?}"
    );
    code
}

/// The same code with its last word changed: a wrong guess on the right channel.
fn wrong(code: &str) -> String {
    let mut parts: Vec<&str> = code.split('-').collect();
    let last = parts.pop().unwrap();
    let other = if last == "zoo" { "zone" } else { "zoo" };
    format!("{}-{other}", parts.join("-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_code_joins_a_private_mesh() {
    let relay = local_relay().await;
    let url = relay.url().to_string();
    let (home_a, home_b) = (temp_home(), temp_home());
    let a = MeshProcess::start_async(serve(home_a.path(), &url, &[])).await;
    let code = invite(home_a.path(), &a.api(), &[]).await;
    let b = MeshProcess::start_async(serve(home_b.path(), &url, &["--join", &code])).await;
    assert_eq!(a.value("mesh"), b.value("mesh"), "same mesh");
    wait_peer(&a.api(), &b.value("node id"), true).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_fails_and_burns_it_and_used_up_and_expired_codes_are_refused() {
    let relay = local_relay().await;
    let url = relay.url().to_string();
    let home = temp_home();
    let a = MeshProcess::start_async(serve(home.path(), &url, &[])).await;
    let api = a.api();
    let ticket = a.value("ticket");

    // A wrong guess: refused as wrong, and then the right code is burned too.
    let code = invite(home.path(), &api, &[]).await;
    let out = run(home.path(), &["join", &wrong(&code), "--relay", &url]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong join code"), "{}", stderr(&out));
    let out = run(home.path(), &["join", &code, "--relay", &url]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("burned"), "{}", stderr(&out));

    // Used once, then used up.
    let code = invite(home.path(), &api, &["--uses", "1"]).await;
    let out = run(home.path(), &["join", &code, "--relay", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        ticket,
        "the code gives the mesh's ticket"
    );
    let out = run(home.path(), &["join", &code, "--relay", &url]).await;
    assert!(stderr(&out).contains("used up"), "{}", stderr(&out));

    // Expired.
    let code = invite(home.path(), &api, &["--ttl", "1s"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = run(home.path(), &["join", &code, "--relay", &url]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    relay.shutdown().await;
}

/// Three nodes of one mesh (B and C joined A): their processes.
async fn three(url: &str, homes: &[tempfile::TempDir; 3]) -> [MeshProcess; 3] {
    let a = MeshProcess::start_async(serve(homes[0].path(), url, &["--name", "node-a"])).await;
    let t = a.value("ticket");
    let b = MeshProcess::start_async(serve(
        homes[1].path(),
        url,
        &["--join", &t, "--name", "node-b"],
    ))
    .await;
    let c = MeshProcess::start_async(serve(
        homes[2].path(),
        url,
        &["--join", &t, "--name", "node-c"],
    ))
    .await;
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c), (&b, &a), (&c, &a), (&c, &b)] {
        wait_peer(&x.api(), &y.value("node id"), true).await;
    }
    [a, b, c]
}

async fn inbox(home: &Path, api: &str) -> Vec<Value> {
    let out = run(home, &["inbox", "--json", "--api", api]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_one_member_and_all_and_shows_on_the_event_stream() {
    let relay = local_relay().await;
    let url = relay.url().to_string();
    let homes = [temp_home(), temp_home(), temp_home()];
    let [a, b, c] = three(&url, &homes).await;
    let events = http_client()
        .get(format!("{}/api/events", b.api()))
        .send()
        .await
        .expect("events");
    let mut sse = SseReader::new(events);

    let out = run(
        homes[0].path(),
        &["send", "--api", &a.api(), "node-b", "hello b"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let got = inbox(homes[1].path(), &b.api()).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text"], "hello b");
    assert_eq!(got[0]["from"], a.value("node id").as_str());
    assert_eq!(got[0]["from_name"], "node-a");
    assert!(inbox(homes[2].path(), &c.api()).await.is_empty(), "only B");
    let message = loop {
        let data = tokio::time::timeout(Duration::from_secs(10), sse.next())
            .await
            .expect("an event in time")
            .expect("stream open");
        let v: Value = serde_json::from_str(&data).unwrap_or_default();
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(message["text"], "hello b");

    let out = run(
        homes[0].path(),
        &["send", "--api", &a.api(), "--all", "to everyone"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("delivered to").count(),
        2,
        "{}",
        stdout(&out)
    );
    for (home, node) in [(&homes[1], &b), (&homes[2], &c)] {
        let got = inbox(home.path(), &node.api()).await;
        assert_eq!(got.last().unwrap()["text"], "to everyone", "{got:?}");
    }
    let out = run(homes[0].path(), &["send", "--api", &a.api(), "nobody", "x"]).await;
    assert!(stderr(&out).contains("no member named"), "{}", stderr(&out));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_leave_leaves_and_mesh_logs_shows_it() {
    let relay = local_relay().await;
    let url = relay.url().to_string();
    let (home_a, home_b) = (temp_home(), temp_home());
    let a = MeshProcess::start_async(serve(home_a.path(), &url, &[])).await;
    let b =
        MeshProcess::start_async(serve(home_b.path(), &url, &["--join", &a.value("ticket")])).await;
    wait_peer(&a.api(), &b.value("node id"), true).await;
    wait_peer(&b.api(), &a.value("node id"), true).await;

    let out = run(home_b.path(), &["leave", "--api", &b.api()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("left the mesh"), "{}", stdout(&out));
    wait_peer(&a.api(), &b.value("node id"), false).await;
    assert!(peer_ids(&b.api()).await.is_empty());
    // Its status no longer names the mesh it left, nor hands out its ticket.
    let status = get_json(&http_client(), &format!("{}/api/status", b.api())).await;
    assert_eq!(status["mesh_id"], "", "{status:#}");
    assert_eq!(status["left"], true, "{status:#}");
    let ticket = http_client()
        .get(format!("{}/api/ticket", b.api()))
        .send()
        .await
        .expect("ticket answers");
    assert_eq!(ticket.status().as_u16(), 409);
    // It stays gone: A's gossip does not bring it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!peer_ids(&a.api()).await.contains(&b.value("node id")));
    // Still up as a single node; a second leave says so.
    let out = run(home_b.path(), &["leave", "--api", &b.api()]).await;
    assert!(
        stderr(&out).contains("left its mesh already"),
        "{}",
        stderr(&out)
    );

    let out = run(home_b.path(), &["logs", "--api", &b.api()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("left the mesh"), "{}", stdout(&out));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_chat_answers_through_the_local_node_and_through_a_joined_mesh() {
    let relay = local_relay().await;
    let url = relay.url().to_string();
    let home = temp_home();
    let model = model_path();
    let a = MeshProcess::start_async(serve(
        home.path(),
        &url,
        &[
            "--model",
            model.to_str().unwrap(),
            "--threads",
            "1",
            "--ctx",
            "512",
        ],
    ))
    .await;
    let out = run(
        home.path(),
        &["chat", "--api", &a.api(), "--max-tokens", "8", "Say hello."],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).trim().is_empty(), "an answer");

    let code = invite(home.path(), &a.api(), &[]).await;
    let out = run(
        home.path(),
        &[
            "chat",
            "--join",
            &code,
            "--relay",
            &url,
            "--no-iroh-relay",
            "--max-tokens",
            "8",
            "Say hello.",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).trim().is_empty(), "an answer over the mesh");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_outlives_the_relay_closing_its_idle_subscription() {
    // The relay ends quiet sessions after 2 s; the code is used 5 s after it was made.
    let relay = mesh::relay::start(mesh::relay::RelayOptions {
        port: 0,
        idle_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .expect("relay starts");
    let url = relay.url().to_string();
    let home = temp_home();
    let a = MeshProcess::start_async(serve(home.path(), &url, &[])).await;
    let code = invite(home.path(), &a.api(), &[]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let out = run(home.path(), &["join", &code, "--relay", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), a.value("ticket"));
    relay.shutdown().await;
}
