//! Automatic split serving: nodes asked to serve a model that does not fit them alone (memory
//! injected with `MESH_MEMORY_BYTES`) split it over the mesh without `--split`. The members
//! that want the model elect its host (the one that can hold most of it); one that is not
//! elected and runs with `--split-worker` lends its memory; the split answers as the whole model does (greedy) on every member; when its worker
//! is killed, the split is re-planned over the members left and the model is served again.

use crate::common;
use crate::split::{answer, greedy, serve, SPLIT_UP};

use std::time::Duration;

use common::*;

const NAME: &str = "auto-split-model";

/// The test model's memory need as the nodes count it (`--ctx 512 --parallel 1`).
fn need() -> u64 {
    mesh::catalog::gguf::model_memory(&model_path())
        .expect("the test model's header")
        .need_bytes(512, 1)
}

/// A `mesh serve` with `percent` of the model's need as its memory, joining `ticket`.
fn node(home: &std::path::Path, percent: u64, ticket: Option<&str>) -> std::process::Command {
    let mut cmd = serve(home);
    cmd.env("MESH_MEMORY_BYTES", (need() * percent / 100).to_string())
        .args(["--ctx", "512", "--parallel", "1"]);
    if let Some(t) = ticket {
        cmd.args(["--join", t]);
    }
    cmd
}

/// Waits until `relay` holds an offer (the lender's).
async fn offer_published(relay: &nostr::RelayUrl) {
    eventually(Duration::from_secs(30), "the lender's offer", || {
        let relay = relay.clone();
        async move {
            let q = mesh::discovery::nostr_io::Query::default();
            let now = mesh::util::time::unix_secs();
            !mesh::discovery::nostr_io::fetch_offers(&[relay], &q, now)
                .await
                .offers
                .is_empty()
        }
    })
    .await;
}

/// Whether the node at `base` lists the model.
async fn lists(http: &reqwest::Client, base: &str) -> bool {
    model_ids(http, base).await.iter().any(|m| m == NAME)
}

