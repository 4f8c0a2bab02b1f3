//! A discrete-event simulation of membership at scale: hundreds or thousands of nodes in one
//! process, in simulated time. Each node runs the code a real node runs, not a model of it:
//! iroh-gossip's sans-IO protocol (`iroh_gossip::proto::State`, HyParView + PlumTree, the
//! configuration `Mesh::start` gives it) and this crate's sans-IO membership
//! (`state::member::Member` with its peer table and flood guard), with real keys, signed
//! messages and signature checks (with feature `sim`, each distinct signed message is decoded
//! and checked once per process rather than once per node: `announce::sim_memo`). What is
//! simulated is only what lies under them: the network
//! (a fixed one-way latency per pair of nodes, no loss), QUIC connections (open while messages
//! flow; a dead node's close [`SimConfig::idle_timeout`] after its death, a dial to it failing
//! after [`SimConfig::dial_timeout`]), the probe (`ping`) and roster (`mesh/roster/2`)
//! streams, and the clocks.
//!
//! Bytes are counted per node as iroh-gossip frames them on its streams (postcard, 4-byte
//! length prefix; the topic goes once in the stream header and is not counted) plus roster
//! transfers. QUIC's own costs (packet headers, acks, keep-alives) are not simulated;
//! [`Traffic`] reports the open connections so a caller can add them from a measurement.
//!
//! Used by `examples/sim_membership.rs` (the benchmark in docs/BENCHMARKS.md) and by
//! `sim::tests` (small meshes, asserting convergence and death detection in simulated time).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::{EndpointAddr, EndpointId, SecretKey, TransportAddr};
use iroh_gossip::proto::{
    Command, Config, Event, InEvent, OutEvent, PeerData, Scope, State, TopicId,
};
use rand010::rngs::StdRng;
use rand010::SeedableRng;

use super::proto::announce::{self, Announcement, Message, Role, MAX_MESSAGE_BYTES};
use super::state::flood::FloodGuard;
use super::state::liveness::Fingerprint;
use super::state::member::{Action, Audience, Cx, Member};
use super::state::peers::{Change, LeftBecause, PeerTable, Timers};

#[cfg(test)]
mod tests;
mod traffic;
mod view;

pub use traffic::{Traffic, KINDS};

/// What lies under the protocols.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way latency between two nodes: fixed per pair, spread evenly over this range.
    pub latency: (Duration, Duration),
    pub timers: Timers,
    /// A dead node's open connections close this long after its death (QUIC's idle timeout:
    /// its keep-alives stopped; `net::endpoint::IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// A dial to a dead node fails after this.
    pub dial_timeout: Duration,
    /// A roster arrives this long after its sender read the ask (and made it from its table
    /// then), on top of the network's round trips: a machine running many nodes at once.
    pub roster_delay: Duration,
    /// Nodes close their stray gossip connections (`Member::strays`), as real nodes do.
    pub close_strays: bool,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: (Duration::from_millis(10), Duration::from_millis(80)),
            timers: Timers::default(),
            idle_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(5),
            roster_delay: Duration::ZERO,
            close_strays: true,
            seed: 1,
        }
    }
}

/// Things that went wrong for honest nodes (all zero in a healthy run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Bans by the flood guard.
    pub bans: u64,
    /// Live peers dropped from a table (found gone, reported, expired).
    pub live_dropped: u64,
}

enum Ev {
    Gossip(InEvent<EndpointId>),
    /// The connection to `peer` closed at the other end (or a dial to it failed); `conn`: which
    /// connection (`None`: a failed dial). Only the node's current connection to the peer (or
    /// none) counts: iroh-gossip reports a close only for the connection it sends on, and one
    /// opened since replaces the closed one.
    Closed {
        peer: usize,
        conn: Option<u64>,
    },
    Sweep,
    Probed(EndpointId, bool),
    /// A roster came: its sender, entries, and whether its sender's table was complete.
    Roster(EndpointId, Vec<Bytes>, bool),
    RosterFailed,
}

