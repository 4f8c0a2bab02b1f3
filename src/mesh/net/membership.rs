//! The membership driver: moves gossip messages between iroh-gossip and the pure peer table,
//! and carries out `state::liveness`'s decisions; it only moves bytes and timers.
//!
//! - Announcements: at every `sweep` (and at once when asked: serving changed, a new gossip
//!   neighbour, a `Down` report about this node) it asks the schedule whether to announce:
//!   on a change, else once per `refresh` ([`announce`] is the one place that broadcasts).
//! - Liveness: at every sweep it reads which tunnel connections closed (a timeout: gone; closed
//!   by the peer: dial it), and drops suspects whose report went unrefuted; a gossip neighbour
//!   that went down is dialled within `probe`. A peer found gone leaves the table and the mesh
//!   is told with a signed `Down`. Peers silent for `expiry` expire (the fallback).
//! - Roster: a new gossip neighbour is asked for its table of signed announcements
//!   (`net::roster`), so a newcomer knows the whole mesh at once.
//! - Path type and RTT of each peer are read every [`PATHS_EVERY`] from the local connections.
//!
//! Changes become [`MeshEvent`]s; joins, leaves and changes in what a peer serves also bump
//! the roster watch (`Mesh::watch_roster`).
//!
//! A hostile member cannot exhaust it (docs/SECURITY.md, "Hostile members: membership"): each
//! message first passes the flood guard (`state::flood`, a map lookup), so a neighbour that
//! floods is banned, cut off (`Gate::ban`) and dropped from the table before its junk costs a
//! signature check; messages with a `seq` outside the window of our clock are dropped; every
//! table is pruned at the sweep (peer table, flood guard, gate, tunnel, known models, liveness;
//! addresses of peers that left); a false `Down` report costs its victim one announcement.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use iroh::EndpointId;
use iroh_gossip::api::{Event as GossipEvent, GossipReceiver, GossipSender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ping, roster};
use crate::mesh::proto::announce::{self, Message};
use crate::mesh::state::flood::{Verdict, BAN};
use crate::mesh::state::liveness::{self, Fingerprint, Report, Schedule, Signal, MAX_PROBES};
use crate::mesh::state::peers::{Change, ConnType, LeftBecause, PathState};
use crate::mesh::{MeshEvent, Shared};

/// Longest wait for iroh-gossip to take one message to send.
pub const BROADCAST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often path type and RTT are read from the local connections.
pub const PATHS_EVERY: Duration = Duration::from_secs(1);
/// Up to this many peers the tunnel is opened to every peer as it joins (its path type and RTT
/// show at once, its death is seen from the connection); beyond, a tunnel is opened by the
/// first request routed to a peer, so a node's connections (each sends keep-alives) grow with
/// the peers it uses, not with the mesh.
pub const EAGER_TUNNEL_PEERS: usize = 32;

