//! Membership, sans-IO: one node's side of the mesh's membership protocol as state × event →
//! actions. The driver (`net::membership`) and the simulation (`examples/sim_membership.rs`)
//! feed it the same events (gossip messages and neighbour changes, a sweep's tick with the
//! tunnel connections that closed, probe answers, roster entries) with the tables they hold and
//! the clocks, and carry out the [`Action`]s it returns: no sockets, no timers, no clocks here.
//!
//! It ties the pure parts together: the flood guard (`state::flood`) before any decoding, the
//! signed-message checks (`proto::announce`), the peer table (`state::peers`), and the
//! announcement schedule and liveness policy (`state::liveness`). docs/DESIGN.md
//! ("Membership") has the whole picture.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::{EndpointAddr, EndpointId};

use super::alone::Alone;
use super::catch_up::CatchUp;
use super::flood::{FloodGuard, Verdict as Flood};
use super::liveness::{
    Fingerprint, Liveness, Report, RosterCue, Schedule, Signal, Verdict, FORCED_GAP,
};
use super::peers::{Change, PeerTable, Timers};
use crate::mesh::proto::announce::{self, Message};

/// A node that has just reached the mesh announces to it once more this long after.
pub const ANNOUNCE_AGAIN: Duration = Duration::from_secs(5);
/// Most former gossip neighbours remembered (a hostile member churning its neighbours cannot
/// grow the map past it; forgetting one early only lets its stray connection close later).
pub const MAX_FORMER: usize = super::peers::MAX_PEERS;

/// What the driver passes with every event: the tables it holds (locked) and the two clocks.
pub struct Cx<'a> {
    pub table: &'a mut PeerTable,
    pub flood: &'a mut FloodGuard,
    pub now: Instant,
    /// Wall clock in µs since the Unix epoch (the `seq` window).
    pub unix_micros: u64,
}

/// Who an announcement goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The whole mesh (gossip's swarm scope): what this node is changed, its refresh, its
    /// refutation of a `Down` report, its first announcement.
    Mesh,
    /// Its gossip neighbours only: a greeting to a new neighbour. The rest of the mesh knows
    /// the node already; broadcasting every change of gossip's active view to everyone would
    /// cost every node a signature check per neighbour change anywhere in the mesh.
    Neighbours,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Check the announcement schedule now ([`Member::announce_due`]): a new neighbour to
    /// greet, or a `Down` report about this node to refute.
    Announce,
    /// No gossip neighbour for `Timers::rejoin`: join these members (`state::alone`).
    Rejoin(Vec<EndpointId>),
    /// Sign and broadcast a `Down` report: `about` was found gone, last known at `about_seq`.
    ReportDown { about: EndpointId, about_seq: u64 },
    /// Dial `peer` to check it lives; answer with [`Member::probed`] within `Timers::probe`.
    Probe(EndpointId),
    /// Ask `peer` for its roster (`mesh/roster/2`); give each entry to [`Member::roster_entry`].
    FetchRoster(EndpointId),
    /// `peer` flooded us: cut its connections and refuse it until `flood::BAN` ends (it has
    /// left the table already; the change comes as its own action).
    Ban(EndpointId),
    /// The peer table changed: events for subscribers, tunnel and gate kept in step.
    Changed(Vec<Change>),
    /// What some member serves changed (the roster watch), without a join or leave.
    Reshaped,
    /// A member's address, as its author announced it: the dialler may use it.
    Learned(EndpointAddr),
}

