//! Tests that play a hostile member against real endpoints on loopback (in this process, so
//! they can look inside the tables): replayed heartbeats, direct floods, sybil announcements.
//! The flood against separate processes (RSS, leaves) is `tests/it/mesh_flood.rs`.

use std::sync::Arc;
use std::time::Duration;

use iroh::SecretKey;

use super::net::membership;
use super::proto::announce::{self, Announcement, Message, SEQ_WINDOW};
use super::state::flood::{MAX_BANNED, MAX_TRACKED};
use super::state::liveness::{MAX_PROBES, MAX_SUSPECTS};
use super::state::peers::{MAX_PEERS, MAX_REMEMBERED};
use super::state::seen::MAX_SEEN;
use super::*;

pub(super) fn config_with(key: SecretKey, join: Vec<Ticket>) -> MeshConfig {
    let mut cfg = MeshConfig::new(key);
    cfg.net = NetConfig::offline();
    cfg.bind = Some((std::net::Ipv4Addr::LOCALHOST, 0).into());
    cfg.name = "test".into();
    cfg.join = join;
    cfg
}

/// A mesh node on loopback with no relay, serving nothing (the other mesh tests start theirs
/// with it too).
pub(super) async fn start(join: Vec<Ticket>) -> Mesh {
    start_as(SecretKey::generate(), join).await
}

pub(super) async fn start_as(key: SecretKey, join: Vec<Ticket>) -> Mesh {
    let nothing: ServingFn = Arc::new(Serving::default);
    Mesh::start(config_with(key, join), nothing, axum::Router::new())
        .await
        .unwrap()
}

/// Waits (at most 20 s) until `cond` holds for `node`.
pub(super) async fn until(node: &Mesh, what: &str, cond: impl Fn(&Mesh) -> bool) {
    until_within(Duration::from_secs(20), node, what, cond).await
}

/// [`until`] with its own correctness deadline.
async fn until_within(within: Duration, node: &Mesh, what: &str, cond: impl Fn(&Mesh) -> bool) {
    let deadline = Instant::now() + within;
    let mut events = node.subscribe();
    while !cond(node) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} peers, tables {:?}",
            node.peers().len(),
            node.table_sizes()
        );
        // Any event, or a heartbeat's worth of time, then look again.
        let _ = tokio::time::timeout(Duration::from_millis(250), events.recv()).await;
    }
}

pub(super) fn has_peer(node: &Mesh, id: EndpointId) -> bool {
    let id = id.to_string();
    node.peers().iter().any(|p| p.node_id == id)
}

fn signed(key: &SecretKey, ann: &Announcement, seq: u64) -> Vec<u8> {
    let ann = Announcement { seq, ..ann.clone() };
    announce::encode(key, &Message::Announce(ann))
}

/// Broadcasts as a hostile member; `false` once its own gossip actor stalls (its neighbours
/// cut it off or read slower than it writes), which ends its attack as it would a real one.
async fn sent(sender: &iroh_gossip::api::GossipSender, bytes: Vec<u8>) -> bool {
    let send = sender.broadcast(bytes.into());
    matches!(
        tokio::time::timeout(Duration::from_secs(5), send).await,
        Ok(Ok(()))
    )
}

fn caps() -> Vec<(&'static str, usize)> {
    vec![
        ("peers", MAX_PEERS),
        // iroh-gossip's active view; the gossip connections the gate tracks.
        (
            "gossip_neighbours",
            iroh_gossip::proto::HyparviewConfig::default().active_view_capacity,
        ),
        ("gossip_conns", net::gate::MAX_ADMITTED),
        ("seq_remembered", MAX_REMEMBERED),
        ("flood_direct", MAX_TRACKED),
        ("flood_relayed", MAX_TRACKED),
        ("flood_authors", MAX_TRACKED),
        ("flood_banned", MAX_BANNED),
        ("gate_admitted", net::gate::MAX_ADMITTED),
        ("gate_banned", MAX_BANNED),
        ("gate_conns", net::gate::MAX_ADMITTED),
        ("tunnel_conns", MAX_PEERS),
        ("tunnel_down", MAX_PEERS),
        ("known_models", MAX_SEEN),
        ("liveness_probes", MAX_PROBES),
        ("liveness_suspects", MAX_SUSPECTS),
        ("former_neighbours", state::member::MAX_FORMER),
        ("catch_up_listed", proto::roster::MAX_FRAMES),
    ]
}

fn assert_under_caps(node: &Mesh) {
    let sizes = node.table_sizes();
    for ((name, size), (cap_name, cap)) in sizes.iter().zip(caps()) {
        assert_eq!(*name, cap_name);
        assert!(
            size <= &cap,
            "{name}: {size} over its cap {cap} ({sizes:?})"
        );
    }
}

