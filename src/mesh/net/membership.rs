//! The membership driver: moves bytes and timers for the sans-IO membership protocol
//! (`state::member`), which decides everything: it feeds it iroh-gossip's events, a sweep
//! every `Timers::sweep` with the tunnel connections that closed, probe answers and roster
//! entries, and carries out the actions it returns:
//!
//! - announcing this node when the schedule says so ([`announce`] is the one place that
//!   broadcasts it; at every sweep, and at once on a new neighbour, a `Down` report about this
//!   node, or a change in what it serves);
//! - dialling suspects (`ping`), broadcasting signed `Down` reports about peers found gone,
//!   asking a new neighbour for its roster (`net::roster`), banning flooders (`Gate::ban`);
//! - turning table changes into [`MeshEvent`]s and the roster watch (`Mesh::watch_roster`),
//!   keeping tunnel, gate and address lookup in step.
//!
//! Path type and RTT of each peer are read every [`PATHS_EVERY`] from the local connections,
//! and every table membership grows is pruned at the sweep (docs/SECURITY.md, "Hostile
//! members: membership"). Every broadcast goes through the stall watchdog (`net::stall`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use iroh::EndpointId;
use iroh_gossip::api::{Event as GossipEvent, GossipReceiver, GossipSender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gate::STRAY;
use super::{ping, roster, stall};
use crate::mesh::proto::announce::{self, Message};
use crate::mesh::proto::roster::Roster;
use crate::mesh::state::flood::BAN;
use crate::mesh::state::liveness::{Fingerprint, MAX_PROBES};
use crate::mesh::state::member::{Action, Audience, Cx, Member};
use crate::mesh::state::peers::{Change, ConnType, LeftBecause, PathState};
use crate::mesh::{MeshEvent, Shared};

/// How often path type and RTT are read from the local connections.
pub const PATHS_EVERY: Duration = Duration::from_secs(1);
/// Up to this many peers the tunnel is opened to every peer as it joins (its path type and RTT
/// show at once, its death is seen from the connection); beyond, a tunnel is opened by the
/// first request routed to a peer, and closed after `Timers::tunnel_idle` without use, so a
/// node's connections (each sends keep-alives) grow with the peers it uses, not with the mesh.
/// A node counts from its first roster on: before it, its table's size says nothing of the
/// mesh's.
pub const EAGER_TUNNEL_PEERS: usize = 32;
/// How long handing gossip a join (`Action::Rejoin`) may take.
const REJOIN_SEND: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    shared: Arc<Shared>,
    sender: GossipSender,
    mut receiver: GossipReceiver,
    cancel: CancellationToken,
) {
    let (probed_tx, mut probed) = mpsc::channel::<(EndpointId, bool)>(MAX_PROBES);
    let (rosters_tx, mut rosters) = mpsc::channel::<(EndpointId, Result<Roster, String>)>(1);
    let io = Io {
        shared: &shared,
        sender: &sender,
        probed: &probed_tx,
        rosters: &rosters_tx,
    };
    let mut sweep = tokio::time::interval(shared.timers.sweep);
    let mut paths = tokio::time::interval(PATHS_EVERY);
    // When the subscription ends, the timers go on: peers must still expire and tables be pruned.
    let mut gossip_open = true;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            // What this node serves changed, or the protocol asked to announce now.
            _ = shared.announce_now.notified() => {
                shared.with_member(|m| m.force());
                announce(&shared, &sender).await;
            }
            _ = sweep.tick() => {
                announce(&shared, &sender).await;
                let lost = shared.tunnel.take_lost(Instant::now());
                io.carry_out(step(&shared, |m, cx| m.sweep(cx, &lost))).await;
                close_strays(&shared);
                close_idle_tunnels(&shared);
                prune(&shared);
            }
            _ = paths.tick() => refresh_paths(&shared),
            Some((id, alive)) = probed.recv() => {
                if !alive {
                    tracing::info!(peer = %id.fmt_short(), "no answer to a dial");
                }
                io.carry_out(step(&shared, |m, cx| m.probed(cx, id, alive))).await;
            }
            Some((from, answer)) = rosters.recv() => match answer {
                Ok(answer) => receive_roster(&shared, &io, from, answer).await,
                Err(e) => {
                    tracing::debug!(peer = %from.fmt_short(), "cannot fetch the roster: {e}");
                    shared.with_member(|m| m.roster_failed());
                }
            },
            event = receiver.next(), if gossip_open => match event {
                Some(Ok(GossipEvent::Received(m))) => receive(&shared, &m.content, m.delivered_from, m.scope.is_direct()),
                Some(Ok(GossipEvent::NeighborUp(id))) => {
                    tracing::debug!(peer = %id.fmt_short(), "gossip neighbour up");
                    io.carry_out(step(&shared, |m, cx| m.neighbour_up(cx, id))).await;
                }
                Some(Ok(GossipEvent::NeighborDown(id))) => {
                    tracing::debug!(peer = %id.fmt_short(), "gossip neighbour down");
                    io.carry_out(step(&shared, |m, cx| m.neighbour_down(cx, id))).await;
                }
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

/// Runs one event through the protocol with the tables locked (member, flood guard, peer
/// table, in that order everywhere) and both clocks read now. Nothing happens once this node
/// left its mesh (`mesh leave`): `leave` closes the gate, then empties the table, so a message
/// that passed an earlier check cannot land after the emptying.
fn step(shared: &Shared, f: impl FnOnce(&mut Member, &mut Cx) -> Vec<Action>) -> Vec<Action> {
    shared.with_member(|member| {
        shared.with_flood(|flood| {
            shared.with_table(|table| {
                if shared.gate.is_closed() {
                    return Vec::new();
                }
                let mut cx = Cx {
                    table,
                    flood,
                    now: Instant::now(),
                    unix_micros: crate::util::time::unix_micros(),
                };
                f(member, &mut cx)
            })
        })
    })
}

/// A gossip message: decoded, checked and applied (for the driver, and the attacker tests that
/// hand messages in directly). What it asks for is all done here, at once.
pub(crate) fn receive(shared: &Shared, bytes: &[u8], delivered_from: EndpointId, direct: bool) {
    for action in step(shared, |m, cx| {
        m.received(cx, bytes, delivered_from, direct)
    }) {
        if let Some(left) = apply(shared, action) {
            tracing::debug!("a gossip message asked for {left:?}: not done");
        }
    }
}

/// Neighbour `from`'s roster came: each entry checked and applied, then its end (the
/// catch-up's list). The first roster tells the mesh's size: in a small mesh the peers heard
/// of before it get their tunnels.
async fn receive_roster(shared: &Arc<Shared>, io: &Io<'_>, from: EndpointId, answer: Roster) {
    let (n, complete) = (answer.entries.len(), answer.complete);
    for bytes in answer.entries {
        io.carry_out(step(shared, |m, cx| m.roster_entry(cx, bytes, from)))
            .await;
    }
    io.carry_out(step(shared, |m, cx| m.roster_end(cx, from, complete)))
        .await;
    if !shared.roster_seen.send_replace(true) {
        let ids: Vec<_> = shared.with_table(|t| {
            if t.len() > EAGER_TUNNEL_PEERS {
                return Vec::new();
            }
            t.peers().map(|p| p.ann.node).collect()
        });
        for id in ids
            .into_iter()
            .filter(|id| shared.tunnel.cached(id).is_none())
        {
            open_eager_tunnel(shared, id);
        }
    }
    tracing::debug!(peer = %from.fmt_short(), entries = n, complete, "roster received");
}

/// A roster entry from neighbour `from` (for the attacker tests; the driver takes whole rosters).
#[cfg(test)]
pub(crate) fn receive_roster_entry(shared: &Shared, bytes: bytes::Bytes, from: EndpointId) {
    for action in step(shared, |m, cx| m.roster_entry(cx, bytes, from)) {
        apply(shared, action);
    }
}

/// Carries out the actions that need no waiting; returns the others.
fn apply(shared: &Shared, action: Action) -> Option<Action> {
    match action {
        Action::Announce => shared.announce_now.notify_one(),
        Action::Ban(id) => {
            tracing::warn!(peer = %id.fmt_short(), "banned for {BAN:?}: too many gossip messages");
            // Closing its connections drops it as a gossip neighbour; the gate refuses it
            // (admission included) until the ban ends.
            shared.gate.ban(id, Instant::now() + BAN);
            shared.tunnel.forget(&id);
        }
        Action::Changed(changes) => {
            shared.roster_changed();
            publish(shared, changes);
        }
        Action::Reshaped => shared.roster_changed(),
        Action::Learned(addr) => shared.lookup.add_endpoint_info(shared.dial.tidy(&addr)),
        wait @ (Action::ReportDown { .. }
        | Action::Probe(_)
        | Action::FetchRoster(_)
        | Action::Rejoin(_)) => return Some(wait),
    }
    None
}

/// What the driver needs to carry out actions that take time.
struct Io<'a> {
    shared: &'a Arc<Shared>,
    sender: &'a GossipSender,
    probed: &'a mpsc::Sender<(EndpointId, bool)>,
    rosters: &'a mpsc::Sender<(EndpointId, Result<Roster, String>)>,
}

impl Io<'_> {
    async fn carry_out(&self, actions: Vec<Action>) {
        for action in actions {
            match apply(self.shared, action) {
                None => {}
                Some(Action::ReportDown { about, about_seq }) => {
                    tracing::info!(peer = %about.fmt_short(), "peer gone: reporting it down");
                    let down = Message::Down {
                        node: self.shared.secret_key.public(),
                        seq: crate::util::time::unix_micros(),
                        about,
                        about_seq,
                    };
                    let bytes = announce::encode(&self.shared.secret_key, &down).into();
                    if let Err(e) = stall::broadcast(self.shared, self.sender, bytes).await {
                        tracing::warn!("cannot broadcast a down report: {e}");
                    }
                }
                Some(Action::Rejoin(ids)) => {
                    tracing::info!(
                        members = ids.len(),
                        "no gossip neighbour: asking members to take this node in again"
                    );
                    // The actor's command queue; a stalled actor must not hold the driver.
                    let join = self.sender.join_peers(ids);
                    if !matches!(tokio::time::timeout(REJOIN_SEND, join).await, Ok(Ok(()))) {
                        tracing::warn!("cannot ask gossip to join members");
                    }
                }
                Some(Action::Probe(id)) => {
                    let (endpoint, probed) = (self.shared.endpoint.clone(), self.probed.clone());
                    let within = self.shared.timers.probe;
                    tokio::spawn(async move {
                        let alive = matches!(
                            tokio::time::timeout(within, endpoint.connect(id, ping::ALPN)).await,
                            Ok(Ok(_))
                        );
                        let _ = probed.send((id, alive)).await;
                    });
                }
                Some(Action::FetchRoster(id)) => {
                    let (shared, rosters) = (self.shared.clone(), self.rosters.clone());
                    tokio::spawn(async move {
                        let answer = roster::fetch(&shared.endpoint, id).await;
                        let _ = rosters.send((id, answer)).await;
                    });
                }
                Some(other) => tracing::debug!("not carried out: {other:?}"),
            }
        }
    }
}

