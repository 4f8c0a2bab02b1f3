//! The peer table: who is in the mesh and what they serve. Pure state: messages and `Instant`s
//! go in, [`Change`]s come out; no sockets, no clocks of its own, so every timer is unit-tested.
//!
//! Timers (see docs/PROTOCOL.md): a peer is removed at once on a `Leave`, when the liveness
//! policy finds it gone (`state::liveness`: [`PeerTable::lose`]), and as a fallback when no
//! announcement arrived for [`Timers::expiry`]; any newer announcement re-admits it. Each peer's
//! newest announcement is kept as it was signed, so a newcomer can be handed the whole roster
//! (`net::roster`) and check every entry against its author's signature.
//!
//! Bounded (docs/PROTOCOL.md, "Membership limits"): at most [`MAX_PEERS`] peers (a stranger's
//! first announcement is ignored while the table is full), and the newest `seq` of at most
//! [`MAX_REMEMBERED`] nodes, each forgotten [`REMEMBER_SEQ`] after its node went away: by
//! then the receiver's `seq` window (`announce::SEQ_WINDOW`) refuses its old messages anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::EndpointId;
use serde::{Deserialize, Serialize};

use crate::mesh::proto::announce::{Announcement, Message, REFRESH, SEQ_WINDOW};

/// Most peers in the table.
pub const MAX_PEERS: usize = 1024;
/// Most nodes whose newest `seq` is remembered (peers and nodes that went away).
pub const MAX_REMEMBERED: usize = 4 * MAX_PEERS;
/// How long the newest `seq` of a node that went away is remembered: a message it signed before
/// is outside the `seq` window by then (its `seq` was at most one window ahead when recorded).
pub const REMEMBER_SEQ: Duration = Duration::from_secs(2 * SEQ_WINDOW.as_secs());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// A node announces itself at least this often, also when nothing changed
    /// ([`REFRESH`]): lost messages heal, and a node nobody saw die still expires.
    pub refresh: Duration,
    /// A node whose load alone changed (free slots, queue, tok/s) announces at most this often.
    pub load_gap: Duration,
    /// A peer silent for this long is dropped (the fallback when no one saw it go).
    pub expiry: Duration,
    /// How often the table is swept and the announcement schedule checked.
    pub sweep: Duration,
    /// How long a peer reported down stays in routing waiting for its refutation.
    pub suspect: Duration,
    /// How long a dial checking that a peer lives may take.
    pub probe: Duration,
    /// A gossip connection to a peer that has not been a gossip neighbour for this long, open
    /// at least as long, is closed (`Member::strays`). Longer than anything gossip opens a
    /// connection for without making the peer a neighbour: a neighbour request, a shuffle.
    pub stray: Duration,
    /// Once the mesh is past eager tunnels, a tunnel with no stream open and no use for this
    /// long is closed (`Tunnel::close_idle`): the node keeps only the tunnels it uses.
    pub tunnel_idle: Duration,
    /// A node with no gossip neighbour for this long asks members to take it in again, and
    /// again every as long while alone (`state::alone`).
    pub rejoin: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            refresh: REFRESH,
            load_gap: Duration::from_secs(2),
            // Two refreshes missed, and a margin for a slow one.
            expiry: REFRESH * 2 + REFRESH / 2,
            sweep: Duration::from_millis(250),
            suspect: Duration::from_secs(2),
            probe: Duration::from_secs(2),
            stray: Duration::from_secs(10),
            tunnel_idle: Duration::from_secs(120),
            rejoin: Duration::from_secs(5),
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
    /// `ann` as its author signed it (`announce::encode`), for `net::roster`; empty when the
    /// announcement came without its bytes (tests).
    pub signed: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftBecause {
    Leave,
    Expired,
    /// Found gone: its connection timed out, it did not answer a dial, or a member's `Down`
    /// report about it went unrefuted (`state::liveness`).
    Lost,
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
    /// How many peers announce each model, kept as peers come, change and go: every heartbeat
    /// would otherwise rebuild the set of all models of all peers (O(peers) per message).
    model_hosts: BTreeMap<String, usize>,
    /// Strangers refused while the table was full (see [`PeerTable::take_refused`]).
    refused: usize,
    /// No time in `peers` (`last_seen`) or `newest` is older than this (`None`: both empty or
    /// not known): [`PeerTable::expire`], called every sweep, scans only when something could
    /// be due, so an idle node does not walk its whole table four times a second.
    floor: Option<Instant>,
}

