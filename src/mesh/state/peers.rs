//! The peer table: who is in the mesh and what they serve. Pure state: messages and `Instant`s
//! go in, [`Change`]s come out; no sockets, no clocks of its own, so every timer is unit-tested.
//!
//! Timers (see docs/PROTOCOL.md): a peer is removed when no announcement arrived for
//! [`Timers::expiry`], at once on a `Leave`, and re-admitted by any newer announcement.
//!
//! Bounded (docs/PROTOCOL.md, "Membership limits"): at most [`MAX_PEERS`] peers (a stranger's
//! first announcement is ignored while the table is full), and the newest `seq` of at most
//! [`MAX_REMEMBERED`] nodes, each forgotten [`REMEMBER_SEQ`] after its node went away: by
//! then the receiver's `seq` window (`announce::SEQ_WINDOW`) refuses its old messages anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

use crate::mesh::proto::announce::{Announcement, Message, SEQ_WINDOW};

/// Most peers in the table.
pub const MAX_PEERS: usize = 1024;
/// Most nodes whose newest `seq` is remembered (peers and nodes that went away).
pub const MAX_REMEMBERED: usize = 4 * MAX_PEERS;
/// How long the newest `seq` of a node that went away is remembered: a message it signed before
/// is outside the `seq` window by then (its `seq` was at most one window ahead when recorded).
pub const REMEMBER_SEQ: Duration = Duration::from_secs(2 * SEQ_WINDOW.as_secs());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How often a node announces itself.
    pub heartbeat: Duration,
    /// A peer silent for this long is dropped.
    pub expiry: Duration,
    /// How often the table is swept for silent peers.
    pub sweep: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            expiry: Duration::from_secs(3),
            sweep: Duration::from_millis(250),
        }
    }
}

/// How we reach a peer, from iroh's selected path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnType {
    Direct,
    Relay,
    /// No connection to it yet.
    None,
}

impl ConnType {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnType::Direct => "direct",
            ConnType::Relay => "relay",
            ConnType::None => "none",
        }
    }
}

/// A connection's paths as iroh reports them, reduced to what the table keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathState {
    pub conn: ConnType,
    pub rtt: Option<Duration>,
    pub trying_direct: bool,
}

#[derive(Debug, Clone)]
pub struct Peer {
    pub ann: Announcement,
    pub last_seen: Instant,
    pub conn: ConnType,
    pub rtt: Option<Duration>,
    /// Relayed now, with a direct path being tried (hole punching).
    pub trying_direct: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBecause {
    Leave,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Joined(EndpointId),
    Left(EndpointId, LeftBecause),
    ModelAdded(String),
    ModelRemoved(String),
}

#[derive(Debug, Default)]
pub struct PeerTable {
    peers: BTreeMap<EndpointId, Peer>,
    /// Newest `seq` seen per node, and when, also after it left: older (replayed) messages are
    /// ignored.
    newest: BTreeMap<EndpointId, (u64, Instant)>,
}

impl PeerTable {
    /// Applies a verified gossip message from another node.
    pub fn apply(&mut self, msg: Message, now: Instant) -> Vec<Change> {
        let (node, seq) = (msg.node(), msg.seq());
        if self.newest.get(&node).is_some_and(|&(s, _)| seq <= s) {
            return Vec::new();
        }
        let known = self.peers.contains_key(&node);
        let full = self.peers.len() >= MAX_PEERS;
        if !known && (full || matches!(msg, Message::Leave { .. })) {
            // A stranger while the table is full, or the leave of a node we never had.
            return Vec::new();
        }
        if !self.newest.contains_key(&node) && self.newest.len() >= MAX_REMEMBERED {
            self.forget_oldest_absent();
        }
        self.newest.insert(node, (seq, now));
        let before = self.models_set();
        let mut changes = Vec::new();
        match msg {
            Message::Announce(ann) => match self.peers.get_mut(&node) {
                Some(p) => {
                    p.ann = ann;
                    p.last_seen = now;
                }
                None => {
                    self.peers.insert(
                        node,
                        Peer {
                            ann,
                            last_seen: now,
                            conn: ConnType::None,
                            rtt: None,
                            trying_direct: false,
                        },
                    );
                    changes.push(Change::Joined(node));
                }
            },
            Message::Leave { .. } => {
                if self.peers.remove(&node).is_some() {
                    changes.push(Change::Left(node, LeftBecause::Leave));
                }
            }
        }
        changes.extend(self.model_changes(before));
        changes
    }

