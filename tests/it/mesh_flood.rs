//! A hostile member floods the gossip topic: 20,000 junk messages a second for 10 s, sent
//! through its own gossip sender to two honest `mesh serve` processes. Neither honest node may
//! lose the other (no `peer_left` for it), and neither may grow its memory by more than
//! [`RSS_GROWTH_LIMIT`] (VmHWM, the peak, from /proc). The honest node the flooder joined
//! through must ban it (it logs the ban).

use crate::common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mesh::mesh::proto::ticket::Ticket;

/// The flood: messages per second, for how long, and each message's size (junk that is no
/// envelope at all; iroh-gossip's size limit is 4096).
const RATE: u64 = 20_000;
const FLOOD_FOR: Duration = Duration::from_secs(10);
const JUNK_BYTES: usize = 4000;
/// Most an honest node's peak RSS may grow during the flood.
const RSS_GROWTH_LIMIT: u64 = 64 << 20;
/// How long one junk message may wait for the flooder's own gossip actor.
const STALL: Duration = Duration::from_secs(5);

fn honest(home: &Path, join: Option<&str>) -> Command {
    let mut cmd = mesh_command(home);
    // `mesh_command`'s MESH_OFFLINE=1 is refused by the current `--no-iroh-relay` parser.
    cmd.env("MESH_OFFLINE", "true");
    cmd.args(["serve", "--client", "--ephemeral", "--port", "0"])
        .args(["--api-port", "0", "--mesh-bind", "127.0.0.1:0"]);
    if let Some(t) = join {
        cmd.args(["--join", t]);
    }
    cmd
}

/// `VmHWM` (peak resident memory) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Collects the `node_id` of every `peer_left` event on `api`'s event stream.
async fn watch_leaves(api: String) -> Arc<Mutex<Vec<String>>> {
    let left = Arc::new(Mutex::new(Vec::new()));
    // No overall timeout: the stream stays open for the whole test.
    let resp = reqwest::Client::new()
        .get(format!("{api}/api/events"))
        .send()
        .await
        .expect("events");
    let mut sse = SseReader::new(resp);
    let seen = left.clone();
    tokio::spawn(async move {
        // The stream breaks when the test ends and kills the node: that is the end, not a failure.
        while let Ok(Some(data)) = sse.try_next().await {
            // Each payload is one event; `peer_left` is the one with a reason.
            let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            if let Some(id) = v["node_id"].as_str() {
                if data.contains("reason") {
                    seen.lock().unwrap().push(id.to_owned());
                }
            }
        }
    });
    left
}

async fn peer_ids(api: &str) -> Vec<String> {
    // A node that stopped answering fails the test here rather than hanging it.
    mesh::util::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let v = get_json(&http, &format!("{api}/api/peers")).await;
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for_peer(api: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peer_ids(api).await.iter().any(|p| p == id) {
        assert!(Instant::now() < deadline, "{api} never saw {id}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_flooding_junk_makes_no_honest_peer_leave_and_memory_stays_bounded() {
    let (home_a, home_b) = (temp_home(), temp_home());
    let mut a = MeshProcess::start_async(honest(home_a.path(), None)).await;
    let ticket = a.value("ticket");
    let b = MeshProcess::start_async(honest(home_b.path(), Some(&ticket))).await;
    let (a_id, b_id) = (a.value("node id"), b.value("node id"));
    let (a_api, b_api) = (a.api(), b.api());
    wait_for_peer(&a_api, &b_id).await;
    wait_for_peer(&b_api, &a_id).await;
    let left_a = watch_leaves(a_api.clone()).await;
    let left_b = watch_leaves(b_api.clone()).await;

    // The hostile member joins through A, as any member would.
    let x = start_mesh(None, mesh_config(vec![Ticket::decode(&ticket).unwrap()]))
        .await
        .unwrap();
    let x_mesh = x.node.mesh.clone().expect("mesh");
    wait_for_peer(&a_api, &x_mesh.node_id().to_string()).await;
    let before = [peak_rss(a.pid()), peak_rss(b.pid())];

    let sender = x_mesh.gossip_sender_for_tests();
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut junk = vec![0x5a_u8; JUNK_BYTES];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut stalled = false;
    while started.elapsed() < FLOOD_FOR && !stalled {
        tick.tick().await;
        // Catch up to the rate (the sender may be slower than RATE; what it managed is shown).
        let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
        while sent < due && started.elapsed() < FLOOD_FOR {
            junk[..8].copy_from_slice(&sent.to_be_bytes()); // every message unique
                                                            // The flooder's own gossip may stall (its neighbours cut it off, or read slower
                                                            // than it writes): then the flood is over, as it would be for a real attacker.
            let sent_one = tokio::time::timeout(STALL, sender.broadcast(junk.clone().into()));
            if !matches!(sent_one.await, Ok(Ok(()))) {
                stalled = true;
                break;
            }
            sent += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Two expiries and then some: a lost heartbeat would have made a peer leave by now.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = [peak_rss(a.pid()), peak_rss(b.pid())];
    let banned = a.wait_line("banned for", Duration::from_secs(1)).await;
    eprintln!(
        "flood: {sent} messages of {JUNK_BYTES} bytes in {secs:.1} s ({:.0}/s, flooder stalled: {stalled}); peak RSS A {} -> {} MiB, B {} -> {} MiB; ban: {:?}",
        sent as f64 / secs,
        before[0] >> 20,
        after[0] >> 20,
        before[1] >> 20,
        after[1] >> 20,
        banned.last()
    );
    let (left_a, left_b) = (
        left_a.lock().unwrap().clone(),
        left_b.lock().unwrap().clone(),
    );
    assert!(
        !left_a.contains(&b_id),
        "A lost B during the flood: {left_a:?}"
    );
    assert!(
        !left_b.contains(&a_id),
        "B lost A during the flood: {left_b:?}"
    );
    assert!(peer_ids(&a_api).await.contains(&b_id));
    assert!(peer_ids(&b_api).await.contains(&a_id));
    for (name, (b4, af)) in ["A", "B"].iter().zip(before.iter().zip(after)) {
        assert!(
            af.saturating_sub(*b4) <= RSS_GROWTH_LIMIT,
            "{name}'s peak RSS grew by {} MiB",
            af.saturating_sub(*b4) >> 20
        );
    }
    x_mesh.abort().await;
}