/// The distinct model names of an announcement.
fn names(ann: &Announcement) -> BTreeSet<&str> {
    ann.models.iter().map(|m| m.name.as_str()).collect()
}

/// Model changes made while applying one message or sweep, reported added first, then removed,
/// each in name order.
#[derive(Default)]
struct ModelDelta {
    added: BTreeSet<String>,
    removed: BTreeSet<String>,
}

impl ModelDelta {
    fn into_changes(self) -> impl Iterator<Item = Change> {
        let added = self.added.into_iter().map(Change::ModelAdded);
        added.chain(self.removed.into_iter().map(Change::ModelRemoved))
    }
}

impl PeerTable {
    /// Applies a verified gossip message from another node.
    pub fn apply(&mut self, msg: Message, now: Instant) -> Vec<Change> {
        self.apply_signed(msg, Bytes::new(), now)
    }

    /// [`PeerTable::apply`], keeping the message's signed bytes (handed to newcomers).
    pub fn apply_signed(&mut self, msg: Message, signed: Bytes, now: Instant) -> Vec<Change> {
        let (node, seq) = (msg.node(), msg.seq());
        if self.newest.get(&node).is_some_and(|&(s, _)| seq <= s) {
            return Vec::new();
        }
        let known = self.peers.contains_key(&node);
        let full = self.peers.len() >= MAX_PEERS;
        if !matches!(msg, Message::Announce(_) | Message::Leave { .. }) {
            // A report about another node: `state::liveness` decides what it means.
            return Vec::new();
        }
        if !known && (full || matches!(msg, Message::Leave { .. })) {
            // A stranger while the table is full, or the leave of a node we never had.
            if full && matches!(msg, Message::Announce(_)) {
                self.refused = self.refused.saturating_add(1);
            }
            return Vec::new();
        }
        if !self.newest.contains_key(&node) && self.newest.len() >= MAX_REMEMBERED {
            self.forget_oldest_absent();
        }
        self.newest.insert(node, (seq, now));
        self.floor = self.floor.map(|f| f.min(now));
        let mut delta = ModelDelta::default();
        let mut changes = Vec::new();
        match msg {
            Message::Announce(ann) => match self.peers.get_mut(&node) {
                Some(p) => {
                    let old = std::mem::replace(&mut p.ann, ann);
                    p.last_seen = now;
                    p.signed = signed;
                    let new = names(&p.ann).into_iter().map(str::to_owned).collect();
                    let old = names(&old).into_iter().map(str::to_owned).collect();
                    Self::count_models(&mut self.model_hosts, &new, &old, &mut delta);
                }
                None => {
                    let new = names(&ann).into_iter().map(str::to_owned).collect();
                    Self::count_models(&mut self.model_hosts, &new, &BTreeSet::new(), &mut delta);
                    self.peers.insert(
                        node,
                        Peer {
                            ann,
                            last_seen: now,
                            conn: ConnType::None,
                            rtt: None,
                            trying_direct: false,
                            signed,
                        },
                    );
                    changes.push(Change::Joined(node));
                }
            },
            Message::Leave { .. } => {
                if let Some(p) = self.peers.remove(&node) {
                    self.uncount(&p.ann, &mut delta);
                    changes.push(Change::Left(node, LeftBecause::Leave));
                }
            }
            Message::Down { .. } => {}
        }
        changes.extend(delta.into_changes());
        changes
    }

    /// Counts a peer's models going from `old` to `new` in `hosts`, noting models that
    /// appeared in or left the mesh.
    fn count_models(
        hosts: &mut BTreeMap<String, usize>,
        new: &BTreeSet<String>,
        old: &BTreeSet<String>,
        delta: &mut ModelDelta,
    ) {
        for gone in old.difference(new) {
            if let Some(n) = hosts.get_mut(gone) {
                *n -= 1;
                if *n == 0 {
                    hosts.remove(gone);
                    if !delta.added.remove(gone) {
                        delta.removed.insert(gone.clone());
                    }
                }
            }
        }
        for came in new.difference(old) {
            let n = hosts.entry(came.clone()).or_insert(0);
            *n += 1;
            if *n == 1 && !delta.removed.remove(came) {
                delta.added.insert(came.clone());
            }
        }
    }