/// One node's membership state, apart from the tables the driver shares with others.
#[derive(Debug)]
pub struct Member {
    me: EndpointId,
    timers: Timers,
    schedule: Schedule,
    liveness: Liveness,
    /// The newest gossip neighbour: asked for the roster again at the recheck.
    neighbour: Option<EndpointId>,
    /// Gossip neighbours now (gossip's active view: a handful).
    neighbours: BTreeSet<EndpointId>,
    /// Former gossip neighbours, and when they stopped being one (forgotten after
    /// `Timers::stray`; at most [`MAX_FORMER`], the oldest forgotten first).
    former: BTreeMap<EndpointId, Instant>,
    /// A mesh-wide announcement went out while the node had a neighbour to carry it.
    known_to_mesh: bool,
    /// A new neighbour waits for a greeting.
    greet: bool,
    /// When to announce to the whole mesh once more after reaching it: a broadcast can be lost
    /// while gossip's overlay reshapes around joins, and the refresh is minutes away.
    again_at: Option<Instant>,
    /// Cut off from gossip: when to ask members to take it in again.
    alone: Alone,
    /// Lost its last gossip neighbour (not set before the first one: a newcomer missed nothing).
    cut_off: bool,
    /// Back from being cut off: the members the new neighbour's roster lists.
    catch_up: CatchUp,
    /// Members asked for a roster while this node's table was not complete, and when: a retry
    /// asks a neighbour not asked yet, else the one asked longest ago (forgotten once complete;
    /// at most [`MAX_ASKED`]).
    asked: BTreeMap<EndpointId, Instant>,
}

/// Most members remembered as asked for a roster (then the memory starts again).
const MAX_ASKED: usize = 64;