#[tokio::test]
async fn a_replayed_heartbeat_of_a_departed_node_is_not_accepted_by_a_newcomer() {
    let a = start(vec![]).await;
    let d_key = SecretKey::generate();
    let d = start_as(d_key.clone(), vec![a.ticket()]).await;
    let d_id = d.node_id();
    until(&a, "D to join", |a| has_peer(a, d_id)).await;
    // A heartbeat of D, as an eavesdropping member recorded it; then D leaves for good.
    let recorded = d.own_announcement();
    d.shutdown().await;
    until(&a, "D to leave", |a| !has_peer(a, d_id)).await;

    // A newcomer that never heard of D; the replay reaches it relayed by its neighbour A.
    let n = start(vec![a.ticket()]).await;
    until(&n, "N to see A", |n| has_peer(n, a.node_id())).await;
    let window = SEQ_WINDOW.as_micros() as u64;
    let now = crate::util::time::unix_micros();
    let replays = [
        ("recorded 3 minutes ago", now - window - 60_000_000),
        ("stamped 3 minutes ahead", now + window + 60_000_000),
    ];
    for (what, seq) in replays {
        membership::receive(
            &n.shared,
            &signed(&d_key, &recorded, seq),
            a.node_id(),
            false,
        );
        assert!(!has_peer(&n, d_id), "a heartbeat {what} was accepted");
    }
    // The same message with a current seq is accepted: the path above is the real one.
    membership::receive(
        &n.shared,
        &signed(&d_key, &recorded, now),
        a.node_id(),
        false,
    );
    assert!(has_peer(&n, d_id));
    n.abort().await;
    a.abort().await;
}

#[tokio::test]
async fn a_member_flooding_its_neighbour_is_banned_cut_off_and_refused() {
    let a = start(vec![]).await;
    let x = start(vec![a.ticket()]).await;
    let x_id = x.node_id();
    until(&a, "X to join", |a| has_peer(a, x_id)).await;
    let sender = x.gossip_sender_for_tests();
    for i in 0..2000u32 {
        let junk = format!("junk {i}").into_bytes();
        if !sent(&sender, junk).await {
            break;
        }
    }
    until(&a, "X to be banned", |a| a.shared.gate.is_banned(&x_id)).await;
    assert!(!a.shared.gate.is_admitted(&x_id));
    // X cannot come back, not even through admission; an honest node still can.
    let _ = x.join(&a.ticket()).await;
    assert!(a.shared.gate.is_banned(&x_id) && !a.shared.gate.is_admitted(&x_id));
    let b = start(vec![a.ticket()]).await;
    until(&a, "B to join", |a| has_peer(a, b.node_id())).await;
    // X's announcements, relayed or not, are dropped: it expires from A's table.
    until(&a, "X to expire", |a| !has_peer(a, x_id)).await;
    for node in [&a, &b, &x] {
        node.abort().await;
    }
}

#[tokio::test]
async fn sybil_announcements_over_gossip_leave_every_table_under_its_cap() {
    const SYBILS: usize = 3000;
    // Expiry is the fallback that frees the slots of sybils nobody can reach; with the default
    // (`Timers::expiry`, minutes) this test would wait that long, so the honest nodes run the
    // 3 s expiry and 1 s refresh of the old heartbeat design: what is proven is the same.
    let short = |join| {
        let mut cfg = config_with(SecretKey::generate(), join);
        cfg.timers.refresh = Duration::from_secs(1);
        cfg.timers.expiry = Duration::from_secs(3);
        let nothing: ServingFn = Arc::new(Serving::default);
        Mesh::start(cfg, nothing, axum::Router::new())
    };
    let a = short(vec![]).await.unwrap();
    let b = short(vec![a.ticket()]).await.unwrap();
    let x = start(vec![a.ticket()]).await;
    until(&b, "B to see A", |b| has_peer(b, a.node_id())).await;
    until(&a, "A to see X", |a| has_peer(a, x.node_id())).await;
    // Validly signed announcements of fresh keys, each with its own model, sent by X.
    let template = x.own_announcement();
    let mut sybils = Vec::with_capacity(SYBILS);
    let sender = x.gossip_sender_for_tests();
    for i in 0..SYBILS {
        let key = SecretKey::generate();
        let ann = Announcement {
            node: key.public(),
            addr: iroh::EndpointAddr::new(key.public())
                .with_ip_addr((std::net::Ipv4Addr::LOCALHOST, 9).into()),
            models: vec![ModelOffer {
                name: format!("sybil-{i}"),
                free_slots: 1,
                slots: 1,
                ctx: 512,
            }],
            ..template.clone()
        };
        let bytes = signed(&key, &ann, crate::util::time::unix_micros());
        if !sent(&sender, bytes).await {
            break;
        }
        sybils.push(key.public());
    }
    // Every sybil is silent from now on: after expiry and a sweep none is left anywhere.
    let expiry = a.shared.timers.expiry + a.shared.timers.sweep * 2;
    tokio::time::sleep(expiry).await;
    for node in [&a, &b] {
        // Gossip may still hand late copies around on a loaded machine: a generous deadline.
        until_within(Duration::from_secs(60), node, "the sybils to expire", |n| {
            sybils.iter().all(|s| !has_peer(n, *s))
        })
        .await;
        assert_under_caps(node);
        assert!(sybils.iter().all(|s| !node.knows_address_of(*s)));
        assert!(node.remote_models().is_empty());
    }
    for node in [&a, &b, &x] {
        node.abort().await;
    }
}
