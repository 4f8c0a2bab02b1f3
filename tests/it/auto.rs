//! `mesh --auto` and `mesh discover` as a user runs them, against a real relay on 127.0.0.1:
//! a client joins the mesh the documented factors prefer; a serving node that finds nothing
//! starts and publishes a public mesh that an `--auto --client` then joins and chats through;
//! an unreachable relay gives a clear error in bounded time.

use crate::common;
use crate::common::hub as common_hub;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use common::*;
use mesh::discovery::nostr_io::{self, Query};
use mesh::util::time::unix_secs;
use serde_json::{json, Value};

/// The `auto: joining …` line of the startup output.
fn joining_line(p: &MeshProcess) -> &str {
    p.lines
        .iter()
        .find(|l| l.starts_with("auto: joining"))
        .unwrap_or_else(|| panic!("no join line: {:?}", p.lines))
}

/// A temporary home for one test's processes (removed at the end of the test).
fn home(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mesh-auto-{tag}-"))
        .tempdir()
        .expect("temp dir")
}

/// The binary with its homes (mesh, Hugging Face cache) under `home`.
fn mesh(home: &Path) -> Command {
    mesh_command(home)
}

/// `mesh ARGS` on free loopback ports, with an ephemeral identity.
fn command(home: &Path, args: &[String]) -> Command {
    let mut cmd = mesh(home);
    cmd.args(args).args([
        "--port",
        "0",
        "--api-port",
        "0",
        "--mesh-bind",
        "127.0.0.1:0",
        "--ephemeral",
    ]);
    cmd
}

/// Starts `mesh ARGS`; its output lines arrive through [`MeshProcess::wait_line`].
fn start(home: &Path, args: &[String]) -> MeshProcess {
    MeshProcess::spawn(command(home, args))
}

/// [`start`], then reads its startup lines up to the banner's end (off the runtime).
async fn spawn(home: PathBuf, args: Vec<String>) -> MeshProcess {
    MeshProcess::start_async(command(&home, &args)).await
}

