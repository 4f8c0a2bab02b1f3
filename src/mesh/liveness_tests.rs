//! Liveness against real endpoints on loopback (in this process, so the tests can look inside
//! the tables): a member's false `Down` reports about a live host, which the host refutes; a
//! newcomer handed a neighbour's roster, whose forged entries it drops; nodes whose gossip
//! connections all closed, which ask members to take them in again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iroh::SecretKey;

use super::hostile_tests::{config_with, has_peer, start, until};
use super::net::{membership, roster};
use super::proto::announce::{self, Message};
use super::state::routing::Need;
use super::*;

/// A host serving `model` whose tunnel answers `GET /` with 200.
async fn start_host(model: &str, join: Vec<Ticket>) -> Mesh {
    let offer = ModelOffer {
        name: model.into(),
        free_slots: 1,
        slots: 1,
        ctx: 512,
    };
    let serving: ServingFn = Arc::new(move || Serving {
        models: vec![offer.clone()],
        ..Serving::default()
    });
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
    Mesh::start(config_with(SecretKey::generate(), join), serving, app)
        .await
        .unwrap()
}

fn routable(node: &Mesh, host: EndpointId, model: &str) -> bool {
    node.hosts_for(model, &[], &Need::default())
        .iter()
        .any(|c| c.id == host)
}

/// One request to `host` over the tunnel; `true` when it answered 200.
async fn request_ok(node: &Mesh, host: EndpointId) -> bool {
    let req = hyper::Request::get("/")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    match node.tunnel().request(host, req).await {
        Ok(r) => r.status() == 200,
        Err(e) => {
            tracing::warn!("request to {}: {e}", host.fmt_short());
            false
        }
    }
}