/// Announces this node when the schedule says so: the one place its announcement is sent.
async fn announce(shared: &Arc<Shared>, sender: &GossipSender) {
    // Leaving: an announcement signed after the `Leave` would bring this node back.
    if shared.leaving.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let ann = shared.announcement();
    let fp = Fingerprint::of(&ann);
    let Some(audience) = shared.with_member(|m| m.announce_due(Instant::now(), fp)) else {
        return;
    };
    let bytes = announce::encode(&shared.secret_key, &Message::Announce(ann)).into();
    let sent = match audience {
        Audience::Mesh => stall::broadcast(shared, sender, bytes).await,
        Audience::Neighbours => stall::broadcast_neighbours(shared, sender, bytes).await,
    };
    if let Err(e) = sent {
        tracing::warn!("cannot broadcast the announcement: {e}");
    }
}

/// Closes gossip connections to peers long out of gossip's active view (`Member::strays`:
/// iroh-gossip would push to some of them, and keep-alives hold them open, for good).
fn close_strays(shared: &Shared) {
    let open = shared.gate.open_on(iroh_gossip::ALPN);
    if open.is_empty() {
        return;
    }
    let peers: Vec<_> = open.iter().map(|(c, at)| (c.remote_id(), *at)).collect();
    let strays = shared.with_member(|m| m.strays(Instant::now(), &peers));
    for (conn, _) in open.iter().filter(|(c, _)| strays.contains(&c.remote_id())) {
        tracing::debug!(peer = %conn.remote_id().fmt_short(), "closing a gossip connection to a peer that is no gossip neighbour");
        conn.close(STRAY.into(), b"not a gossip neighbour");
    }
}