pub(crate) async fn run(
    shared: Arc<Shared>,
    sender: GossipSender,
    mut receiver: GossipReceiver,
    cancel: CancellationToken,
) {
    let timers = shared.timers;
    let mut schedule = Schedule::new(timers);
    let (probed_tx, mut probed) = mpsc::channel::<(EndpointId, bool)>(MAX_PROBES);
    let mut sweep = tokio::time::interval(timers.sweep);
    let mut paths = tokio::time::interval(PATHS_EVERY);
    // When the subscription ends, the timers go on: peers must still expire and tables be pruned.
    let mut gossip_open = true;
    // The newest gossip neighbour, asked again for the roster at the recheck.
    let mut neighbour: Option<EndpointId> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            // What this node serves changed, or a member reported it down: announce now.
            _ = shared.announce_now.notified() => {
                schedule.force();
                announce(&shared, &sender, &mut schedule).await;
            }
            _ = sweep.tick() => {
                announce(&shared, &sender, &mut schedule).await;
                let now = Instant::now();
                for (id, timed_out) in shared.tunnel.take_lost(now) {
                    let signal = if timed_out { Signal::TimedOut } else { Signal::Lost };
                    act(&shared, &sender, &probed_tx, id, signal, "tunnel connection").await;
                }
                let gone = {
                    let table = |id: &EndpointId| shared.with_table(|t| t.seq_of(id));
                    shared.with_liveness(|l| l.suspicions_due(now, table))
                };
                for id in gone {
                    tracing::info!(peer = %id.fmt_short(), "reported down and no refutation: peer gone");
                    let changes = shared.with_table(|t| t.lose(&id));
                    changed(&shared, changes);
                }
                // A full table refused strangers: check that its stalest peers still exist.
                let (refused, peers) = shared.with_table(|t| (t.take_refused(), t.len()));
                let (free, probing) = shared.with_liveness(|l| l.pressure(refused, peers, now));
                if free > 0 {
                    let stalest = shared.with_table(|t| t.stalest(free, &probing));
                    for id in stalest {
                        act(&shared, &sender, &probed_tx, id, Signal::Lost, "full table").await;
                    }
                }
                let changes = shared.with_table(|t| t.expire(now, timers.expiry));
                changed(&shared, changes);
                if let Some(id) = neighbour {
                    if shared.with_liveness(|l| l.roster_due(now, false)) {
                        tokio::spawn(fetch_roster(shared.clone(), id));
                    }
                }
                shared.with_liveness(|l| l.prune(now));
                prune(&shared);
            }
            _ = paths.tick() => refresh_paths(&shared),
            Some((id, alive)) = probed.recv() => {
                if alive {
                    shared.with_table(|t| t.touch(&id, Instant::now()));
                }
                if shared.with_liveness(|l| l.answered(id, alive)) == liveness::Verdict::Gone {
                    tracing::info!(peer = %id.fmt_short(), "no answer to a dial: peer gone");
                    lose(&shared, &sender, id).await;
                }
            }
            event = receiver.next(), if gossip_open => match event {
                Some(Ok(GossipEvent::Received(m))) => receive(&shared, &m.content, m.delivered_from, m.scope.is_direct()),
                Some(Ok(GossipEvent::NeighborUp(id))) => {
                    tracing::debug!(peer = %id.fmt_short(), "gossip neighbour up");
                    // Announce now: the neighbour learns this node without waiting for the
                    // next refresh; and learn the whole mesh from it.
                    schedule.force();
                    announce(&shared, &sender, &mut schedule).await;
                    neighbour = Some(id);
                    if shared.with_liveness(|l| l.roster_due(Instant::now(), true)) {
                        tokio::spawn(fetch_roster(shared.clone(), id));
                    }
                }
                Some(Ok(GossipEvent::NeighborDown(id))) => {
                    tracing::debug!(peer = %id.fmt_short(), "gossip neighbour down");
                    act(&shared, &sender, &probed_tx, id, Signal::Lost, "gossip neighbour").await;
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

/// Announces this node when the schedule says so: the one place its announcement is sent.
async fn announce(shared: &Shared, sender: &GossipSender, schedule: &mut Schedule) {
    let ann = shared.announcement();
    let (now, fp) = (Instant::now(), Fingerprint::of(&ann));
    if !schedule.due(now, fp) {
        return;
    }
    schedule.sent(now, fp);
    broadcast(shared, sender, &Message::Announce(ann), "announcement").await;
}

/// Sends a message on the topic without holding up the driver: a gossip actor slow to take
/// it must not stop the sweep (expiry, suspects, probes). Each send gives up after
/// [`BROADCAST_TIMEOUT`], so at most a few are ever pending.
async fn broadcast(shared: &Shared, sender: &GossipSender, msg: &Message, what: &'static str) {
    let bytes = announce::encode(&shared.secret_key, msg);
    let sender = sender.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(BROADCAST_TIMEOUT, sender.broadcast(bytes.into())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot broadcast {what}: {e}"),
            Err(_) => tracing::warn!(
                "cannot broadcast {what}: gossip did not take it within {BROADCAST_TIMEOUT:?}"
            ),
        }
    });
}

/// Acts on what this node saw of `id`'s connection: drop it now, or dial it first.
async fn act(
    shared: &Arc<Shared>,
    sender: &GossipSender,
    probed: &mpsc::Sender<(EndpointId, bool)>,
    id: EndpointId,
    signal: Signal,
    what: &str,
) {
    let member = shared.with_table(|t| t.get(&id).is_some());
    let now = Instant::now();
    match shared.with_liveness(|l| l.signal(id, signal, member, now)) {
        liveness::Verdict::Nothing => {}
        liveness::Verdict::Gone => {
            tracing::info!(peer = %id.fmt_short(), "{what}: connection timed out, peer gone");
            lose(shared, sender, id).await;
        }
        liveness::Verdict::Probe => {
            let (endpoint, probed, within) =
                (shared.endpoint.clone(), probed.clone(), shared.timers.probe);
            tokio::spawn(async move {
                let alive = matches!(
                    tokio::time::timeout(within, endpoint.connect(id, ping::ALPN)).await,
                    Ok(Ok(_))
                );
                let _ = probed.send((id, alive)).await;
            });
        }
    }
}

/// Drops a peer this node found gone, and tells the mesh with a signed `Down` report.
async fn lose(shared: &Shared, sender: &GossipSender, id: EndpointId) {
    let Some(about_seq) = shared.with_table(|t| t.seq_of(&id)) else {
        return;
    };
    let changes = shared.with_table(|t| t.lose(&id));
    changed(shared, changes);
    if !shared.with_liveness(|l| l.may_report(Instant::now())) {
        tracing::debug!(peer = %id.fmt_short(), "over the report budget: not reported down");
        return;
    }
    let down = Message::Down {
        node: shared.secret_key.public(),
        seq: crate::util::time::unix_micros(),
        about: id,
        about_seq,
    };
    broadcast(shared, sender, &down, "down report").await;
}

/// Table changes from a sweep or a loss: events, and the roster watch when there are any.
fn changed(shared: &Shared, changes: Vec<Change>) {
    if !changes.is_empty() {
        shared.roster_changed();
    }
    publish(shared, changes);
}

/// Asks a new neighbour for its roster and takes in every entry whose signature holds.
async fn fetch_roster(shared: Arc<Shared>, from: EndpointId) {
    match roster::fetch(&shared.endpoint, from).await {
        Ok(messages) => {
            let n = messages.len();
            for m in messages {
                receive_roster_entry(&shared, m, from);
            }
            tracing::debug!(peer = %from.fmt_short(), entries = n, "roster received");
        }
        Err(e) => tracing::debug!(peer = %from.fmt_short(), "cannot fetch the roster: {e}"),
    }
}

/// One entry of a neighbour's roster: an announcement, checked like a relayed gossip message
/// (the neighbour's word counts for nothing: only the author's signature does).
pub(crate) fn receive_roster_entry(shared: &Shared, bytes: Bytes, from: EndpointId) {
    if shared.gate.is_closed() {
        return;
    }
    match announce::decode(&bytes) {
        Ok(msg @ Message::Announce(_)) => accept(shared, msg, bytes, from, Instant::now()),
        Ok(_) => {
            tracing::debug!(from = %from.fmt_short(), "dropped roster entry: not an announcement")
        }
        Err(e) => tracing::debug!(from = %from.fmt_short(), "dropped roster entry: {e}"),
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
    accept(
        shared,
        msg,
        Bytes::copy_from_slice(bytes),
        delivered_from,
        now,
    );
}

/// A decoded, signature-checked message (from gossip or a roster): the `seq` window, the
/// author's rate, then the table or the liveness policy.
fn accept(shared: &Shared, msg: Message, bytes: Bytes, delivered_from: EndpointId, now: Instant) {
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
    if let Message::Down {
        about, about_seq, ..
    } = msg
    {
        down_report(shared, node, about, about_seq, now);
        return;
    }
    let addr = match &msg {
        Message::Announce(a) => Some(shared.dial.tidy(&a.addr)),
        _ => None,
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
        let changes = t.apply_signed(msg, bytes, now);
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

/// A member's `Down` report about `about`: refute it when it is about this node, else hold
/// `about` as suspected (`state::liveness`).
fn down_report(
    shared: &Shared,
    reporter: EndpointId,
    about: EndpointId,
    about_seq: u64,
    now: Instant,
) {
    let (reporter_member, known) =
        shared.with_table(|t| (t.get(&reporter).is_some(), t.seq_of(&about)));
    let me = shared.secret_key.public();
    match shared.with_liveness(|l| l.report(about, about_seq, me, reporter_member, known, now)) {
        Report::Refute => {
            tracing::info!(by = %reporter.fmt_short(), "reported down: refuting");
            shared.announce_now.notify_one();
        }
        Report::Suspect => {
            tracing::debug!(peer = %about.fmt_short(), by = %reporter.fmt_short(), "peer reported down");
        }
        Report::Ignore => {}
    }
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
            let changes = shared.with_table(|t| t.lose(&id));
            changed(shared, changes);
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
                // In a small mesh open the tunnel now: the first request then pays no
                // handshake, the peer table gets path type and RTT, and the peer's death shows
                // on the connection.
                let tunnel = shared.tunnel.clone();
                tunnel.clear_down(&id);
                let eager = shared.with_table(|t| t.len() <= EAGER_TUNNEL_PEERS);
                if eager {
                    tokio::spawn(async move {
                        if let Err(e) = tunnel.connection(id).await {
                            tracing::debug!("cannot open tunnel yet: {e}");
                        }
                    });
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
