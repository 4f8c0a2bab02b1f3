//! Hand-made gossip connections to a real node on loopback (a real gossip stack would behave):
//! - a member that accepts this node's gossip stream and never reads it (iroh-gossip issue
//!   #47): once QUIC's window and the library's queue to it are full, iroh-gossip's actor
//!   blocks, and without `net::stall` the node's gossip stays dead for good;
//! - a member that is no gossip neighbour but keeps a gossip connection open, which the node
//!   closes (`Member::strays`).

use std::sync::Arc;
use std::time::Duration;

use iroh::SecretKey;

use super::hostile_tests::start;
use super::net::{admit, endpoint, gate::Gate, stall};
use super::*;

/// A length-prefixed frame as iroh-gossip writes them (u32 big-endian length, then the bytes).
fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Hand-made bytes of a gossip message (`topic::Message` in postcard), checked to decode as
/// the message `expect` names, so a change of iroh-gossip's encoding fails here, not later.
fn gossip_message(bytes: &[u8], expect: &str) -> Vec<u8> {
    let decoded: iroh_gossip::proto::topic::Message<iroh::PublicKey> =
        postcard::from_bytes(bytes).expect("a gossip message");
    assert!(format!("{decoded:?}").starts_with(expect), "{decoded:?}");
    bytes.to_vec()
}

/// X, an endpoint that proves membership to `a`, then opens a gossip connection to it and a
/// stream on it with `a`'s topic in the stream header.
async fn gossip_connection(
    a: &Mesh,
) -> (
    iroh::Endpoint,
    iroh::endpoint::Connection,
    iroh::endpoint::SendStream,
) {
    let a_addr = a.endpoint().addr();
    let x = endpoint::builder(&NetConfig::offline(), SecretKey::generate())
        .clear_ip_transports()
        .bind_addr((std::net::Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .bind()
        .await
        .unwrap();
    admit::dial(&x, a_addr.clone(), &a.shared.keys, &Gate::default())
        .await
        .unwrap();
    let conn = x.connect(a_addr, iroh_gossip::ALPN).await.unwrap();
    let mut stream = conn.open_uni().await.unwrap();
    stream
        .write_all(&frame(&a.shared.keys.topic()))
        .await
        .unwrap();
    (x, conn, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_that_never_reads_gossip_cannot_block_a_node_for_good() {
    let a = start(vec![]).await;
    // X proves membership, then joins A's topic on a gossip connection it never reads from.
    let (x, conn, mut stream) = gossip_connection(&a).await;
    // On a topic's stream, after the header, each frame is a postcard `topic::Message`:
    // `Swarm(Join(None))` is the variant indexes of Swarm and Join, then None.
    let join = gossip_message(&[0, 0, 0], "Swarm(Join(None");
    stream.write_all(&frame(&join)).await.unwrap();
    // A answers the join on a stream of its own (X is its neighbour now); X takes the stream
    // and never reads it.
    let _unread = tokio::time::timeout(Duration::from_secs(10), conn.accept_uni())
        .await
        .expect("A answers X's join")
        .unwrap();

    // A broadcasts as a busy node would; X is its only neighbour and takes none of it. 1.25 MB
    // of QUIC window and 64 queued messages block the actor after some 400 of these.
    let sender = a.gossip_sender_for_tests();
    let junk = vec![0x5a_u8; 4000];
    let mut sent = 0;
    for i in 0..3000u32 {
        let mut m = junk.clone();
        m[..4].copy_from_slice(&i.to_be_bytes());
        match tokio::time::timeout(Duration::from_secs(10), sender.broadcast(m.into())).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(
        a.gossip_stalls() >= 1,
        "A's gossip never stalled ({sent} messages went out): the attack did not work"
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("A closed X's gossip connection");
    assert!(
        format!("{reason:?}").contains(&stall::STALLED.to_string()),
        "closed for {reason:?}"
    );

    // A's gossip works again: a newcomer and A see each other.
    let b = start(vec![a.ticket()]).await;
    let (a_id, b_id) = (a.node_id().to_string(), b.node_id().to_string());
    let sees = |n: &Mesh, id: &str| n.peers().iter().any(|p| p.node_id == id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(sees(&a, &b_id) && sees(&b, &a_id)) {
        assert!(
            Instant::now() < deadline,
            "A's gossip is still blocked: B sees A {}, A sees B {}",
            sees(&b, &a_id),
            sees(&a, &b_id)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    x.close().await;
    b.abort().await;
    a.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gossip_connection_of_a_peer_that_is_no_neighbour_is_closed() {
    let stray = Duration::from_millis(500);
    let start_short = |join| {
        let mut cfg = super::hostile_tests::config_with(SecretKey::generate(), join);
        cfg.timers.stray = stray;
        let nothing: ServingFn = Arc::new(Serving::default);
        Mesh::start(cfg, nothing, axum::Router::new())
    };
    let a = start_short(vec![]).await.unwrap();
    let b = start_short(vec![a.ticket()]).await.unwrap();
    super::hostile_tests::until(&a, "B joins A", |a| a.peers().len() == 1).await;

    // X sends A a PlumTree `Prune` without ever joining A's active view: A adds X to its push
    // sets and would keep pushing to it (an `IHave` per broadcast) on a connection nobody
    // closes; this is what PlumTree does with a graft or prune that crossed a view change.
    let (x, conn, mut stream) = gossip_connection(&a).await;
    let prune = gossip_message(&[1, 1], "Gossip(Prune");
    stream.write_all(&frame(&prune)).await.unwrap();

    let reason = tokio::time::timeout(stray * 4 + Duration::from_secs(5), conn.closed())
        .await
        .expect("A closed X's stray gossip connection");
    assert!(
        format!("{reason:?}").contains(&super::net::gate::STRAY.to_string()),
        "closed for {reason:?}"
    );
    // B, A's gossip neighbour all along, keeps its gossip connection.
    let b_id = b.node_id();
    let open = a.shared.gate.open_on(iroh_gossip::ALPN);
    assert!(
        open.iter().any(|(c, _)| c.remote_id() == b_id),
        "A closed its neighbour's gossip connection too"
    );
    x.close().await;
    b.abort().await;
    a.abort().await;
}