/// Once the mesh is past eager tunnels, closes the tunnels unused for `Timers::tunnel_idle`:
/// those opened while it was small, and those of requests long done.
fn close_idle_tunnels(shared: &Shared) {
    let grown = *shared.roster_seen.borrow() && shared.with_table(|t| t.len() > EAGER_TUNNEL_PEERS);
    if grown {
        shared
            .tunnel
            .close_idle(Instant::now(), shared.timers.tunnel_idle);
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
                shared.tunnel.clear_down(&id);
                let eager = *shared.roster_seen.borrow()
                    && shared.with_table(|t| t.len() <= EAGER_TUNNEL_PEERS);
                if eager {
                    open_eager_tunnel(shared, id);
                }
                MeshEvent::PeerJoined {
                    node_id: id.to_string(),
                }
            }
            Change::Left(id, why) => {
                let reason = match why {
                    LeftBecause::Leave => "left",
                    LeftBecause::Expired => "expired",
                    LeftBecause::Lost => "lost",
                };
                tracing::info!(peer = %id.fmt_short(), reason, "peer left");
                shared.tunnel.forget(&id);
                shared.gate.revoke(&id);
                shared.rpc.holder_left(&id);
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

/// In a small mesh a peer's tunnel opens when it joins: the first request then pays no
/// handshake, the peer table gets path type and RTT, and the peer's death shows on the
/// connection. A peer that cannot be reached at all is checked by the next sweep.
fn open_eager_tunnel(shared: &Shared, id: EndpointId) {
    let tunnel = shared.tunnel.clone();
    tokio::spawn(async move {
        if let Err(e) = tunnel.connection(id).await {
            tracing::debug!("cannot open tunnel yet: {e}");
            tunnel.note_unreachable(id);
        }
    });
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