struct Entry {
    at: Instant,
    seq: u64,
    node: usize,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Earliest first from the max-heap; equal times in the order they were queued.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Node {
    key: SecretKey,
    /// `key.public()`, kept: deriving it is a scalar multiplication.
    id: EndpointId,
    addr: EndpointAddr,
    gossip: State<EndpointId, StdRng>,
    member: Member,
    table: PeerTable,
    flood: FloodGuard,
    neighbours: HashSet<EndpointId>,
    /// Rosters it asked for.
    rosters_asked: u32,
    /// Nodes it has a connection with (the other end of each pair in `World::conns`).
    open: HashSet<usize>,
    alive: bool,
}

/// An open connection between two nodes.
#[derive(Debug, Clone, Copy)]
struct Conn {
    /// Which one (a number per connection opened).
    n: u64,
    opened: Instant,
}

/// The simulated mesh.
pub struct World {
    cfg: SimConfig,
    start: Instant,
    now: Instant,
    unix_start: u64,
    topic: TopicId,
    nodes: Vec<Node>,
    index: HashMap<EndpointId, usize>,
    queue: BinaryHeap<Entry>,
    seq: u64,
    /// Open connections, by pairs of node indices (lower first).
    conns: HashMap<(usize, usize), Conn>,
    opened: u64,
    traffic: Traffic,
    traffic_since: Instant,
    conn_seconds: f64,
    faults: Faults,
    rejoins: u64,
    rng: StdRng,
}

impl World {
    pub fn new(cfg: SimConfig) -> Self {
        #[cfg(feature = "sim")]
        announce::sim_memo::switch_on();
        let now = Instant::now();
        Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            start: now,
            now,
            unix_start: crate::util::time::unix_micros(),
            topic: TopicId::from_bytes([7; 32]),
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            conns: HashMap::new(),
            opened: 0,
            traffic: Traffic::default(),
            traffic_since: now,
            conn_seconds: 0.0,
            faults: Faults::default(),
            rejoins: 0,
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a node that joins now through `bootstrap` (node indices; none: it starts a mesh).
    pub fn add_node(&mut self, bootstrap: &[usize]) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.cfg.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        let key = SecretKey::from_bytes(&seed);
        let id = key.public();
        let port = 10_000 + (i % 50_000) as u16;
        let addr = EndpointAddr::from_parts(
            id,
            [TransportAddr::Ip(std::net::SocketAddr::from((
                [198, 18, (i / 250) as u8, (i % 250) as u8 + 1],
                port,
            )))],
        );
        self.nodes.push(Node {
            gossip: self.fresh_gossip(i, id),
            member: {
                let mut m = Member::new(id, self.cfg.timers);
                if bootstrap.is_empty() {
                    m.started_mesh();
                }
                m
            },
            table: PeerTable::default(),
            flood: FloodGuard::default(),
            neighbours: HashSet::new(),
            open: HashSet::new(),
            rosters_asked: 0,
            id,
            key,
            addr,
            alive: true,
        });
        self.index.insert(id, i);
        let peers = bootstrap.iter().map(|&b| self.id(b)).collect();
        self.push(
            self.now,
            i,
            Ev::Gossip(InEvent::Command(self.topic, Command::Join(peers))),
        );
        // Sweeps start at a random phase, as nodes start at random moments.
        let phase = self.cfg.timers.sweep.mul_f64(self.rand_unit());
        self.push(self.now + phase, i, Ev::Sweep);
        i
    }

    /// iroh-gossip's state for node `i`, as a node starts with it: no views.
    fn fresh_gossip(&self, i: usize, id: EndpointId) -> State<EndpointId, StdRng> {
        let config = Config {
            max_message_size: MAX_MESSAGE_BYTES,
            broadcast: super::gossip_config::plumtree_config(),
            membership: super::gossip_config::hyparview_config(),
        };
        let rng = StdRng::seed_from_u64(self.cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
        State::new(id, PeerData::default(), config, rng)
    }

    /// Node `i`'s gossip loses its views, active and passive (what HyParView comes to when
    /// every passive peer it tried failed): its connections close, gossip starts over empty,
    /// and membership hears its neighbours go. Its table stays.
    pub fn cut_off(&mut self, i: usize) {
        let gone: Vec<EndpointId> = self.nodes[i].neighbours.drain().collect();
        for id in gone {
            let actions = self.member(i, |m, cx| m.neighbour_down(cx, id));
            self.carry_out(i, actions);
        }
        let open: Vec<usize> = self.nodes[i].open.iter().copied().collect();
        for j in open {
            self.hang_up(i, j);
        }
        self.nodes[i].gossip = self.fresh_gossip(i, self.id(i));
    }

    /// The node dies silently (a crash, a cut cable): no `Leave`, no QUIC close. Its
    /// connections time out at the other end after [`SimConfig::idle_timeout`].
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let open: Vec<usize> = self.nodes[i].open.iter().copied().collect();
        for other in open {
            self.close(i, other, self.cfg.idle_timeout);
        }
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.queue.peek().is_some_and(|e| e.at <= end) {
            self.step();
        }
        self.account_conns(end);
        self.now = end;
    }

