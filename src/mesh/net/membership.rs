//! The membership driver: moves gossip messages between iroh-gossip and the pure peer table.
//! Every `heartbeat` it announces this node and refreshes path type and RTT of each peer; every
//! `sweep` it drops peers silent for longer than `expiry`. A new gossip neighbour triggers an
//! announcement at once. Changes become [`MeshEvent`]s; joins, leaves and changes in what a peer
//! serves also bump the roster watch (`Mesh::watch_roster`).
//!
//! A hostile member cannot exhaust it (docs/SECURITY.md, "Hostile members: membership"): each
//! message first passes the flood guard (`state::flood`, a map lookup), so a neighbour that
//! floods is banned and cut off (`Gate::ban`) before its junk costs a signature check; messages
//! with a `seq` outside the window of our clock are dropped; and every table is pruned at the
//! sweep (peer table, flood guard, gate, tunnel, known models; addresses of peers that left).

use std::collections::HashSet;
use std::time::Instant;

use futures::StreamExt;
use iroh_gossip::api::{Event as GossipEvent, GossipReceiver, GossipSender};
use tokio_util::sync::CancellationToken;

use super::stall;
use crate::mesh::proto::announce::{self, Message};
use crate::mesh::state::flood::{Verdict, BAN};
use crate::mesh::state::peers::{Change, ConnType, LeftBecause, PathState};
use crate::mesh::{MeshEvent, Shared};

pub(crate) async fn run(
    shared: std::sync::Arc<Shared>,
    sender: GossipSender,
    mut receiver: GossipReceiver,
    cancel: CancellationToken,
) {
    let timers = shared.timers;
    let mut heartbeat = tokio::time::interval(timers.heartbeat);
    let mut sweep = tokio::time::interval(timers.sweep);
    // When the subscription ends, the timers go on: peers must still expire and tables be pruned.
    let mut gossip_open = true;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            // What this node serves changed: announce it now (the tick below does).
            _ = shared.announce_now.notified() => heartbeat.reset_immediately(),
            _ = heartbeat.tick() => {
                let msg = Message::Announce(shared.announcement());
                let bytes = announce::encode(&shared.secret_key, &msg).into();
                if let Err(e) = stall::broadcast(&shared, &sender, bytes).await {
                    tracing::warn!("cannot broadcast heartbeat: {e}");
                }
                refresh_paths(&shared);
            }
            _ = sweep.tick() => {
                let changes = shared.with_table(|t| t.expire(Instant::now(), timers.expiry));
                if !changes.is_empty() {
                    shared.roster_changed();
                }
                publish(&shared, changes);
                prune(&shared);
            }
            event = receiver.next(), if gossip_open => match event {
                Some(Ok(GossipEvent::Received(m))) => receive(&shared, &m.content, m.delivered_from, m.scope.is_direct()),
                Some(Ok(GossipEvent::NeighborUp(id))) => {
                    tracing::debug!(peer = %id.fmt_short(), "gossip neighbour up");
                    // Announce now: a node that just joined learns our models without waiting
                    // for the next heartbeat.
                    heartbeat.reset_immediately();
                }
                Some(Ok(GossipEvent::NeighborDown(id))) => tracing::debug!(peer = %id.fmt_short(), "gossip neighbour down"),
                Some(Ok(GossipEvent::Lagged)) => tracing::warn!("gossip receiver lagged; some announcements were lost"),
                Some(Err(e)) => {
                    tracing::error!("gossip subscription failed: {e}; peers will expire");
                    gossip_open = false;
                }
                None => {
                    tracing::warn!("gossip subscription ended; peers will expire");
                    gossip_open = false;
                }
            },
        }
    }
}

pub(crate) fn receive(
    shared: &Shared,
    bytes: &[u8],
    delivered_from: iroh::EndpointId,
    direct: bool,
) {
    // This node left its mesh (`mesh leave`): a message still in flight changes nothing.
    if shared.gate.is_closed() {
        return;
    }
    let now = Instant::now();
    if !guard(
        shared,
        shared.with_flood(|f| f.arrived(delivered_from, direct, now)),
    ) {
        return;
    }
    let msg = match announce::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(from = %delivered_from.fmt_short(), "dropped gossip message: {e}");
            return;
        }
    };
    if !announce::sender_matches(msg.node(), delivered_from, direct) {
        tracing::debug!(from = %delivered_from.fmt_short(), "dropped gossip message: sender does not match the connection");
        return;
    }
    if msg.node() == shared.secret_key.public() {
        return;
    }
    if !announce::seq_in_window(msg.seq(), crate::util::time::unix_micros()) {
        tracing::debug!(node = %msg.node().fmt_short(), "dropped gossip message: seq outside the window of our clock");
        return;
    }
    let node = msg.node();
    if !guard(
        shared,
        shared.with_flood(|f| f.authored(node, delivered_from, now)),
    ) {
        return;
    }
    let addr = match &msg {
        Message::Announce(a) => Some(shared.dial.tidy(&a.addr)),
        Message::Leave { .. } => None,
    };
    let served = |t: &crate::mesh::state::peers::PeerTable| {
        t.get(&node).map(|p| {
            p.ann
                .models
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        })
    };
    let (changes, reshaped, member) = shared.with_table(|t| {
        // Checked again under the table's lock: `leave` closes the gate, then empties the
        // table, so a message that passed the first check cannot land after the emptying.
        if shared.gate.is_closed() {
            return (Vec::new(), false, false);
        }
        let before = served(t);
        let changes = t.apply(msg, now);
        (changes, before != served(t), t.get(&node).is_some())
    });
    // Only members' addresses are dialled (not those of strangers a full table refused).
    if let (Some(addr), true) = (addr, member) {
        shared.lookup.add_endpoint_info(addr);
    }
    if reshaped {
        shared.roster_changed();
    }
    publish(shared, changes);
}