/// A member X broadcasts `Down` reports about a live host H, five a second for eight seconds.
/// H refutes each with a fresh announcement, so the observer C keeps H in routing the whole time
/// and every request C routes to it meanwhile succeeds. Without the refutation H would be out
/// of C's routing `suspect` (2 s) after the first report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_down_reports_about_a_live_host_are_refuted_and_it_stays_routable() {
    let h = start_host("m", vec![]).await;
    let x = start(vec![h.ticket()]).await;
    let c = start(vec![h.ticket()]).await;
    let h_id = h.node_id();
    until(&c, "C to route to H", |c| routable(c, h_id, "m")).await;
    until(&x, "X to see H", |x| has_peer(x, h_id)).await;
    until(&c, "C to see X", |c| has_peer(c, x.node_id())).await;
    assert!(request_ok(&c, h_id).await);

    let sender = x.gossip_sender_for_tests();
    let attack = tokio::spawn({
        let key = x.secret_key().clone();
        async move {
            for _ in 0..40 {
                let down = Message::Down {
                    node: key.public(),
                    seq: crate::util::time::unix_micros(),
                    about: h_id,
                    // "Gone since any announcement you know": the strongest claim it can make.
                    about_seq: u64::MAX,
                };
                let _ = sender.broadcast(announce::encode(&key, &down).into()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let mut requests = 0;
    while !attack.is_finished() {
        assert!(routable(&c, h_id, "m"), "H left C's routing");
        assert!(request_ok(&c, h_id).await, "a request routed to H failed");
        requests += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reports were taken seriously (C suspected H at least once), and refuted every time.
    assert!(requests > 20, "{requests} requests");
    tokio::time::sleep(c.shared.timers.suspect * 2).await;
    assert!(routable(&c, h_id, "m") && request_ok(&c, h_id).await);
    assert!(!c.shared.with_liveness(|l| l.is_suspected(&h_id)));
    for n in [&c, &x, &h] {
        n.abort().await;
    }
}

/// A reported node that does not refute (it is gone) is dropped after `suspect`, while a
/// report from a node outside the table changes nothing.
#[tokio::test]
async fn an_unrefuted_report_drops_its_node_and_a_strangers_report_is_ignored() {
    let a = start(vec![]).await;
    let b = start(vec![a.ticket()]).await;
    until(&a, "A to see B", |a| has_peer(a, b.node_id())).await;
    // A ghost: a member's announcement that no live endpoint will refute.
    let ghost = SecretKey::generate();
    let mut ann = b.own_announcement();
    ann.node = ghost.public();
    ann.addr = iroh::EndpointAddr::new(ghost.public());
    let now = crate::util::time::unix_micros();
    ann.seq = now;
    let ghost_msg = announce::encode(&ghost, &Message::Announce(ann));
    membership::receive(&a.shared, &ghost_msg, b.node_id(), false);
    assert!(has_peer(&a, ghost.public()));
    let report = |by: &SecretKey| {
        announce::encode(
            by,
            &Message::Down {
                node: by.public(),
                seq: crate::util::time::unix_micros(),
                about: ghost.public(),
                about_seq: now,
            },
        )
    };
    let stranger = SecretKey::generate();
    membership::receive(&a.shared, &report(&stranger), b.node_id(), false);
    assert!(!a.shared.with_liveness(|l| l.is_suspected(&ghost.public())));
    membership::receive(&a.shared, &report(b.secret_key()), b.node_id(), false);
    assert!(a.shared.with_liveness(|l| l.is_suspected(&ghost.public())));
    until(&a, "the ghost to be dropped", |a| {
        !has_peer(a, ghost.public())
    })
    .await;
    assert!(has_peer(&a, b.node_id()));
    b.abort().await;
    a.abort().await;
}

/// A newcomer's first neighbour hands it every member's signed announcement at once; an entry
/// the neighbour altered fails its author's signature and is dropped.
#[tokio::test]
async fn a_newcomer_gets_the_whole_roster_from_a_neighbour_and_forged_entries_are_dropped() {
    let a = start(vec![]).await;
    let b = start(vec![a.ticket()]).await;
    let c = start(vec![a.ticket()]).await;
    until(&a, "A to see B and C", |a| {
        has_peer(a, b.node_id()) && has_peer(a, c.node_id())
    })
    .await;
    // What a member hands out: its own announcement first, then its peers' as they signed them.
    // C joined A, which started the mesh: it has a complete table once a roster from A (or
    // from B, once B had A's) came, and says so with its roster.
    until(&c, "C to have a complete roster", |c| {
        c.shared.with_member(|m| m.roster_complete())
    })
    .await;
    let answer = roster::fetch(b.endpoint(), c.node_id()).await.unwrap();
    assert!(answer.complete);
    let entries = answer.entries;
    assert_eq!(entries.len(), 3);
    let authors: Vec<_> = entries
        .iter()
        .map(|e| announce::decode(e).unwrap().node())
        .collect();
    assert_eq!(authors[0], c.node_id());
    assert!(authors.contains(&a.node_id()) && authors.contains(&b.node_id()));
    // A newcomer asks its first neighbour on its own.
    let n = start(vec![a.ticket()]).await;
    until(&n, "N to know B and C", |n| {
        has_peer(n, b.node_id()) && has_peer(n, c.node_id())
    })
    .await;

    // A forged entry: a stranger's announcement altered after signing, handed to a fresh node.
    let m = start(vec![]).await;
    let key = SecretKey::generate();
    let mut ann = b.own_announcement();
    ann.node = key.public();
    ann.addr = iroh::EndpointAddr::new(key.public());
    let mut forged = announce::encode(&key, &Message::Announce(ann.clone()));
    let at = forged.len() - 70; // inside the signed body
    forged[at] ^= 1;
    membership::receive_roster_entry(&m.shared, forged.into(), a.node_id());
    assert!(!has_peer(&m, key.public()));
    // The same entry unaltered is taken: the path above is the real one.
    let honest = announce::encode(&key, &Message::Announce(ann));
    membership::receive_roster_entry(&m.shared, honest.into(), a.node_id());
    assert!(has_peer(&m, key.public()));
    for node in [&m, &n, &c, &b, &a] {
        node.abort().await;
    }
}

/// A table filled with sybils (validly signed announcements of keys no endpoint holds) frees
/// slots once it has to refuse a stranger: it dials the peers heard from longest ago, and those
/// that do not answer are dropped. Before, sybil slots freed only at expiry (minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_full_of_sybils_frees_slots_by_dialling_them() {
    use super::state::peers::MAX_PEERS;
    let a = start(vec![]).await;
    let b = start(vec![a.ticket()]).await;
    until(&a, "A to see B", |a| has_peer(a, b.node_id())).await;
    let template = b.own_announcement();
    let sybil = |key: &SecretKey| {
        let mut ann = template.clone();
        ann.node = key.public();
        ann.addr = iroh::EndpointAddr::new(key.public())
            .with_ip_addr((std::net::Ipv4Addr::LOCALHOST, 9).into());
        ann.seq = crate::util::time::unix_micros();
        announce::encode(key, &Message::Announce(ann))
    };
    // Relayed by B (as a hostile member would make honest nodes do), just under the relayed
    // burst of the flood guard.
    let mut sent = 0;
    while a.peers().len() < MAX_PEERS && sent < 2 * MAX_PEERS {
        membership::receive(
            &a.shared,
            &sybil(&SecretKey::generate()),
            b.node_id(),
            false,
        );
        sent += 1;
    }
    assert_eq!(a.peers().len(), MAX_PEERS, "the table is full");
    // A stranger is refused: the table starts checking its stalest peers.
    let stranger = SecretKey::generate();
    membership::receive(&a.shared, &sybil(&stranger), b.node_id(), false);
    assert!(!has_peer(&a, stranger.public()));
    until(&a, "sybil slots to free up", |a| {
        a.peers().len() < MAX_PEERS - super::state::liveness::MAX_PROBES / 2
    })
    .await;
    assert!(has_peer(&a, b.node_id()), "the honest peer keeps its slot");
    b.abort().await;
    a.abort().await;
}

/// Every gossip connection of a small mesh closes at once, at both ends (a network blip):
/// iroh-gossip drops each peer from its views (a closed connection leaves it no passive
/// peer to try) and never tries again. Membership asks the table's members to take the node
/// in after `Timers::rejoin`, and a node's change reaches the others again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_gossip_connections_all_closed_ask_members_to_take_them_in_again() {
    let a = start(vec![]).await;
    let b = start(vec![a.ticket()]).await;
    let x = start(vec![a.ticket(), b.ticket()]).await;
    let nodes = [&a, &b, &x];
    let neighbours = |n: &Mesh| n.shared.with_member(|m| m.neighbours());
    for n in nodes {
        until(n, "both peers and a gossip neighbour", |n| {
            n.peers().len() == 2 && neighbours(n) > 0
        })
        .await;
    }
    for n in nodes {
        n.shared
            .gate
            .close_alpn(iroh_gossip::ALPN, net::gate::STRAY, b"blip");
    }
    for n in nodes {
        until(n, "no gossip neighbour after the blip", |n| {
            neighbours(n) == 0
        })
        .await;
    }
    for n in nodes {
        until(n, "a gossip neighbour again", |n| neighbours(n) > 0).await;
    }
    // Gossip carries again: X leaves, and A has it from X's `Leave` (not from a connection
    // found closed, which would say "lost").
    let mut events = a.subscribe();
    let x_id = x.node_id().to_string();
    x.shutdown().await;
    let reason = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(MeshEvent::PeerLeft { node_id, reason }) = events.recv().await {
                if node_id == x_id {
                    return reason;
                }
            }
        }
    })
    .await
    .expect("A heard of X's leave");
    assert_eq!(reason, "left");
    for n in [a, b] {
        n.abort().await;
    }
}