impl Member {
    pub fn new(me: EndpointId, timers: Timers) -> Self {
        Self {
            me,
            timers,
            schedule: Schedule::new(timers),
            liveness: Liveness::new(timers),
            neighbour: None,
            neighbours: BTreeSet::new(),
            former: BTreeMap::new(),
            known_to_mesh: false,
            greet: false,
            again_at: None,
            alone: Alone::default(),
            cut_off: false,
            catch_up: CatchUp::default(),
            asked: BTreeMap::new(),
        }
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// Gossip neighbours now.
    pub fn neighbours(&self) -> usize {
        self.neighbours.len()
    }

    /// Sizes of the former neighbours and of the catch-up's list (for the attacker tests).
    pub fn sizes(&self) -> [usize; 2] {
        [self.former.len(), self.catch_up.listed_len()]
    }

    /// Announce at the next check, whatever changed (what this node serves changed).
    pub fn force(&mut self) {
        self.schedule.force();
    }

    /// Whether to announce now, and to whom, this node's announcement having fingerprint
    /// `own`; when so it counts as sent. A greeting waits for [`FORCED_GAP`] after the last
    /// announcement, like any forced one.
    pub fn announce_due(&mut self, now: Instant, own: Fingerprint) -> Option<Audience> {
        if self.again_at.is_some_and(|at| now >= at) {
            self.again_at = None;
            self.schedule.force();
        }
        if self.schedule.due(now, own) {
            self.schedule.sent(now, own);
            self.greet = false;
            if !self.known_to_mesh && !self.neighbours.is_empty() {
                self.known_to_mesh = true;
                self.again_at = Some(now + ANNOUNCE_AGAIN);
            }
            return Some(Audience::Mesh);
        }
        if self.greet && self.schedule.since_last(now) >= FORCED_GAP {
            self.greet = false;
            return Some(Audience::Neighbours);
        }
        None
    }

    /// The sweep (every `Timers::sweep`): `lost` are the tunnel connections that closed since
    /// the last one (`true`: timed out). Then suspects whose report went unrefuted, the stalest
    /// peers of a table under pressure, expiry, the roster recheck, asking back in when alone.
    pub fn sweep(&mut self, cx: &mut Cx, lost: &[(EndpointId, bool)]) -> Vec<Action> {
        let mut out = Vec::new();
        for &(id, timed_out) in lost {
            let signal = if timed_out {
                Signal::TimedOut
            } else {
                Signal::Lost
            };
            self.signal(cx, id, signal, &mut out);
        }
        let table = &*cx.table;
        let gone = self.liveness.suspicions_due(cx.now, |id| table.seq_of(id));
        for id in gone {
            changed(&mut out, cx.table.lose(&id));
        }
        // A full table refused strangers: check that its stalest peers still exist.
        let (refused, peers) = (cx.table.take_refused(), cx.table.len());
        let (free, probing) = self.liveness.pressure(refused, peers, cx.now);
        if free > 0 {
            for id in cx.table.stalest(free, &probing) {
                self.signal(cx, id, Signal::Lost, &mut out);
            }
        }
        changed(&mut out, cx.table.expire(cx.now, self.timers.expiry));
        if let Some(id) = self.roster_target() {
            if self.liveness.roster_due(cx.now, RosterCue::Sweep) {
                if self.catch_up.awaiting() {
                    self.catch_up.asked(id);
                }
                self.fetch_roster(id, cx.now, &mut out);
            }
        }
        self.liveness.prune(cx.now);
        let (now, stray) = (cx.now, self.timers.stray);
        self.former
            .retain(|_, at| now.saturating_duration_since(*at) < stray);
        let table = &*cx.table;
        let members = || table.peers().map(|p| p.ann.node).collect();
        if let Some(ids) = self
            .alone
            .check(now, self.neighbours.len(), members, &self.timers)
        {
            out.push(Action::Rejoin(ids));
        }
        out
    }

    /// The gossip connections to close (`open`: the peer and opening time of each open gossip
    /// connection): those to a peer that is not a gossip neighbour and was none for
    /// `Timers::stray`, open at least that long.
    ///
    /// Why: iroh-gossip's PlumTree adds a peer to its push sets when it grafts or prunes us,
    /// also after the two stopped being neighbours (the message was in flight as the active
    /// view changed), and then pushes every broadcast to it over a connection neither side
    /// closes (only a neighbour's removal closes one), which the keep-alives hold open for
    /// good: in the simulation, 14 open connections per node for 3.6 neighbours at 200 nodes.
    /// Closing one makes gossip at both ends forget the peer (it takes it for disconnected:
    /// PlumTree drops it from its push sets, HyParView from its passive view).
    pub fn strays(&self, now: Instant, open: &[(EndpointId, Instant)]) -> Vec<EndpointId> {
        open.iter()
            .filter(|(id, opened)| {
                now.saturating_duration_since(*opened) >= self.timers.stray
                    && !self.neighbours.contains(id)
                    && !self.former.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Gossip gave this node a new neighbour: greet it (it learns this node without waiting
    /// for a refresh; the whole mesh when this node has not reached it yet), and learn the
    /// whole mesh from its roster (again when it had no neighbour: what was broadcast
    /// meanwhile never reached it).
    pub fn neighbour_up(&mut self, cx: &mut Cx, id: EndpointId) -> Vec<Action> {
        let cue = if self.neighbours.is_empty() {
            RosterCue::Back
        } else {
            RosterCue::Neighbour
        };
        if self.known_to_mesh {
            self.greet = true;
        } else {
            self.schedule.force();
        }
        self.neighbours.insert(id);
        self.former.remove(&id);
        self.neighbour = Some(id);
        let back = std::mem::take(&mut self.cut_off);
        let mut out = vec![Action::Announce];
        if self.liveness.roster_due(cx.now, cue) {
            if back || self.catch_up.awaiting() {
                self.catch_up.asked(id);
            }
            self.fetch_roster(id, cx.now, &mut out);
        }
        out
    }

    /// Gossip dropped a neighbour: dead, leaving, or only rotated out of its active view.
    pub fn neighbour_down(&mut self, cx: &mut Cx, id: EndpointId) -> Vec<Action> {
        self.neighbours.remove(&id);
        if self.former.len() >= MAX_FORMER {
            let oldest = self
                .former
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| *k);
            oldest.map(|k| self.former.remove(&k));
        }
        self.former.insert(id, cx.now);
        // Cut off from the mesh (a partition, a stall): the other side may have dropped this
        // node meanwhile, so the next neighbour brings a mesh-wide announcement.
        if self.neighbours.is_empty() {
            self.known_to_mesh = false;
            self.cut_off = true;
        }
        let mut out = Vec::new();
        self.signal(cx, id, Signal::Lost, &mut out);
        out
    }

    /// A probe's answer: `alive` when a connection was made within `Timers::probe`.
    pub fn probed(&mut self, cx: &mut Cx, id: EndpointId, alive: bool) -> Vec<Action> {
        let mut out = Vec::new();
        if alive {
            cx.table.touch(&id, cx.now);
        }
        if self.liveness.answered(id, alive) == Verdict::Gone {
            self.lose(cx, id, &mut out);
        }
        out
    }

    /// A gossip message delivered by neighbour `from` (`direct`: straight from its author).
    pub fn received(
        &mut self,
        cx: &mut Cx,
        bytes: &[u8],
        from: EndpointId,
        direct: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let verdict = cx.flood.arrived(from, direct, cx.now);
        if !guard(cx, verdict, &mut out) {
            return out;
        }
        let Ok(msg) = announce::decode(bytes) else {
            return out;
        };
        if !announce::sender_matches(msg.node(), from, direct) {
            return out;
        }
        self.accept(cx, msg, Bytes::copy_from_slice(bytes), from, &mut out);
        out
    }

    /// One entry of neighbour `from`'s roster: an announcement, checked like a relayed gossip
    /// message (the neighbour's word counts for nothing: only the author's signature does).
    pub fn roster_entry(&mut self, cx: &mut Cx, bytes: Bytes, from: EndpointId) -> Vec<Action> {
        let mut out = Vec::new();
        if let Ok(msg @ Message::Announce(_)) = announce::decode(&bytes) {
            self.catch_up.listed(from, msg.node());
            self.accept(cx, msg, bytes, from, &mut out);
        }
        out
    }

    /// Neighbour `from`'s roster has ended (`complete`: as its sender said). After being cut
    /// off, the members it did not list are dialled (`state::catch_up`): one that died
    /// meanwhile goes at the probe's timeout. An incomplete roster is asked again later, of a
    /// gossip neighbour of that moment (`Liveness::roster_received`, `roster_target`).
    pub fn roster_end(&mut self, cx: &mut Cx, from: EndpointId, complete: bool) -> Vec<Action> {
        self.liveness.roster_received(complete);
        if self.liveness.roster_complete() {
            self.asked.clear();
        }
        let (me, neighbours) = (self.me, &self.neighbours);
        let skip = |id: &EndpointId| *id == me || neighbours.contains(id);
        // Read lazily: after every other roster `ended` returns at once, without the table.
        let members = cx.table.peers().map(|p| p.ann.node);
        let unlisted = self.catch_up.ended(from, members, skip);
        let mut out = Vec::new();
        for id in unlisted {
            self.signal(cx, id, Signal::Lost, &mut out);
        }
        out
    }

    /// Whom the sweep's ask (the recheck, a retry) goes to: a gossip neighbour of the moment,
    /// the newest first; until this node's table is complete, one not asked yet, else the one
    /// asked longest ago (it may have had a complete roster since). None while this node has
    /// no neighbour (it asks its next one when it comes).
    fn roster_target(&self) -> Option<EndpointId> {
        let newest = self.neighbour.filter(|id| self.neighbours.contains(id));
        let others = self.neighbours.iter().filter(|id| Some(**id) != newest);
        newest
            .into_iter()
            .chain(others.copied())
            .min_by_key(|id| self.asked.get(id).copied())
    }

    /// Asks `id` for its roster (noted while this node's table is not complete).
    fn fetch_roster(&mut self, id: EndpointId, now: Instant, out: &mut Vec<Action>) {
        if !self.liveness.roster_complete() {
            if self.asked.len() >= MAX_ASKED {
                self.asked.clear();
            }
            self.asked.insert(id, now);
        }
        out.push(Action::FetchRoster(id));
    }

    /// The roster asked for did not come (no answer in time, the connection lost): it is
    /// asked again at a later sweep, of a gossip neighbour of that moment
    /// (`roster_target`).
    pub fn roster_failed(&mut self) {
        self.liveness.roster_failed();
    }

    /// This node starts the mesh (it joins no one): its table is complete from the start.
    pub fn started_mesh(&mut self) {
        self.liveness.started_mesh();
    }

    /// Whether this node's table is complete (said with every roster it hands out).
    pub fn roster_complete(&self) -> bool {
        self.liveness.roster_complete()
    }

    /// Something happened to our connection to `id`: drop it now, or dial it first.
    fn signal(&mut self, cx: &mut Cx, id: EndpointId, signal: Signal, out: &mut Vec<Action>) {
        let member = cx.table.get(&id).is_some();
        match self.liveness.signal(id, signal, member, cx.now) {
            Verdict::Nothing => {}
            Verdict::Gone => self.lose(cx, id, out),
            Verdict::Probe => out.push(Action::Probe(id)),
        }
    }

    /// Drops a peer this node found gone, and tells the mesh (within the report budget).
    fn lose(&mut self, cx: &mut Cx, id: EndpointId, out: &mut Vec<Action>) {
        let Some(about_seq) = cx.table.seq_of(&id) else {
            return;
        };
        changed(out, cx.table.lose(&id));
        if self.liveness.may_report(cx.now) {
            out.push(Action::ReportDown {
                about: id,
                about_seq,
            });
        }
    }

    /// A decoded, signature-checked message (from gossip or a roster): the `seq` window, the
    /// author's rate, then the liveness policy or the table.
    fn accept(
        &mut self,
        cx: &mut Cx,
        msg: Message,
        bytes: Bytes,
        from: EndpointId,
        out: &mut Vec<Action>,
    ) {
        let node = msg.node();
        if node == self.me || !announce::seq_in_window(msg.seq(), cx.unix_micros) {
            return;
        }
        let verdict = cx.flood.authored(node, from, cx.now);
        if !guard(cx, verdict, out) {
            return;
        }
        if let Message::Down {
            about, about_seq, ..
        } = msg
        {
            let reporter = cx.table.get(&node).is_some();
            let known = cx.table.seq_of(&about);
            let me = self.me;
            match self
                .liveness
                .report(about, about_seq, me, reporter, known, cx.now)
            {
                Report::Refute => {
                    self.schedule.force();
                    out.push(Action::Announce);
                }
                Report::Suspect | Report::Ignore => {}
            }
            return;
        }
        let addr = match &msg {
            Message::Announce(a) => Some(a.addr.clone()),
            _ => None,
        };
        let before = served(cx.table, &node);
        let changes = cx.table.apply_signed(msg, bytes, cx.now);
        let after = served(cx.table, &node);
        // Only members' addresses are dialled (not those of strangers a full table refused).
        if let (Some(addr), true) = (addr, after.is_some()) {
            out.push(Action::Learned(addr));
        }
        if before != after {
            out.push(Action::Reshaped);
        }
        changed(out, changes);
    }
}

/// The names of the models `node` serves, `None` when it is no peer.
fn served(table: &PeerTable, node: &EndpointId) -> Option<Vec<String>> {
    let peer = table.get(node)?;
    Some(peer.ann.models.iter().map(|m| m.name.clone()).collect())
}

fn changed(out: &mut Vec<Action>, changes: Vec<Change>) {
    if !changes.is_empty() {
        out.push(Action::Changed(changes));
    }
}

/// Acts on the flood guard's verdict; `true` when the message goes on. A banned neighbour
/// leaves the table at once.
fn guard(cx: &mut Cx, verdict: Flood, out: &mut Vec<Action>) -> bool {
    match verdict {
        Flood::Pass => true,
        Flood::Drop => false,
        Flood::Ban(id) => {
            out.push(Action::Ban(id));
            changed(out, cx.table.lose(&id));
            false
        }
    }
}

#[cfg(test)]
#[path = "member_tests.rs"]
mod tests;