    /// Runs until `done` holds (checked every `every`), at most `limit`; returns the simulated
    /// time it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&World) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.run_for(every);
        }
        done(self).then(|| self.now - start)
    }

    fn rand_unit(&mut self) -> f64 {
        use rand010::RngExt;
        self.rng.random::<f64>()
    }

    fn push(&mut self, at: Instant, node: usize, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            node,
            ev,
        });
    }

    /// One-way latency between two nodes: fixed per pair, from a hash of their indices.
    fn latency(&self, a: usize, b: usize) -> Duration {
        let (lo, hi) = self.cfg.latency;
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let h = (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ y.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
            .rotate_left(17)
            .wrapping_mul(0x1656_67b1_9e37_79f9);
        lo + (hi - lo).mul_f64((h >> 11) as f64 / (1u64 << 53) as f64)
    }

    fn account_conns(&mut self, until: Instant) {
        if until > self.now {
            self.conn_seconds += self.conns.len() as f64 * (until - self.now).as_secs_f64();
        }
    }

    fn conn(&self, i: usize, j: usize) -> Option<Conn> {
        self.conns.get(&(i.min(j), i.max(j))).copied()
    }

    /// Opens a connection between `i` and `j` unless one is open.
    fn connect(&mut self, i: usize, j: usize) {
        if self.conn(i, j).is_none() {
            self.opened += 1;
            self.traffic.dials += 1;
            let conn = Conn {
                n: self.opened,
                opened: self.now,
            };
            self.conns.insert((i.min(j), i.max(j)), conn);
            self.nodes[i].open.insert(j);
            self.nodes[j].open.insert(i);
        }
    }

    fn forget_conn(&mut self, i: usize, j: usize) -> Option<Conn> {
        let conn = self.conns.remove(&(i.min(j), i.max(j)))?;
        self.nodes[i].open.remove(&j);
        self.nodes[j].open.remove(&i);
        Some(conn)
    }

    /// Node `i` closes its connection to `j` (if open); `j` hears of it `after`.
    fn close(&mut self, i: usize, j: usize, after: Duration) {
        if let Some(conn) = self.forget_conn(i, j) {
            self.push(
                self.now + after,
                j,
                Ev::Closed {
                    peer: i,
                    conn: Some(conn.n),
                },
            );
        }
    }

    /// Node `i` closes its connection to `j` on purpose: gossip at both ends hears of it.
    fn hang_up(&mut self, i: usize, j: usize) {
        if let Some(conn) = self.conn(i, j) {
            self.push(
                self.now,
                i,
                Ev::Closed {
                    peer: j,
                    conn: Some(conn.n),
                },
            );
            self.close(i, j, self.latency(i, j));
        }
    }

    fn step(&mut self) {
        let Some(e) = self.queue.pop() else {
            return;
        };
        self.account_conns(e.at);
        self.now = e.at;
        if !self.nodes[e.node].alive {
            return;
        }
        match e.ev {
            Ev::Gossip(event) => self.gossip(e.node, event),
            Ev::Closed { peer, conn } => {
                let now_open = self.conn(e.node, peer).map(|c| c.n);
                if now_open.is_none() || now_open == conn {
                    self.forget_conn(e.node, peer);
                    let id = self.id(peer);
                    self.gossip(e.node, InEvent::PeerDisconnected(id));
                }
            }
            Ev::Sweep => {
                self.announce(e.node);
                let actions = self.member(e.node, |m, cx| m.sweep(cx, &[]));
                self.carry_out(e.node, actions);
                let now = self.now;
                self.nodes[e.node].flood.prune(now);
                if self.cfg.close_strays {
                    self.close_strays(e.node);
                }
                let next = self.now + self.cfg.timers.sweep;
                self.push(next, e.node, Ev::Sweep);
            }
            Ev::Probed(id, alive) => {
                let actions = self.member(e.node, |m, cx| m.probed(cx, id, alive));
                self.carry_out(e.node, actions);
            }
            Ev::Roster(from, entries, complete) => {
                for bytes in entries {
                    let actions = self.member(e.node, |m, cx| m.roster_entry(cx, bytes, from));
                    self.carry_out(e.node, actions);
                }
                let actions = self.member(e.node, |m, cx| m.roster_end(cx, from, complete));
                self.carry_out(e.node, actions);
            }
            Ev::RosterFailed => self.nodes[e.node].member.roster_failed(),
        }
    }

    /// Runs an event through node `i`'s membership, as `net::membership::step` does.
    fn member(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Member, &mut Cx) -> Vec<Action>,
    ) -> Vec<Action> {
        let unix_micros = self.unix_start + (self.now - self.start).as_micros() as u64;
        let now = self.now;
        let node = &mut self.nodes[i];
        let mut cx = Cx {
            table: &mut node.table,
            flood: &mut node.flood,
            now,
            unix_micros,
        };
        f(&mut node.member, &mut cx)
    }

    fn gossip(&mut self, i: usize, event: InEvent<EndpointId>) {
        let now = self.now;
        let at = tokio::time::Instant::from_std(now);
        let out: Vec<_> = self.nodes[i].gossip.handle(event, at, None).collect();
        for o in out {
            match o {
                OutEvent::SendMessage(to, msg) => self.send(i, to, msg),
                OutEvent::ScheduleTimer(after, timer) => {
                    self.push(now + after, i, Ev::Gossip(InEvent::TimerExpired(timer)))
                }
                OutEvent::DisconnectPeer(to) => {
                    if let Some(&j) = self.index.get(&to) {
                        self.close(i, j, self.latency(i, j));
                    }
                }
                OutEvent::EmitEvent(_, event) => {
                    let actions = match event {
                        Event::NeighborUp(id) => {
                            self.traffic.neighbour_ups += 1;
                            self.nodes[i].neighbours.insert(id);
                            self.member(i, |m, cx| m.neighbour_up(cx, id))
                        }
                        Event::NeighborDown(id) => {
                            self.nodes[i].neighbours.remove(&id);
                            self.member(i, |m, cx| m.neighbour_down(cx, id))
                        }
                        Event::Received(g) => self.member(i, |m, cx| {
                            m.received(cx, &g.content, g.delivered_from, g.scope.is_direct())
                        }),
                    };
                    self.carry_out(i, actions);
                }
                OutEvent::PeerData(..) => {}
            }
        }
    }

    /// A gossip frame from `i` to `to`: counted, then delivered after the pair's latency over
    /// their connection (opened by it). To a dead node it is lost, and when no connection was
    /// open the dial fails after [`SimConfig::dial_timeout`].
    fn send(&mut self, i: usize, to: EndpointId, msg: iroh_gossip::proto::Message<EndpointId>) {
        let Some(&j) = self.index.get(&to) else {
            return;
        };
        // The topic (32 bytes) goes once per stream, in its header; each frame has a u32 length.
        let encoded = postcard::to_allocvec(&msg).unwrap_or_default();
        let bytes = encoded.len().saturating_sub(32) + 4;
        self.traffic.sent += bytes as u64;
        self.traffic.messages += 1;
        if let Some(k) = traffic::kind_of(&encoded) {
            self.traffic.by_kind[k].0 += 1;
            self.traffic.by_kind[k].1 += bytes as u64;
        }
        let pair = (i.min(j), i.max(j));
        if !self.nodes[j].alive {
            if !self.conns.contains_key(&pair) {
                let at = self.now + self.cfg.dial_timeout;
                self.push(
                    at,
                    i,
                    Ev::Closed {
                        peer: j,
                        conn: None,
                    },
                );
            }
            return;
        }
        self.connect(i, j);
        self.traffic.received += bytes as u64;
        let at = self.now + self.latency(i, j);
        let from = self.id(i);
        self.push(at, j, Ev::Gossip(InEvent::RecvMessage(from, msg)));
    }

    /// Node `i`'s announcement as it is now (a client serving nothing).
    fn announcement(&self, i: usize) -> Announcement {
        let node = &self.nodes[i];
        Announcement {
            node: node.id,
            seq: self.unix_start + (self.now - self.start).as_micros() as u64,
            role: Role::Client,
            name: format!("sim-{i}"),
            region: None,
            models: Vec::new(),
            memory_bytes: 16 << 30,
            queue_depth: 0,
            tokens_per_second: 0.0,
            addr: node.addr.clone(),
            shares: Vec::new(),
            split: Box::default(),
        }
    }

    /// Broadcasts node `i`'s announcement when its schedule says so (`net::membership::announce`).
    fn announce(&mut self, i: usize) {
        let ann = self.announcement(i);
        let now = self.now;
        match self.nodes[i]
            .member
            .announce_due(now, Fingerprint::of(&ann))
        {
            None => {}
            Some(Audience::Mesh) => {
                self.traffic.announcements += 1;
                self.broadcast(i, &Message::Announce(ann), Scope::Swarm);
            }
            Some(Audience::Neighbours) => {
                self.traffic.greetings += 1;
                self.broadcast(i, &Message::Announce(ann), Scope::Neighbors);
            }
        }
    }

    fn broadcast(&mut self, i: usize, msg: &Message, scope: Scope) {
        let bytes = Bytes::from(announce::encode(&self.nodes[i].key, msg));
        let command = Command::Broadcast(bytes, scope);
        self.gossip(i, InEvent::Command(self.topic, command));
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Announce => self.announce(i),
                Action::ReportDown { about, about_seq } => {
                    let down = Message::Down {
                        node: self.id(i),
                        seq: self.unix_start + (self.now - self.start).as_micros() as u64,
                        about,
                        about_seq,
                    };
                    self.traffic.reports += 1;
                    self.broadcast(i, &down, Scope::Swarm);
                }
                Action::Probe(id) => {
                    let answer = match self.index.get(&id) {
                        Some(&j) if self.nodes[j].alive => (self.latency(i, j) * 4, true),
                        _ => (self.cfg.timers.probe, false),
                    };
                    self.push(self.now + answer.0, i, Ev::Probed(id, answer.1));
                }
                Action::FetchRoster(id) => self.fetch_roster(i, id),
                Action::Rejoin(ids) => {
                    self.rejoins += 1;
                    let at = self.now;
                    self.push(
                        at,
                        i,
                        Ev::Gossip(InEvent::Command(self.topic, Command::Join(ids))),
                    );
                }
                Action::Ban(id) => {
                    self.faults.bans += 1;
                    // The gate closes its connections.
                    if let Some(&j) = self.index.get(&id) {
                        self.hang_up(i, j);
                    }
                }
                Action::Changed(changes) => {
                    for change in changes {
                        if let Change::Left(id, why) = change {
                            let live = self.index.get(&id).is_some_and(|&j| self.nodes[j].alive);
                            if live && why != LeftBecause::Leave {
                                self.faults.live_dropped += 1;
                            }
                        }
                    }
                }
                Action::Reshaped | Action::Learned(_) => {}
            }
        }
    }

    /// Closes node `i`'s stray gossip connections (`Member::strays`), as `net::membership`
    /// does at each sweep.
    fn close_strays(&mut self, i: usize) {
        let open: Vec<(EndpointId, Instant)> = self.nodes[i]
            .open
            .iter()
            .filter_map(|&j| Some((self.id(j), self.conn(i, j)?.opened)))
            .collect();
        for id in self.nodes[i].member.strays(self.now, &open) {
            if let Some(&j) = self.index.get(&id) {
                self.traffic.strays_closed += 1;
                self.hang_up(i, j);
            }
        }
    }

    /// `mesh/roster/2`: the neighbour's own announcement signed now, then its table as signed;
    /// it arrives two round trips later (dial, then the request).
    fn fetch_roster(&mut self, i: usize, id: EndpointId) {
        self.nodes[i].rosters_asked += 1;
        let j = self.index.get(&id).copied();
        let Some(j) = j.filter(|&j| self.nodes[j].alive) else {
            let at = self.now + self.cfg.dial_timeout;
            self.push(at, i, Ev::RosterFailed);
            return;
        };
        let own = Message::Announce(self.announcement(j));
        let mut entries = vec![Bytes::from(announce::encode(&self.nodes[j].key, &own))];
        entries.extend(self.nodes[j].table.signed_roster());
        let bytes: u64 = entries.iter().map(|e| e.len() as u64 + 4).sum();
        self.traffic.sent += bytes;
        self.traffic.received += bytes;
        self.traffic.rosters.0 += 1;
        self.traffic.rosters.1 += bytes;
        let complete = self.nodes[j].member.roster_complete();
        let at = self.now + self.latency(i, j) * 4 + self.cfg.roster_delay;
        self.push(at, i, Ev::Roster(id, entries, complete));
    }
}