/// The peers `api` knows that serve the model.
async fn hosts_seen_by(http: &reqwest::Client, api: &str) -> Vec<String> {
    let v = get_json(http, &format!("{api}/api/peers")).await;
    v["peers"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| {
                    p["models"]
                        .as_array()
                        .is_some_and(|ms| ms.iter().any(|m| m["name"] == NAME))
                })
                .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_too_big_for_its_nodes_is_split_over_the_mesh_by_the_elected_host_and_re_planned_when_its_worker_dies(
) {
    let whole = start(config()).await;
    let expected = answer(&whole.http, &whole.base, &greedy(MODEL, 48, false)).await;
    whole.node.shutdown().await;
    assert!(!expected.is_empty());

    let home = temp_home();
    // C lends memory (half of the need); A and B want the model, neither can hold it alone.
    let mut c = node(&home.path().join("c"), 50, None);
    c.arg("--split-worker");
    let mut c = MeshProcess::start_async(c).await;
    let ticket = c.value("ticket");
    let want = |dir: &str, percent: u64| {
        let mut cmd = node(&home.path().join(dir), percent, Some(&ticket));
        cmd.arg("--model")
            .arg(model_path())
            .args(["--model-name", NAME]);
        cmd
    };
    // A also lends (`--split-worker`) while it is not the host; B does not.
    let mut a = want("a", 45);
    a.arg("--split-worker");
    let a = MeshProcess::start_async(a).await;
    let b = MeshProcess::start_async(want("b", 65)).await;
    let b_id = b.value("node id");

    // B can hold most of the model: it is elected, and splits with the lender that has most
    // free memory (C: 65 % + 50 % ≥ 100 %). A routes to it.
    let http = http_client();
    eventually(SPLIT_UP, "the model to be split and served", || {
        let (http, base) = (http.clone(), b.base());
        async move { lists(&http, &base).await }
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "A to see B, and only B, serve it",
        || {
            let (http, api, b_id) = (http.clone(), a.api(), b_id.clone());
            async move { hosts_seen_by(&http, &api).await == [b_id] }
        },
    )
    .await;
    let got = answer(&http, &b.base(), &greedy(NAME, 48, false)).await;
    assert_eq!(got, expected, "split and whole greedy answers differ");
    let via_a = answer(&http, &a.base(), &greedy(NAME, 48, false)).await;
    assert_eq!(
        via_a, expected,
        "a member that wants the model is answered by the split"
    );

    // The worker dies: the split ends, and is re-planned over B and A (65 % + 45 %).
    c.kill();
    eventually(
        Duration::from_secs(60),
        "the split to end when its worker died",
        || {
            let (http, base) = (http.clone(), b.base());
            async move { !lists(&http, &base).await }
        },
    )
    .await;
    eventually(
        SPLIT_UP,
        "the model to be served again over A and B",
        || {
            let (http, base) = (http.clone(), b.base());
            async move { lists(&http, &base).await }
        },
    )
    .await;
    let again = answer(&http, &b.base(), &greedy(NAME, 48, false)).await;
    assert_eq!(
        again, expected,
        "the re-planned split answers as the whole model"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_a_model_too_big_for_it_joins_a_mesh_and_serves_the_model_split_over_a_lender() {
    let relay = start_relay().await;
    let url = relay.url.to_string();
    let home = temp_home();
    // A published mesh that wants the model, whose one node lends memory (60 % of the need).
    let mut lender = node(&home.path().join("lender"), 60, None);
    lender.args([
        "--split-worker",
        "--public",
        "--publish",
        "--relay",
        &url,
        "--want",
        NAME,
    ]);
    let _lender = MeshProcess::start_async(lender).await;
    offer_published(&relay.url).await;
    // `mesh --auto --model` on a node with 60 % of the need: it joins, and splits the model.
    let mut auto = node(&home.path().join("auto"), 60, None);
    auto.args(["--auto", "--relay", &url, "--model"])
        .arg(model_path())
        .args(["--model-name", NAME]);
    let auto = MeshProcess::start_async(auto).await;
    let joined = auto.lines.iter().any(|l| l.starts_with("auto: joining"));
    assert!(joined, "{:?}", auto.lines);
    let http = http_client();
    eventually(SPLIT_UP, "the model to be split and served", || {
        let (http, base) = (http.clone(), auto.base());
        async move { lists(&http, &base).await }
    })
    .await;
    let text = answer(&http, &auto.base(), &greedy(NAME, 16, false)).await;
    assert!(!text.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_a_model_serves_the_model_its_mesh_wants_split_when_too_big_for_it_alone() {
    // A catalog of one model (the test model), served by a fake hub on 127.0.0.1.
    let hub = crate::common::hub::FakeHub::start().await;
    let home = temp_home();
    let catalog_file = home.path().join("catalog.toml");
    let entry = serve_test_model_catalog(&hub, &catalog_file);
    // What `--auto` counts the model to need (the catalog's estimate): at its default context,
    // and at the smallest it would shrink the context to.
    let memory = mesh::catalog::ModelMemory::from_entry(&entry);
    let row_need = memory.need_bytes(memory.default_ctx(), 1);
    let least = memory.need_bytes(mesh::catalog::fit::MIN_CTX, 1);

    // A published mesh that wants the model; its one node serves nothing and lends memory.
    let relay = start_relay().await;
    let url = relay.url.to_string();
    let mut lender = serve(&home.path().join("lender"));
    lender
        .env("MESH_MEMORY_BYTES", (row_need * 3).to_string())
        .args(["--split-worker", "--public", "--publish", "--relay", &url])
        .args(["--want", MODEL]);
    let _lender = MeshProcess::start_async(lender).await;
    offer_published(&relay.url).await;

    // `mesh --auto` with no --model, on a node with 60 % of the model's least need: it joins,
    // chooses the wanted model because the lender can hold the rest, downloads it and splits it.
    let mut auto = serve(&home.path().join("auto"));
    auto.env("MESH_MEMORY_BYTES", (least * 6 / 10).to_string())
        .args(["--auto", "--relay", &url, "--catalog"])
        .arg(&catalog_file)
        .args([
            "--hf-endpoint",
            &hub.url(),
            "--ctx",
            "512",
            "--parallel",
            "1",
        ]);
    let mut auto = MeshProcess::start_async(auto).await;
    let joined = auto.lines.iter().any(|l| l.starts_with("auto: joining"));
    assert!(joined, "{:?}", auto.lines);
    let seen = auto
        .wait_line("auto: serving", Duration::from_secs(30))
        .await;
    let chosen = seen.last().unwrap();
    assert!(
        chosen.starts_with(&format!(
            "auto: serving {MODEL} (the mesh wants it; too big for this node alone, it is split \
             with 1 member that lends memory), ~"
        )) && chosen.contains(" tok/s expected split"),
        "{seen:?}"
    );
    let http = http_client();
    eventually(SPLIT_UP, "the model to be split and served", || {
        let (http, base) = (http.clone(), auto.base());
        async move { model_ids(&http, &base).await.iter().any(|m| m == MODEL) }
    })
    .await;
    let text = answer(&http, &auto.base(), &greedy(MODEL, 16, false)).await;
    assert!(!text.is_empty());
    assert_eq!(hub.blob_gets().len(), 1, "the weights came from the hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_with_nothing_it_can_serve_stays_in_the_joined_mesh_as_a_client() {
    let hub = crate::common::hub::FakeHub::start().await;
    let home = temp_home();
    let catalog_file = home.path().join("catalog.toml");
    let entry = serve_test_model_catalog(&hub, &catalog_file);
    let memory = mesh::catalog::ModelMemory::from_entry(&entry);
    let least = memory.need_bytes(mesh::catalog::fit::MIN_CTX, 1);

    // A published mesh whose one node serves the test model.
    let relay = start_relay().await;
    let url = relay.url.to_string();
    let mut host = node(&home.path().join("host"), 300, None);
    host.args(["--public", "--publish", "--relay", &url, "--model"])
        .arg(model_path())
        .args(["--model-name", NAME]);
    let _host = MeshProcess::start_async(host).await;
    offer_published(&relay.url).await;

    // `mesh --auto` on a node with half the one catalog model's least need: it joins, finds
    // nothing to serve, says so, and stays in the mesh as a client (before, the run ended).
    let mut auto = serve(&home.path().join("auto"));
    auto.env("MESH_MEMORY_BYTES", (least / 2).to_string())
        .args(["--auto", "--relay", &url, "--catalog"])
        .arg(&catalog_file)
        .args(["--hf-endpoint", &hub.url()]);
    let mut auto = MeshProcess::start_async(auto).await;
    let joined = auto.lines.iter().any(|l| l.starts_with("auto: joining"));
    assert!(joined, "{:?}", auto.lines);
    // The warning (stderr) may be read before the banner (stdout): two pipes, no order.
    let staying = "staying in the mesh as a client";
    let said = match auto.lines.iter().find(|l| l.contains(staying)) {
        Some(l) => l.clone(),
        None => auto
            .wait_line(staying, Duration::from_secs(30))
            .await
            .pop()
            .unwrap(),
    };
    assert!(said.contains("no catalog model fits"), "{said}");
    // The mesh's model answers through this node's API.
    let http = http_client();
    eventually(Duration::from_secs(30), "the host's model listed", || {
        let (http, base) = (http.clone(), auto.base());
        async move { lists(&http, &base).await }
    })
    .await;
    let text = answer(&http, &auto.base(), &greedy(NAME, 16, false)).await;
    assert!(!text.is_empty());
    assert!(hub.blob_gets().is_empty(), "nothing was downloaded");
}