    /// A peer that left: its models are no longer hosted by it.
    fn uncount(&mut self, ann: &Announcement, delta: &mut ModelDelta) {
        let old = names(ann).into_iter().map(str::to_owned).collect();
        Self::count_models(&mut self.model_hosts, &BTreeSet::new(), &old, delta);
    }

    /// Drops a peer found gone (`state::liveness`). Its newest `seq` stays remembered: only an
    /// announcement it signs later (a refutation, or its return) re-admits it.
    pub fn lose(&mut self, id: &EndpointId) -> Vec<Change> {
        let Some(p) = self.peers.remove(id) else {
            return Vec::new();
        };
        let mut delta = ModelDelta::default();
        self.uncount(&p.ann, &mut delta);
        let mut changes = vec![Change::Left(*id, LeftBecause::Lost)];
        changes.extend(delta.into_changes());
        changes
    }

    /// Whether a stranger's announcement would be refused now.
    pub fn is_full(&self) -> bool {
        self.peers.len() >= MAX_PEERS
    }

    /// The `n` peers heard from longest ago, leaving out `skip` (for the liveness probe that
    /// frees slots of a full table).
    pub fn stalest(&self, n: usize, skip: &[EndpointId]) -> Vec<EndpointId> {
        let mut peers: Vec<_> = self
            .peers
            .iter()
            .filter(|(id, _)| !skip.contains(id))
            .map(|(id, p)| (p.last_seen, *id))
            .collect();
        peers.sort_unstable();
        peers.into_iter().take(n).map(|(_, id)| id).collect()
    }

    /// Strangers refused because the table was full, since the last call.
    pub fn take_refused(&mut self) -> usize {
        std::mem::take(&mut self.refused)
    }

    /// A peer proved alive (it accepted a probe): it counts as heard from now.
    pub fn touch(&mut self, id: &EndpointId, now: Instant) {
        if let Some(p) = self.peers.get_mut(id) {
            p.last_seen = p.last_seen.max(now);
        }
    }

    /// The newest `seq` of a peer (`None`: not a peer).
    pub fn seq_of(&self, id: &EndpointId) -> Option<u64> {
        self.peers.get(id).map(|p| p.ann.seq)
    }

    /// Every peer's newest announcement as its author signed it (those kept with their bytes).
    pub fn signed_roster(&self) -> Vec<Bytes> {
        self.peers
            .values()
            .filter(|p| !p.signed.is_empty())
            .map(|p| p.signed.clone())
            .collect()
    }

