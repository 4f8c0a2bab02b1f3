//! A hostile Nostr relay against the real `mesh discover`: a small WebSocket server on
//! 127.0.0.1 answers every query with 2,000 huge events. The reader must hold none of them
//! (its private memory stays under 32 MiB, the bound issue 12 names), count them per relay,
//! and still report the honest relay's offer and exit 0.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use mesh::discovery::nostr_io;
use mesh::discovery::offer::{self, OFFER_KIND};
use mesh::mesh::proto::ticket::MeshId;
use nostr::{Keys, RelayUrl};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::common::process::{run_measured, Measured};
use crate::common::{mesh_command, temp_home, MeshProcess};

/// The bound issue 12 sets on `mesh discover` against this relay, applied to the memory the
/// process allocates (`RssAnon`): a debug build's own code pages alone are 25-31 MiB of RSS,
/// and vary from run to run.
const PEAK_PRIVATE_LIMIT_KIB: u64 = 32 * 1024;
/// A sanity bound on the whole RSS, binary pages included (the unbounded reader peaked at
/// 518 MB).
const PEAK_RSS_LIMIT_KIB: u64 = 64 * 1024;

fn assert_small(run: &Measured) {
    assert!(
        run.peak_anon_kib > 0 && run.peak_anon_kib < PEAK_PRIVATE_LIMIT_KIB,
        "peak private memory {} KiB",
        run.peak_anon_kib
    );
    assert!(
        run.peak_rss_kib < PEAK_RSS_LIMIT_KIB,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
}

/// A relay on 127.0.0.1 answering every `REQ` with `count` events whose content is `bytes`
/// long, then `EOSE`. Serves until the test's runtime ends.
async fn hostile_relay(count: usize, bytes: usize) -> RelayUrl {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = RelayUrl::parse(&format!("ws://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Ok(req) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else {
                        continue;
                    };
                    if req[0] != "REQ" {
                        continue;
                    }
                    let sub = req[1].as_str().unwrap_or_default().to_owned();
                    let event = json!({
                        "id": "0".repeat(64),
                        "pubkey": "1".repeat(64),
                        "created_at": now(),
                        "kind": OFFER_KIND,
                        "tags": [],
                        "content": "x".repeat(bytes),
                        "sig": "2".repeat(128),
                    });
                    let frame = json!(["EVENT", sub, event]).to_string();
                    for _ in 0..count {
                        if ws.send(Message::text(frame.clone())).await.is_err() {
                            return;
                        }
                    }
                    let _ = ws
                        .send(Message::text(json!(["EOSE", sub]).to_string()))
                        .await;
                }
            });
        }
    });
    url
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A `mesh relay` process holding one honest offer (its own process, so the hostile relay's
/// sending in this one cannot starve it); the relay, its URL and the offer's mesh id.
async fn honest_relay() -> (MeshProcess, RelayUrl, MeshId, tempfile::TempDir) {
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["relay", "--port", "0"]);
    let relay = MeshProcess::start_async(cmd).await;
    let url = relay
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("relay "))
        .map(|u| RelayUrl::parse(u.trim()).expect("relay URL in the banner"))
        .unwrap_or_else(|| panic!("banner names the relay URL: {:?}", relay.lines));
    let mesh_id = MeshId::random();
    let node = iroh::SecretKey::generate();
    let content = offer::sample_content("SmolLM2-135M-Instruct-Q4_1");
    let event =
        offer::build_event(&Keys::generate(), &node, mesh_id, content, now(), 300).expect("signs");
    let reports = nostr_io::publish(std::slice::from_ref(&url), &event).await;
    assert!(reports[0].ok, "{reports:?}");
    (relay, url, mesh_id, home)
}

/// `mesh discover --json --no-probe` against both relays, measured.
async fn discover(hostile: &RelayUrl, honest: &RelayUrl) -> (Measured, Value) {
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["discover", "--json", "--no-probe"]).args([
        "--relay",
        hostile.as_str(),
        "--relay",
        honest.as_str(),
    ]);
    let run = tokio::task::spawn_blocking(move || run_measured(cmd, Duration::from_secs(60)))
        .await
        .unwrap();
    eprintln!(
        "mesh discover: peak RSS {} KiB, peak private {} KiB, exit {}\n{}",
        run.peak_rss_kib, run.peak_anon_kib, run.status, run.stderr
    );
    assert!(run.status.success(), "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    (run, doc)
}

fn relay_entry<'a>(doc: &'a Value, url: &RelayUrl) -> &'a Value {
    doc["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"] == url.to_string())
        .unwrap_or_else(|| panic!("{url} in {doc}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_stays_small_against_a_relay_sending_2000_events_of_250_kib() {
    let hostile = hostile_relay(2000, 250 * 1024).await;
    let (_relay, honest, mesh_id, _home) = honest_relay().await;
    let (run, doc) = discover(&hostile, &honest).await;

    assert_small(&run);
    let offers = doc["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 1, "{doc}");
    assert_eq!(offers[0]["mesh_id"], mesh_id.to_string());
    let bad = relay_entry(&doc, &hostile);
    assert_eq!(bad["ok"], false, "{bad}");
    assert_eq!(bad["dropped_oversized"], 1, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains(&format!(
            "over the {}-byte limit",
            nostr_io::MAX_MESSAGE_BYTES
        )),
        "{bad}"
    );
    assert_eq!(relay_entry(&doc, &honest)["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn discover_reads_but_holds_no_event_over_the_offer_limit() {
    // Each message fits the WebSocket limit, so all are read, one at a time; none is held.
    let hostile = hostile_relay(2000, 20 * 1024).await;
    let (_relay, honest, _, _home) = honest_relay().await;
    let (run, doc) = discover(&hostile, &honest).await;

    assert_small(&run);
    assert_eq!(doc["offers"].as_array().unwrap().len(), 1, "{doc}");
    let bad = relay_entry(&doc, &hostile);
    assert_eq!(bad["events"], 0, "{bad}");
    let dropped = bad["dropped_oversized"].as_u64().unwrap();
    assert!(dropped > 0, "{bad}");
    // All 2,000 when the relay finished within the reply timeout (a loaded machine may not).
    if bad["ok"] == true {
        assert_eq!(dropped, 2000, "{bad}");
        assert_eq!(doc["rejected"]["too_large"], 2000, "{doc}");
    }
}