async fn wait_for_model(http: &reqwest::Client, base: &str) {
    let ids = || async {
        match http.get(format!("{base}/v1/models")).send().await {
            Ok(r) => r.json::<Value>().await.ok().and_then(|v| {
                v["data"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|m| m["id"].as_str().map(String::from))
                        .collect::<Vec<String>>()
                })
            }),
            Err(_) => None,
        }
        .unwrap_or_default()
    };
    eventually_value(
        Duration::from_secs(60),
        format_args!("{MODEL} listed at {base}"),
        ids,
        |ids| ids.iter().any(|m| m == MODEL),
    )
    .await;
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
    let node = start_node_fake(
        fake(),
        cfg,
        Some(discovery(vec![relay.url.clone()], true, Some(region))),
    )
    .await
    .unwrap();
    let url = format!("{}/api/publish", node.api);
    eventually_value(
        Duration::from_secs(15),
        "the offer published",
        || node.get_json(&url),
        |s| s["state"]["published"] != 0,
    )
    .await;
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
    let mut a = spawn(dir.path().to_owned(), args("us")).await;
    let joining = joining_line(&a);
    assert!(joining.contains(&mesh_id(&us)), "{:?}", a.lines);
    assert!(
        a.lines
            .iter()
            .any(|l| l.contains("region") && l.contains("+15.00")),
        "{:?}",
        a.lines
    );
    let status = get_json(&http, &format!("{}/api/status", a.api())).await;
    assert_eq!(status["mesh_id"], mesh_id(&us));
    wait_for_model(&http, &a.base()).await;
    assert!(!chat_text(&http, &a.base()).await.is_empty());
    assert!(a.interrupt().success());

    // Next time the last mesh (`us`) gets +10, but region `eu` is worth +15: it joins `eu`.
    let mut b = spawn(dir.path().to_owned(), args("eu")).await;
    let joining = joining_line(&b);
    assert!(joining.contains(&mesh_id(&eu)), "{:?}", b.lines);
    assert!(b.interrupt().success());
    eu.node.shutdown().await;
    us.node.shutdown().await;
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
    let mut host = spawn(
        dir.path().join("host"),
        host_args.map(String::from).to_vec(),
    )
    .await;
    assert!(
        host.lines
            .iter()
            .any(|l| l.contains("no mesh fits; starting a new public mesh")),
        "{:?}",
        host.lines
    );
    // The offer is republished as soon as the model is loaded: it then lists the model.
    let offers = || offers_on(&relay.url);
    let offer = eventually(
        Duration::from_secs(60),
        "an offer with the model",
        || async {
            offers()
                .await
                .into_iter()
                .find(|o| !o.content.models.is_empty())
        },
    )
    .await;
    assert_eq!(offer.content.models[0].name, MODEL);
    assert!(offer.content.public);

    let client_args = ["--auto", "--client", "--relay", relay.url.as_str()];
    let mut client = spawn(
        dir.path().join("client"),
        client_args.map(String::from).to_vec(),
    )
    .await;
    let joining = joining_line(&client);
    assert!(
        joining.contains(&offer.mesh_id.to_string()),
        "{:?}",
        client.lines
    );
    wait_for_model(&http, &client.base()).await;
    assert!(!chat_text(&http, &client.base()).await.is_empty());
    client.stop(); // Ctrl-C, as a user stops it
    host.stop(); // Ctrl-C, as a user stops it
                 // The host deleted its offer on Ctrl-C.
    let after = nostr_io::fetch_offers(
        std::slice::from_ref(&relay.url),
        &Query::default(),
        unix_secs(),
    )
    .await;
    assert!(after.offers.is_empty(), "{:?}", after.offers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_prints_offers_and_fails_clearly_when_no_relay_answers() {
    let relay = start_relay().await;
    let node = published_node(&relay, "eu").await;
    let dir = home("discover");
    let url = relay.url.to_string();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
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
    let closed = ClosedPort::new();
    let port = closed.port;
    let start = Instant::now();
    let home = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        mesh(&home)
            .args(["discover", "--relay", &format!("ws://127.0.0.1:{port}")])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_answers_with_the_meshs_models_without_a_local_one_and_a_client_moves_when_its_mesh_empties(
) {
    let relay = start_relay().await;
    let first = published_node(&relay, "eu").await;
    let http = http_client();
    let dir = home("empties");

    // A serving node asked for the mesh's model joins as a replica; its own copy fails to load
    // (a broken file), and its API answers with the mesh's model all the same.
    let broken = dir.path().join("broken.gguf");
    std::fs::write(&broken, b"not a gguf file").unwrap();
    let args = [
        "--auto",
        "--relay",
        relay.url.as_str(),
        "--model",
        broken.to_str().unwrap(),
        "--model-name",
        MODEL,
        "--threads",
        "1",
    ];
    let mut host = spawn(dir.path().join("host"), args.map(String::from).to_vec()).await;
    let joining = joining_line(&host);
    assert!(joining.contains(&mesh_id(&first)), "{:?}", host.lines);
    // Stderr and stdout are read by two threads: this line, printed after the banner, may
    // still have overtaken the banner's last line.
    if !host
        .lines
        .iter()
        .any(|l| l.contains("staying in the mesh as a client"))
    {
        host.wait_line("staying in the mesh as a client", Duration::from_secs(30))
            .await;
    }
    wait_for_model(&http, &host.base()).await;
    assert!(!chat_text(&http, &host.base()).await.is_empty());
    host.stop(); // Ctrl-C, as a user stops it

    // A client in `first`'s mesh: when that mesh empties it finds `second` and joins it.
    let mut client = spawn(
        dir.path().join("client"),
        ["--auto", "--client", "--relay", relay.url.as_str()]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert!(
        client.lines.iter().any(|l| l.contains(&mesh_id(&first))),
        "{:?}",
        client.lines
    );
    first.node.shutdown().await;
    let second = published_node(&relay, "us").await;
    client
        .wait_line("the mesh has emptied", Duration::from_secs(30))
        .await;
    let rejoin = client
        .wait_line("auto: joining", Duration::from_secs(30))
        .await;
    assert!(
        rejoin.last().unwrap().contains(&mesh_id(&second)),
        "{rejoin:?}"
    );
    let banner = client
        .wait_line("Ctrl-C to stop", Duration::from_secs(30))
        .await;
    let base = banner_value(&banner, "OpenAI API").unwrap();
    wait_for_model(&http, base.trim_end_matches("/v1")).await;
    assert!(!chat_text(&http, base.trim_end_matches("/v1"))
        .await
        .is_empty());
    client.stop(); // Ctrl-C, as a user stops it
    second.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_publish_advertises_a_running_node_and_stop_deletes_the_offer() {
    let relay = start_relay().await;
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    let node = start_node_fake(
        fake(),
        cfg,
        Some(discovery(vec![relay.url.clone()], false, None)),
    )
    .await
    .unwrap();
    let dir = home("publish");
    let run = |args: Vec<String>| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || mesh(&dir).args(args).output().unwrap())
    };
    let offers = || offers_on(&relay.url);
    assert!(
        offers().await.is_empty(),
        "not published before `mesh publish`"
    );

    let out = run(vec!["publish".into(), "--api".into(), node.api.clone()])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("publishing as npub1"), "{text}");
    assert!(text.contains(&format!("{}  ok", relay.url)), "{text}");
    let found = offers().await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].mesh_id.to_string(), mesh_id(&node));

    let out = run(vec![
        "publish".into(),
        "--stop".into(),
        "--api".into(),
        node.api.clone(),
    ])
    .await
    .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stopped publishing"));
    assert!(
        offers().await.is_empty(),
        "deleted by `mesh publish --stop`"
    );

    // A node that is not running: a clear error naming the address.
    let out = run(vec![
        "publish".into(),
        "--api".into(),
        "http://127.0.0.1:9".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot reach the node at http://127.0.0.1:9"));
    node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_publishing_node_cleanly_and_deletes_its_offer() {
    let relay = start_relay().await;
    let dir = home("sigterm");
    let model = model_path().to_string_lossy().into_owned();
    let args = [
        "serve",
        "--model",
        &model,
        "--public",
        "--publish",
        "--relay",
        relay.url.as_str(),
        "--threads",
        "1",
        "--ctx",
        "256",
    ];
    let mut node = spawn(dir.path().to_owned(), args.map(String::from).to_vec()).await;
    eventually(Duration::from_secs(30), "the offer published", || async {
        !nostr_io::fetch_offers(
            std::slice::from_ref(&relay.url),
            &Query::default(),
            unix_secs(),
        )
        .await
        .offers
        .is_empty()
    })
    .await;
    let status = tokio::task::block_in_place(|| node.stop_with(libc::SIGTERM));
    assert!(status.success(), "exit status {status}");
    let after = nostr_io::fetch_offers(
        std::slice::from_ref(&relay.url),
        &Query::default(),
        unix_secs(),
    )
    .await;
    assert!(after.offers.is_empty(), "offer deleted on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_warns_and_looks_again_when_the_chosen_mesh_refuses_it() {
    // A node of a *private* mesh whose offer claims the mesh is public: its signature and
    // binding are genuine, but admission without the secret fails.
    let relay = start_relay().await;
    let private = start_mesh_fake(fake(), mesh_config(vec![])).await.unwrap();
    let private_mesh = private.node.mesh.as_ref().unwrap();
    let content = mesh::discovery::offer::OfferContent {
        name: "not really public".into(),
        public: true,
        // With the node's real addresses, so that the join reaches it (and is refused).
        ticket: Some(
            mesh::mesh::proto::ticket::Ticket {
                mesh_id: private_mesh.mesh_id(),
                secret: None,
                peers: vec![private_mesh.endpoint().addr()],
            }
            .encode(),
        ),
        ..mesh::discovery::offer::sample_content(MODEL)
    };
    let event = mesh::discovery::offer::build_event(
        &nostr::Keys::generate(),
        private_mesh.secret_key(),
        private_mesh.mesh_id(),
        content,
        unix_secs(),
        180,
    )
    .unwrap();
    let reports = nostr_io::publish(std::slice::from_ref(&relay.url), &event).await;
    assert!(reports[0].ok, "{reports:?}");

    let dir = home("refused");
    let args = ["--auto", "--client", "--relay", relay.url.as_str()];
    let cmd: Vec<String> = args.map(String::from).to_vec();
    // No banner comes: the warning is read from the output instead.
    let mut p = tokio::task::block_in_place(|| start(dir.path(), &cmd));
    let seen = p
        .wait_line("cannot join that mesh", Duration::from_secs(30))
        .await;
    // (The stdout line "auto: joining …" came first, but it is read by another thread than
    // this stderr line, so its place in `seen` is not checked.)
    assert!(
        seen.last().unwrap().contains("looking again in 10s"),
        "{seen:?}"
    );
    assert!(tokio::task::block_in_place(|| p.interrupt()).success());
    private.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_downloads_the_catalog_model_that_fits_and_serves_it() {
    // A catalog of one model (the test model), served by a fake hub on 127.0.0.1.
    let hub = common_hub::FakeHub::start().await;
    let dir = home("download");
    let catalog_file = dir.path().join("catalog.toml");
    serve_test_model_catalog(&hub, &catalog_file);

    let relay = start_relay().await;
    let args = [
        "--auto",
        "--relay",
        relay.url.as_str(),
        "--catalog",
        catalog_file.to_str().unwrap(),
        "--hf-endpoint",
        &hub.url(),
        "--threads",
        "1",
        "--ctx",
        "256",
    ];
    let mut node = spawn(dir.path().join("node"), args.map(String::from).to_vec()).await;
    assert!(
        node.lines
            .iter()
            .any(|l| l.contains("no mesh fits; starting a new public mesh")),
        "{:?}",
        node.lines
    );
    let all: Vec<String> = node.lines.clone();
    let loaded = if all.iter().any(|l| l.contains(" loaded in ")) {
        all
    } else {
        node.wait_line(" loaded in ", Duration::from_secs(60)).await
    };
    let chosen = node
        .lines
        .iter()
        .chain(&loaded)
        .find(|l| l.starts_with("auto: serving"))
        .cloned()
        .expect("a line naming the model chosen");
    assert!(
        chosen.contains(&format!(
            "auto: serving {MODEL} (the largest catalog model that fits here)"
        )),
        "{chosen}"
    );
    let http = http_client();
    wait_for_model(&http, &node.base()).await;
    assert!(!chat_text(&http, &node.base()).await.is_empty());
    assert_eq!(
        hub.blob_gets().len(),
        1,
        "the weights came from the hub, once"
    );
    assert!(
        dir.path().join("node/hf/hub").is_dir(),
        "into the Hugging Face cache"
    );
    node.stop(); // Ctrl-C, as a user stops it
}

/// The valid offers a relay holds now.
async fn offers_on(relay: &nostr::RelayUrl) -> Vec<mesh::discovery::offer::Offer> {
    nostr_io::fetch_offers(std::slice::from_ref(relay), &Query::default(), unix_secs())
        .await
        .offers
}
