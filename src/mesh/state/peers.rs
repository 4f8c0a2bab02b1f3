//! The peer table: who is in the mesh and what they serve. Pure state: messages and `Instant`s
//! go in, [`Change`]s come out; no sockets, no clocks of its own, so every timer is unit-tested.
//!
//! Timers (see docs/PROTOCOL.md): a peer is removed when no announcement arrived for
//! [`Timers::expiry`], at once on a `Leave`, and re-admitted by any newer announcement.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};

use crate::mesh::proto::announce::{Announcement, Message};

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
    /// Newest `seq` seen per node, also after it left: older (replayed) messages are ignored.
    newest: BTreeMap<EndpointId, u64>,
}

impl PeerTable {
    /// Applies a verified gossip message from another node.
    pub fn apply(&mut self, msg: Message, now: Instant) -> Vec<Change> {
        let (node, seq) = match &msg {
            Message::Announce(a) => (a.node, a.seq),
            Message::Leave { node, seq } => (*node, *seq),
        };
        if self.newest.get(&node).is_some_and(|&s| seq <= s) {
            return Vec::new();
        }
        self.newest.insert(node, seq);
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
        changes.extend(self.model_changes(before));
        changes
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