    /// Drops peers silent for longer than `expiry`.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<Change> {
        let before = self.models_set();
        let dead: Vec<EndpointId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > expiry)
            .map(|(id, _)| *id)
            .collect();
        let mut changes = Vec::new();
        for id in dead {
            self.peers.remove(&id);
            changes.push(Change::Left(id, LeftBecause::Expired));
        }
        let peers = &self.peers;
        self.newest.retain(|id, (_, at)| {
            peers.contains_key(id) || now.saturating_duration_since(*at) <= REMEMBER_SEQ
        });
        changes.extend(self.model_changes(before));
        changes
    }

    /// Makes room in `newest`: forgets the node not in the table heard from longest ago.
    fn forget_oldest_absent(&mut self) {
        let oldest = self
            .newest
            .iter()
            .filter(|(id, _)| !self.peers.contains_key(*id))
            .min_by_key(|(_, (_, at))| *at)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.newest.remove(&id);
        }
    }

    /// Nodes whose newest `seq` is remembered (peers included).
    pub fn remembered(&self) -> usize {
        self.newest.len()
    }

    /// Records how we reach a peer (from iroh's path list). Returns the path type before, when
    /// it changed between direct and relay (not to or from "no connection yet").
    pub fn set_path(&mut self, id: &EndpointId, path: PathState) -> Option<ConnType> {
        let p = self.peers.get_mut(id)?;
        let before = p.conn;
        p.conn = path.conn;
        p.rtt = path.rtt;
        p.trying_direct = path.trying_direct;
        (before != path.conn && before != ConnType::None && path.conn != ConnType::None)
            .then_some(before)
    }

    pub fn get(&self, id: &EndpointId) -> Option<&Peer> {
        self.peers.get(id)
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Peers that announce `model`.
    pub fn hosts_of<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Peer> + 'a {
        self.peers
            .values()
            .filter(move |p| p.ann.models.iter().any(|m| m.name == model))
    }

    /// Every model served by some peer.
    pub fn models_set(&self) -> BTreeSet<String> {
        self.peers
            .values()
            .flat_map(|p| p.ann.models.iter().map(|m| m.name.clone()))
            .collect()
    }

    fn model_changes(&self, before: BTreeSet<String>) -> Vec<Change> {
        let after = self.models_set();
        let added = after.difference(&before).cloned().map(Change::ModelAdded);
        let removed = before.difference(&after).cloned().map(Change::ModelRemoved);
        added.chain(removed).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::proto::announce::tests::announcement;
    use iroh::SecretKey;

    const EXPIRY: Duration = Duration::from_secs(3);

    #[test]
    fn announce_joins_then_silence_expires() {
        let mut t = PeerTable::default();
        let k = SecretKey::generate();
        let t0 = Instant::now();
        let changes = t.apply(Message::Announce(announcement(&k, &["m"], 1)), t0);
        assert_eq!(
            changes,
            vec![Change::Joined(k.public()), Change::ModelAdded("m".into())]
        );
        // A heartbeat keeps it alive.
        assert!(t
            .apply(
                Message::Announce(announcement(&k, &["m"], 2)),
                t0 + Duration::from_secs(2)
            )
            .is_empty());
        assert!(t.expire(t0 + Duration::from_secs(4), EXPIRY).is_empty());
        let changes = t.expire(t0 + Duration::from_millis(5100), EXPIRY);
        assert_eq!(
            changes,
            vec![
                Change::Left(k.public(), LeftBecause::Expired),
                Change::ModelRemoved("m".into())
            ]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_switch_between_relay_and_direct_is_reported_but_a_first_path_is_not() {
        let mut t = PeerTable::default();
        let k = SecretKey::generate();
        t.apply(
            Message::Announce(announcement(&k, &["m"], 1)),
            Instant::now(),
        );
        let path = |conn, trying_direct| PathState {
            conn,
            rtt: Some(Duration::from_millis(3)),
            trying_direct,
        };
        let id = k.public();
        assert_eq!(t.set_path(&id, path(ConnType::Relay, true)), None);
        assert!(t.get(&id).unwrap().trying_direct);
        assert_eq!(t.set_path(&id, path(ConnType::Relay, true)), None);
        assert_eq!(
            t.set_path(&id, path(ConnType::Direct, false)),
            Some(ConnType::Relay)
        );
        assert_eq!(t.get(&id).unwrap().conn, ConnType::Direct);
        assert_eq!(t.set_path(&id, path(ConnType::None, false)), None);
        let stranger = SecretKey::generate().public();
        assert_eq!(t.set_path(&stranger, path(ConnType::Direct, false)), None);
    }

    #[test]
    fn leave_drops_at_once_and_a_newer_announcement_readmits() {
        let mut t = PeerTable::default();
        let k = SecretKey::generate();
        let now = Instant::now();
        t.apply(Message::Announce(announcement(&k, &["m"], 1)), now);
        let changes = t.apply(
            Message::Leave {
                node: k.public(),
                seq: 2,
            },
            now,
        );
        assert_eq!(
            changes,
            vec![
                Change::Left(k.public(), LeftBecause::Leave),
                Change::ModelRemoved("m".into())
            ]
        );
        // A replayed old heartbeat does not bring it back; a restart (newer seq) does.
        assert!(t
            .apply(Message::Announce(announcement(&k, &["m"], 1)), now)
            .is_empty());
        let changes = t.apply(Message::Announce(announcement(&k, &["m"], 3)), now);
        assert_eq!(changes[0], Change::Joined(k.public()));
    }

    /// 50,000 validly signed announcements from fresh keys (sybils), as fast as they come.
    #[test]
    fn fifty_thousand_sybils_leave_every_table_under_its_cap_and_empty_after_expiry() {
        let mut t = PeerTable::default();
        let t0 = Instant::now();
        let mut joined = 0;
        for i in 0..50_000u64 {
            let k = SecretKey::generate();
            let model = format!("sybil-{i}");
            // Spread over 100 s; the honest sweep runs every 250 ms.
            let now = t0 + Duration::from_millis(2 * i);
            let changes = t.apply(Message::Announce(announcement(&k, &[&model], 1)), now);
            joined += changes
                .iter()
                .filter(|c| matches!(c, Change::Joined(_)))
                .count();
            if i % 125 == 0 {
                t.expire(now, EXPIRY);
            }
            assert!(t.len() <= MAX_PEERS && t.remembered() <= MAX_REMEMBERED);
        }
        assert!(
            joined > MAX_PEERS,
            "sybils kept coming in as others expired: {joined}"
        );
        let end = t0 + Duration::from_secs(100);
        t.expire(end + EXPIRY + Duration::from_secs(1), EXPIRY);
        assert!(t.is_empty() && t.models_set().is_empty());
        assert!(t.remembered() <= MAX_REMEMBERED);
        t.expire(end + REMEMBER_SEQ + Duration::from_secs(1), EXPIRY);
        assert_eq!(t.remembered(), 0);
    }

    #[test]
    fn a_full_table_keeps_its_peers_and_ignores_strangers_and_their_leaves() {
        let mut t = PeerTable::default();
        let now = Instant::now();
        let keys: Vec<_> = (0..MAX_PEERS).map(|_| SecretKey::generate()).collect();
        for k in &keys {
            t.apply(Message::Announce(announcement(k, &[], 1)), now);
        }
        let stranger = SecretKey::generate();
        assert!(t
            .apply(Message::Announce(announcement(&stranger, &["m"], 1)), now)
            .is_empty());
        assert!(t
            .apply(
                Message::Leave {
                    node: stranger.public(),
                    seq: 2
                },
                now
            )
            .is_empty());
        assert_eq!(t.len(), MAX_PEERS);
        assert_eq!(t.remembered(), MAX_PEERS);
        // Members still refresh; one leaving makes room for the stranger.
        assert!(t
            .apply(Message::Announce(announcement(&keys[0], &[], 2)), now)
            .is_empty());
        t.apply(
            Message::Leave {
                node: keys[1].public(),
                seq: 2,
            },
            now,
        );
        let changes = t.apply(Message::Announce(announcement(&stranger, &["m"], 3)), now);
        assert_eq!(changes[0], Change::Joined(stranger.public()));
    }

    #[test]
    fn models_are_tracked_across_replicas() {
        let mut t = PeerTable::default();
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let now = Instant::now();
        t.apply(Message::Announce(announcement(&a, &["m"], 1)), now);
        let changes = t.apply(Message::Announce(announcement(&b, &["m", "n"], 1)), now);
        assert_eq!(
            changes,
            vec![Change::Joined(b.public()), Change::ModelAdded("n".into())]
        );
        assert_eq!(t.hosts_of("m").count(), 2);
        // One replica leaving keeps the model.
        let changes = t.apply(
            Message::Leave {
                node: a.public(),
                seq: 2,
            },
            now,
        );
        assert_eq!(changes, vec![Change::Left(a.public(), LeftBecause::Leave)]);
        assert_eq!(t.hosts_of("m").count(), 1);
    }
}
