//! The gossip stall watchdog. iroh-gossip's actor hands each message for a neighbour to that
//! neighbour's send queue and *waits* when the queue is full (iroh-gossip issue #47). A member
//! that accepts our gossip stream and never reads it fills QUIC's flow-control window, then the
//! queue, and then the actor blocks: no broadcast, join or delivery happens any more on this
//! node, for good. Two nodes flooded at once can also block each other that way (each actor
//! waits on the other's full queue while its own receiving waits on its actor).
//!
//! Every broadcast of ours goes through [`broadcast`], which gives up after [`GOSSIP_STALL`]
//! (an honest actor takes microseconds: it only queues the command). A stall is counted, every
//! gossip connection of this node is closed (a send blocked on a closed connection fails, which
//! frees the actor), and a few members of the peer table, chosen at random, are joined again
//! (all of them, up to 1,024, would each take the node into its active view and forward its
//! join: a storm in a big mesh; gossip then finds the rest). We cannot tell from
//! outside the library which neighbour stopped reading, so all of them are cut, honest ones
//! included; each comes back as a new gossip neighbour, which announces both sides again
//! (docs/SECURITY.md, "Block a node's gossip for good").

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iroh_gossip::api::GossipSender;
use rand::seq::IteratorRandom;

use crate::mesh::state::alone::REJOIN_PEERS;
use crate::mesh::Shared;

/// How long one broadcast may wait for iroh-gossip's actor before the node treats its gossip
/// as stalled. Queuing a command takes microseconds; only a blocked actor (or one 64 commands
/// behind) makes a broadcast wait at all.
pub const GOSSIP_STALL: Duration = Duration::from_secs(2);
/// QUIC close code for gossip connections closed to free a stalled actor.
pub const STALLED: u32 = 503;

/// Broadcasts `bytes` on the mesh topic; when the actor does not take them within
/// [`GOSSIP_STALL`], frees it (see the module doc) and returns an error.
pub(crate) async fn broadcast(
    shared: &Arc<Shared>,
    sender: &GossipSender,
    bytes: bytes::Bytes,
) -> Result<(), String> {
    watched(shared, sender, sender.broadcast(bytes)).await
}

/// Sends `bytes` to this node's gossip neighbours only, watched like [`broadcast`].
pub(crate) async fn broadcast_neighbours(
    shared: &Arc<Shared>,
    sender: &GossipSender,
    bytes: bytes::Bytes,
) -> Result<(), String> {
    watched(shared, sender, sender.broadcast_neighbors(bytes)).await
}

async fn watched<E: std::fmt::Display>(
    shared: &Arc<Shared>,
    sender: &GossipSender,
    send: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(GOSSIP_STALL, send).await {
        Ok(sent) => sent.map_err(|e| e.to_string()),
        Err(_) => {
            unstall(shared, sender);
            Err(format!("gossip stalled for {GOSSIP_STALL:?}"))
        }
    }
}

/// Closes every gossip connection and joins [`REJOIN_PEERS`] of the table's members, at random,
/// again (in the background, so the membership driver's timers go on).
fn unstall(shared: &Arc<Shared>, sender: &GossipSender) {
    shared.gossip_stalls.fetch_add(1, Ordering::Relaxed);
    let closed = shared
        .gate
        .close_alpn(iroh_gossip::ALPN, STALLED, b"gossip stalled");
    tracing::warn!(
        closed,
        "gossip stalled for {GOSSIP_STALL:?} (a neighbour stopped reading?): closed this node's \
         gossip connections, joining the members again"
    );
    let peers: Vec<_> = shared.with_table(|t| t.peers().map(|p| p.ann.node).collect());
    let (sender, gate) = (sender.clone(), shared.gate.clone());
    tokio::spawn(async move {
        let peers = peers
            .into_iter()
            .filter(|id| !gate.is_banned(id))
            .choose_multiple(&mut rand::rng(), REJOIN_PEERS);
        let joined = tokio::time::timeout(GOSSIP_STALL, sender.join_peers(peers)).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::warn!("gossip still stalled after closing its connections");
        }
    });
}