    /// Drops peers silent for longer than `expiry`.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<Change> {
        if self
            .floor
            .is_some_and(|f| now.saturating_duration_since(f) <= expiry.min(REMEMBER_SEQ))
        {
            return Vec::new();
        }
        let mut delta = ModelDelta::default();
        let dead: Vec<EndpointId> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > expiry)
            .map(|(id, _)| *id)
            .collect();
        let mut changes = Vec::new();
        for id in dead {
            if let Some(p) = self.peers.remove(&id) {
                self.uncount(&p.ann, &mut delta);
            }
            changes.push(Change::Left(id, LeftBecause::Expired));
        }
        let peers = &self.peers;
        self.newest.retain(|id, (_, at)| {
            now.saturating_duration_since(*at) <= REMEMBER_SEQ || peers.contains_key(id)
        });
        let seen = self.peers.values().map(|p| p.last_seen);
        self.floor = seen.chain(self.newest.values().map(|(_, at)| *at)).min();
        changes.extend(delta.into_changes());
        changes
    }

    /// Makes room in `newest`: forgets the nodes not in the table heard from longest ago, an
    /// eighth of the table at once, so a stream of strangers costs one scan per
    /// `MAX_REMEMBERED / 8` of them rather than one each.
    fn forget_oldest_absent(&mut self) {
        let mut absent: Vec<(Instant, EndpointId)> = self
            .newest
            .iter()
            .filter(|(id, _)| !self.peers.contains_key(*id))
            .map(|(id, (_, at))| (*at, *id))
            .collect();
        let forget = (MAX_REMEMBERED / 8).clamp(1, absent.len().max(1));
        if absent.len() > forget {
            absent.select_nth_unstable(forget - 1);
        }
        for (_, id) in absent.iter().take(forget) {
            self.newest.remove(id);
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
        self.model_hosts.keys().cloned().collect()
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
    fn a_model_leaves_the_mesh_with_its_last_host_and_changes_with_announcements() {
        let mut t = PeerTable::default();
        let (a, b) = (SecretKey::generate(), SecretKey::generate());
        let now = Instant::now();
        let ann = |k: &SecretKey, m: &[&str], seq| Message::Announce(announcement(k, m, seq));
        t.apply(ann(&a, &["m", "x"], 1), now);
        assert_eq!(
            t.apply(ann(&b, &["m"], 1), now),
            vec![Change::Joined(b.public())]
        );
        // A switches x for y: one added, one removed; m still has both hosts.
        assert_eq!(
            t.apply(ann(&a, &["m", "y"], 2), now),
            vec![
                Change::ModelAdded("y".into()),
                Change::ModelRemoved("x".into())
            ]
        );
        let leave = |k: &SecretKey| Message::Leave {
            node: k.public(),
            seq: 3,
        };
        assert_eq!(
            t.apply(leave(&b), now),
            vec![Change::Left(b.public(), LeftBecause::Leave)]
        );
        assert_eq!(t.models_set(), ["m", "y"].map(String::from).into());
        let changes = t.expire(now + Duration::from_secs(10), EXPIRY);
        assert_eq!(
            changes,
            vec![
                Change::Left(a.public(), LeftBecause::Expired),
                Change::ModelRemoved("m".into()),
                Change::ModelRemoved("y".into())
            ]
        );
        assert!(t.models_set().is_empty());
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
        assert!(t.is_full());
        assert_eq!(t.take_refused(), 1);
        assert_eq!(t.take_refused(), 0);
        // The peers heard from longest ago are the ones a full table checks first; one that
        // answers counts as heard from.
        let later = now + Duration::from_secs(1);
        for k in &keys[2..] {
            t.touch(&k.public(), later);
        }
        let stalest = t.stalest(3, &[keys[0].public()]);
        assert_eq!(stalest.len(), 3);
        assert!(stalest.contains(&keys[1].public()) && !stalest.contains(&keys[0].public()));
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
    fn a_roster_answer_holds_a_full_table_and_its_node() {
        assert_eq!(crate::mesh::proto::roster::MAX_FRAMES, MAX_PEERS + 1);
    }

    #[test]
    fn a_lost_peer_leaves_and_only_a_newer_announcement_brings_it_back() {
        let mut t = PeerTable::default();
        let k = SecretKey::generate();
        let now = Instant::now();
        let signed = Bytes::from_static(b"signed");
        t.apply_signed(
            Message::Announce(announcement(&k, &["m"], 5)),
            signed.clone(),
            now,
        );
        assert_eq!(t.seq_of(&k.public()), Some(5));
        assert_eq!(t.signed_roster(), vec![signed]);
        assert_eq!(
            t.lose(&k.public()),
            vec![
                Change::Left(k.public(), LeftBecause::Lost),
                Change::ModelRemoved("m".into())
            ]
        );
        assert!(t.lose(&k.public()).is_empty());
        assert_eq!(t.seq_of(&k.public()), None);
        // Its old announcement, replayed, does not bring it back; its refutation does.
        assert!(t
            .apply(Message::Announce(announcement(&k, &["m"], 5)), now)
            .is_empty());
        let changes = t.apply(Message::Announce(announcement(&k, &["m"], 6)), now);
        assert_eq!(changes[0], Change::Joined(k.public()));
        // Reports about others change nothing here.
        let down = Message::Down {
            node: k.public(),
            seq: 7,
            about: SecretKey::generate().public(),
            about_seq: 1,
        };
        assert!(t.apply(down, now).is_empty());
        assert_eq!(t.seq_of(&k.public()), Some(6));
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