/// Acts on the flood guard's verdict; `true` when the message goes on.
fn guard(shared: &Shared, verdict: Verdict) -> bool {
    match verdict {
        Verdict::Pass => true,
        Verdict::Drop => false,
        Verdict::Ban(id) => {
            tracing::warn!(peer = %id.fmt_short(), "banned for {BAN:?}: too many gossip messages");
            // Closing its connections drops it as a gossip neighbour; the gate refuses it
            // (admission included) until the ban ends.
            shared.gate.ban(id, Instant::now() + BAN);
            shared.tunnel.forget(&id);
            false
        }
    }
}

/// Keeps every table membership grows within the peers (called at each sweep).
fn prune(shared: &Shared) {
    let now = Instant::now();
    let (peers, served): (HashSet<_>, _) =
        shared.with_table(|t| (t.peers().map(|p| p.ann.node).collect(), t.models_set()));
    shared.with_flood(|f| f.prune(now));
    shared.gate.prune(|id| peers.contains(id), now);
    shared.tunnel.prune(now);
    if let Ok(mut known) = shared.known_models.lock() {
        known.prune(&served, now);
    }
}

/// Turns table changes into events, and keeps the tunnel and gate in step with them.
pub(crate) fn publish(shared: &Shared, changes: Vec<Change>) {
    for change in changes {
        let event = match change {
            Change::Joined(id) => {
                tracing::info!(peer = %id.fmt_short(), "peer joined");
                // Open the tunnel now: the first request then pays no handshake, and the peer
                // table gets path type and RTT.
                let tunnel = shared.tunnel.clone();
                tunnel.clear_down(&id);
                tokio::spawn(async move {
                    if let Err(e) = tunnel.connection(id).await {
                        tracing::debug!("cannot open tunnel yet: {e}");
                    }
                });
                MeshEvent::PeerJoined {
                    node_id: id.to_string(),
                }
            }
            Change::Left(id, why) => {
                let reason = match why {
                    LeftBecause::Leave => "left",
                    LeftBecause::Expired => "expired",
                };
                tracing::info!(peer = %id.fmt_short(), reason, "peer left");
                shared.tunnel.forget(&id);
                shared.gate.revoke(&id);
                shared.lookup.remove_endpoint_info(id);
                MeshEvent::PeerLeft {
                    node_id: id.to_string(),
                    reason: reason.into(),
                }
            }
            Change::ModelAdded(model) => {
                shared.remember_model(&model);
                MeshEvent::ModelAdded { model }
            }
            Change::ModelRemoved(model) => MeshEvent::ModelRemoved { model },
        };
        // No subscribers is fine.
        let _ = shared.events.send(event);
    }
}

/// Reads the selected path of each peer's tunnel connection: direct or relayed, its RTT, and
/// whether a direct path is being tried beside a relayed one. A switch between relay and direct
/// becomes a [`MeshEvent::PathChanged`].
fn refresh_paths(shared: &Shared) {
    let ids: Vec<_> = shared.with_table(|t| t.peers().map(|p| p.ann.node).collect());
    for id in ids {
        let path = match shared.tunnel.cached(&id) {
            None => PathState {
                conn: ConnType::None,
                rtt: None,
                trying_direct: false,
            },
            Some(c) => path_state(&c.paths()),
        };
        if let Some(from) = shared.with_table(|t| t.set_path(&id, path)) {
            tracing::info!(peer = %id.fmt_short(), from = from.as_str(), to = path.conn.as_str(), "path changed");
            let _ = shared.events.send(MeshEvent::PathChanged {
                node_id: id.to_string(),
                from,
                to: path.conn,
                rtt_ms: path.rtt.map(|d| d.as_secs_f64() * 1000.0),
            });
        }
    }
}

fn path_state(paths: &iroh::endpoint::PathList<'_>) -> PathState {
    let selected = paths.iter().find(|p| p.is_selected());
    let conn = match &selected {
        Some(p) if p.is_relay() => ConnType::Relay,
        Some(_) => ConnType::Direct,
        None => ConnType::None,
    };
    PathState {
        conn,
        rtt: selected.map(|p| p.rtt()),
        trying_direct: conn == ConnType::Relay && paths.iter().any(|p| p.is_ip()),
    }
}
