//! Hostile publishers (issue 12, "Claims are bounded and checked"), played with real nodes and
//! the real binary against a relay on 127.0.0.1. The liar is a live mesh node whose own key
//! signs the binding of an offer with made-up figures: a valid signature, a valid binding, a
//! node that answers the RTT probe and admits whoever joins.
//! - `mesh discover` ranks an honest offer above the inflated offer of issue 12 (2³²−1 nodes,
//!   2⁵³ bytes, every slot free): it is rejected as implausible;
//! - `mesh --auto --client` that joins a plausible but lying offer leaves once gossip
//!   contradicts it, records the publisher in `untrusted.json`, joins the honest mesh, and
//!   `mesh discover` marks the liar's offer.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use mesh::discovery::nostr_io;
use mesh::discovery::offer::{self, OfferContent};
use mesh::discovery::untrusted::{Untrusted, UNTRUSTED_FILE};
use mesh::util::time::unix_secs;
use serde_json::Value;

/// A public mesh node on loopback with discovery on `relay`, publishing its own offer or not.
async fn public_node(relay: &TestRelay, publish: bool) -> TestNode {
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    let node = start_node_fake(
        fake(),
        cfg,
        Some(discovery(vec![relay.url.clone()], publish, None)),
    )
    .await
    .unwrap();
    if publish {
        let url = format!("{}/api/publish", node.api);
        eventually_value(
            Duration::from_secs(15),
            "the offer published",
            || node.get_json(&url),
            |s| s["state"]["published"] != 0,
        )
        .await;
    }
    node
}

fn mesh_id(node: &TestNode) -> String {
    node.node.mesh.as_ref().unwrap().mesh_id().to_string()
}

/// Publishes, under a fresh Nostr key, an offer for `liar`'s mesh signed with `liar`'s own node
/// key: its true offer with the figures `inflate` changes. Returns the Nostr key.
async fn publish_lie(
    relay: &TestRelay,
    liar: &TestNode,
    inflate: impl FnOnce(&mut OfferContent),
) -> nostr::Keys {
    let mesh = liar.node.mesh.as_ref().unwrap();
    let settings = discovery(vec![relay.url.clone()], false, None).settings;
    let mut content = mesh::discovery::publish::content(mesh, &settings);
    assert_eq!(
        content.nodes, 1,
        "the liar is one serving node: {content:?}"
    );
    inflate(&mut content);
    let keys = nostr::Keys::generate();
    let event = offer::build_event(
        &keys,
        mesh.secret_key(),
        mesh.mesh_id(),
        content,
        unix_secs(),
        180,
    )
    .unwrap();
    let reports = nostr_io::publish(std::slice::from_ref(&relay.url), &event).await;
    assert!(reports[0].ok, "{reports:?}");
    keys
}

/// `mesh discover --json ARGS` with `home` as its mesh home.
async fn discover_json(home: &Path, args: &[&str]) -> Value {
    let mut cmd = mesh_command(home);
    cmd.arg("discover").arg("--json").args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn offer_of<'a>(v: &'a Value, mesh_id: &str) -> Option<&'a Value> {
    v["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["mesh_id"] == mesh_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_ranks_an_honest_offer_above_an_inflated_one_signed_by_a_live_node() {
    let relay = start_relay().await;
    let honest = public_node(&relay, true).await;
    let liar = public_node(&relay, false).await;
    // Issue 12's figures: it scored 267.7 against the honest offer's 47.7.
    publish_lie(&relay, &liar, |c| {
        c.nodes = u32::MAX;
        c.memory_bytes = (1 << 53) - 1;
        for m in &mut c.models {
            m.hosts = u32::MAX;
            m.slots = u32::MAX;
            m.free_slots = u32::MAX;
        }
    })
    .await;
    let home = temp_home();
    let found = discover_json(home.path(), &["--relay", relay.url.as_str()]).await;
    assert_eq!(found["offers"][0]["mesh_id"], mesh_id(&honest), "{found:#}");
    assert!(found["offers"][0]["excluded"].is_null(), "{found:#}");
    assert!(
        offer_of(&found, &mesh_id(&liar)).is_none(),
        "the inflated offer is not listed: {found:#}"
    );
    assert_eq!(found["rejected"]["implausible"], 1, "{found:#}");
    honest.node.shutdown().await;
    liar.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_client_leaves_a_mesh_gossip_contradicts_distrusts_it_and_joins_an_honest_one() {
    let relay = start_relay().await;
    // Plausible figures (within every cap, so the offer validates), but not what its mesh is.
    let liar = public_node(&relay, false).await;
    let liar_keys = publish_lie(&relay, &liar, |c| {
        c.nodes = 64;
        c.memory_bytes = 64 * (64 << 30);
        for m in &mut c.models {
            m.hosts = 64;
            m.slots = 64 * 8;
            m.free_slots = 64 * 8;
        }
    })
    .await;

    // The lie is the only offer: the client joins it.
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["--auto", "--client", "--relay", relay.url.as_str()])
        .args(["--port", "0", "--api-port", "0"])
        .args(["--mesh-bind", "127.0.0.1:0", "--ephemeral"]);
    let mut client = MeshProcess::start_async(cmd).await;
    let joining = client.lines.iter().find(|l| l.starts_with("auto: joining"));
    assert!(
        joining.is_some_and(|l| l.contains(&mesh_id(&liar))),
        "{:?}",
        client.lines
    );

    // An honest mesh appears meanwhile. Gossip shows one serving node in the liar's mesh.
    let honest = public_node(&relay, true).await;
    let left = client.wait_line("untrusted", Duration::from_secs(40)).await;
    let why = left.last().unwrap();
    assert!(
        why.contains("the offer claims 64 serving nodes, gossip shows 1"),
        "{left:?}"
    );
    let rejoin = client
        .wait_line("auto: joining", Duration::from_secs(30))
        .await;
    assert!(
        rejoin.last().unwrap().contains(&mesh_id(&honest)),
        "{rejoin:?}"
    );
    // The honest mesh is checked in turn, and passes.
    client
        .wait_line(
            "gossip agrees with the mesh's offer",
            Duration::from_secs(30),
        )
        .await;

    // The publisher and its node are remembered in the mesh home…
    let text = std::fs::read_to_string(home.path().join(UNTRUSTED_FILE)).unwrap();
    let list: Untrusted = serde_json::from_str(&text).unwrap();
    assert_eq!(list.entries.len(), 1, "{text}");
    assert_eq!(list.entries[0].publisher, liar_keys.public_key().to_hex());
    assert_eq!(
        list.entries[0].node,
        liar.node.mesh.as_ref().unwrap().node_id().to_string()
    );
    assert_eq!(list.entries[0].mesh_id, mesh_id(&liar));
    // …and `mesh discover` from that home marks the liar's offer.
    let found = discover_json(home.path(), &["--relay", relay.url.as_str(), "--no-probe"]).await;
    let lie = offer_of(&found, &mesh_id(&liar)).expect("listed, excluded");
    let excluded = lie["excluded"].as_str().unwrap();
    assert!(
        excluded.starts_with("untrusted publisher: the offer claims 64 serving nodes"),
        "{excluded}"
    );
    assert_eq!(found["offers"][0]["mesh_id"], mesh_id(&honest), "{found:#}");
    client.stop();
    honest.node.shutdown().await;
    liar.node.shutdown().await;
}
