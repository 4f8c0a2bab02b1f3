//! Liveness: when this node announces itself, and which peers are gone. Pure: the membership
//! driver passes in what it sees (its own announcement's [`Fingerprint`], gossip's neighbour
//! events, iroh's connection state, a probe's answer, `Down` reports) with `Instant`s, and does
//! what the answers say. docs/DESIGN.md ("Membership") has the whole picture.
//!
//! **Announcements** ([`Schedule`]) go out when something changes, not on a heartbeat: at once
//! (at most every [`FORCED_GAP`]) when what a node *is* changes (models, slots, context, name,
//! region, address), when gossip gives it a new neighbour, or when some member reports it down
//! (its refutation); when only its load changed (free slots, queue, tok/s) at most every
//! [`Timers::load_gap`]; otherwise once per [`Timers::refresh`].
//!
//! **Liveness** comes from iroh, not from heartbeats ([`Liveness`]): every connection sends
//! QUIC keep-alives and closes with a timeout when it hears nothing (`net::endpoint`). Such a
//! timeout on our own connection proves the peer gone; a connection the peer closed, or a
//! gossip neighbour that went down (perhaps only rotated out of gossip's active view), makes it
//! a *suspect* that is dialled ([`Verdict::Probe`]): no answer within [`Timers::probe`] means
//! gone. A node that finds a peer gone drops it and tells the mesh with a signed `Down`
//! report. A member receiving a report holds the peer as suspected for [`Timers::suspect`]
//! and drops it then, unless a newer announcement of it arrived meanwhile: a live node that
//! sees a report about itself refutes it at once with a fresh announcement (SWIM), so a false
//! report costs it one message and never takes it out of routing.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use iroh::EndpointId;

use super::peers::{Timers, MAX_PEERS};
use crate::mesh::proto::announce::Announcement;

/// Shortest gap between two announcements, whatever forces them: a stream of false `Down`
/// reports makes a node refute at most this often (well under the flood guard's direct rate).
pub const FORCED_GAP: Duration = Duration::from_millis(250);
/// Most peers dialled at once to check they live (a neighbour view collapsing starts no storm).
pub const MAX_PROBES: usize = 16;
/// Most peers suspected at once (each is a peer of the table, so this is the table's cap).
pub const MAX_SUSPECTS: usize = MAX_PEERS;
/// `Down` reports this node may broadcast: burst, and refill per second. Its neighbours' flood
/// guard bans a neighbour sending more than 8 direct messages a second (burst 32), and a
/// partition or a sybil purge could find hundreds of peers gone at once; those over the budget
/// are dropped here without a report (the others find them gone on their own).
pub const REPORT_BURST: f64 = 8.0;
pub const REPORTS_PER_SEC: f64 = 2.0;
/// How long after the peer table last refused a stranger it keeps checking its stalest peers.
pub const PRESSURE: Duration = Duration::from_secs(60);
/// A new gossip neighbour is asked for its roster (`net::roster`) unless one was asked within
/// this: a newcomer asks its first neighbour, and a neighbour view reshuffling costs no stream
/// of rosters.
pub const ROSTER_GAP: Duration = Duration::from_secs(30);
/// A newcomer asks a neighbour for the roster a second time this long after the first: nodes
/// that joined at the same moment announced themselves before it was connected, and are in
/// its neighbours' tables by now.
pub const ROSTER_RECHECK: Duration = Duration::from_secs(5);
/// A roster that did not come (refused, no answer within `net::roster::ROSTER_TIMEOUT`, the
/// connection lost) is asked again, of the neighbour of the moment, [`ROSTER_RECHECK`] after
/// the ask, then twice as long after each failure in a row, at most this long. Without it a
/// newcomer whose first two asks failed (in a join burst of 300 nodes on 2 cores, 188 asks of
/// ~1,170 did) lacked every member that did not announce again after it joined, until their
/// refresh. An incomplete roster (its sender had no complete one yet: in a join burst the
/// newcomer's first neighbour is often the node that joined just before it) counts as a
/// failure until a complete one came ([`Liveness::roster_received`]).
pub const ROSTER_RETRY_MAX: Duration = Duration::from_secs(160);
/// Incomplete rosters after which a node that has had no complete one counts as complete
/// ([`Liveness::roster_received`]): with the retry's gaps, asked over about 75 s.
pub const INCOMPLETE_ROSTERS: u32 = 5;
/// Why the roster might be due ([`Liveness::roster_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterCue {
    /// The sweep (the newcomer's recheck).
    Sweep,
    /// A new gossip neighbour.
    Neighbour,
    /// A new gossip neighbour of a node that had none: whatever was broadcast while it was cut
    /// off never reached it, and is in the neighbour's table.
    Back,
}

/// What an announcement says, split into what the node is and how busy it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub shape: u64,
    pub load: u64,
}

impl Fingerprint {
    pub fn of(a: &Announcement) -> Self {
        let mut shape = DefaultHasher::new();
        (a.role.as_str(), &a.name, &a.region, a.memory_bytes).hash(&mut shape);
        for m in &a.models {
            (&m.name, m.slots, m.ctx).hash(&mut shape);
        }
        a.shares.hash(&mut shape);
        a.addr.id.hash(&mut shape);
        for addr in a.addr.addrs.iter() {
            format!("{addr:?}").hash(&mut shape);
        }
        let mut load = DefaultHasher::new();
        for m in &a.models {
            m.free_slots.hash(&mut load);
        }
        (a.queue_depth, a.tokens_per_second.to_bits()).hash(&mut load);
        Self {
            shape: shape.finish(),
            load: load.finish(),
        }
    }
}

/// When this node announces itself.
#[derive(Debug, Clone)]
pub struct Schedule {
    timers: Timers,
    last: Option<(Instant, Fingerprint)>,
    forced: bool,
}

impl Schedule {
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            last: None,
            forced: false,
        }
    }

    /// Announce at the next check whatever changed (a new neighbour, a refutation, a change
    /// the node reported itself).
    pub fn force(&mut self) {
        self.forced = true;
    }

    /// Whether to announce now, with this fingerprint.
    pub fn due(&self, now: Instant, fp: Fingerprint) -> bool {
        let Some((at, last)) = self.last else {
            return true;
        };
        let since = now.saturating_duration_since(at);
        ((self.forced || fp.shape != last.shape) && since >= FORCED_GAP)
            || (fp.load != last.load && since >= self.timers.load_gap)
            || since >= self.timers.refresh
    }

    /// Time since the last announcement (the longest when there was none).
    pub fn since_last(&self, now: Instant) -> Duration {
        self.last
            .map_or(Duration::MAX, |(at, _)| now.saturating_duration_since(at))
    }

    /// The announcement went out.
    pub fn sent(&mut self, now: Instant, fp: Fingerprint) {
        self.last = Some((now, fp));
        self.forced = false;
    }
}

/// What this node saw happen to a peer's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Our connection to it closed because it heard nothing for the idle timeout: its
    /// keep-alives stopped.
    TimedOut,
    /// It closed our connection, or gossip dropped it as a neighbour (dead, leaving, or only
    /// rotated out of the active view).
    Lost,
}

/// What to do about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing (not a member, already being checked, or alive).
    Nothing,
    /// Dial it; report back with [`Liveness::answered`] within [`Timers::probe`].
    Probe,
    /// Gone: drop it and report it down.
    Gone,
}

/// What to do with a `Down` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Nothing: about a stranger, from a stranger, or older than what we know of the peer.
    Ignore,
    /// It is about this node: announce now.
    Refute,
    /// The peer is suspected: dropped at [`Liveness::suspicions_due`] unless it refutes.
    Suspect,
}

#[derive(Debug, Clone, Copy)]
struct Suspicion {
    /// The peer's newest `seq` when it was reported: a newer one refutes the report.
    seq: u64,
    until: Instant,
}

/// Peers being dialled, and peers reported down.
#[derive(Debug)]
pub struct Liveness {
    timers: Timers,
    probing: BTreeMap<EndpointId, Instant>,
    suspects: BTreeMap<EndpointId, Suspicion>,
    last_roster: Option<Instant>,
    /// Rosters asked so far (the second comes [`ROSTER_RECHECK`] after the first).
    rosters: u32,
    /// The last ask failed or brought an incomplete roster: ask again (`roster_failures` in a
    /// row so far).
    roster_retry: bool,
    roster_failures: u32,
    /// This node's table is complete ([`Liveness::roster_complete`]).
    complete: bool,
    /// Incomplete rosters received so far.
    incomplete_rosters: u32,
    /// Token bucket of `Down` reports: tokens, and when it was last filled.
    reports: (f64, Option<Instant>),
    /// Until when a full table checks its stalest peers ([`Liveness::pressure`]).
    pressure_until: Option<Instant>,
}

impl Liveness {
    pub fn new(timers: Timers) -> Self {
        Self {
            timers,
            probing: BTreeMap::new(),
            suspects: BTreeMap::new(),
            last_roster: None,
            rosters: 0,
            roster_retry: false,
            roster_failures: 0,
            complete: false,
            incomplete_rosters: 0,
            reports: (REPORT_BURST, None),
            pressure_until: None,
        }
    }

    /// A peer found gone: whether to tell the mesh (a `Down` report) within the budget.
    pub fn may_report(&mut self, now: Instant) -> bool {
        let (tokens, at) = self.reports;
        let refill = at.map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        let tokens = (tokens + refill * REPORTS_PER_SEC).min(REPORT_BURST);
        let ok = tokens >= 1.0;
        self.reports = (if ok { tokens - 1.0 } else { tokens }, Some(now));
        ok
    }

    /// The full peer table refused `refused` strangers since the last sweep: for
    /// [`PRESSURE`] from now, while the table holds `peers` ≥ 7/8 of [`MAX_PEERS`], the
    /// sweep dials its stalest peers, so slots held by nodes that do not exist (sybils) free
    /// up. Returns how many to dial now (the free probes) and those being dialled (to leave
    /// out of `PeerTable::stalest`).
    pub fn pressure(
        &mut self,
        refused: usize,
        peers: usize,
        now: Instant,
    ) -> (usize, Vec<EndpointId>) {
        if refused > 0 {
            self.pressure_until = Some(now + PRESSURE);
        }
        let under = self.pressure_until.is_some_and(|until| now < until);
        if !under || peers < MAX_PEERS - MAX_PEERS / 8 {
            return (0, Vec::new());
        }
        (
            MAX_PROBES.saturating_sub(self.probing.len()),
            self.probing.keys().copied().collect(),
        )
    }

    /// Whether to ask a neighbour for its roster now (noted when so): at the first neighbour,
    /// again [`ROSTER_RECHECK`] later (a new neighbour or the sweep), then at a new neighbour
    /// at most once per [`ROSTER_GAP`], or per [`ROSTER_RECHECK`] when the node was cut off.
    /// An ask that failed is made again after [`Liveness::retry_gap`], at any cue (a retry is
    /// not counted as an ask of its own; an ask due anyway goes first, the recheck excepted).
    pub fn roster_due(&mut self, now: Instant, cue: RosterCue) -> bool {
        let since = |at: Instant| now.saturating_duration_since(at);
        let (asked, pending) = (self.last_roster, self.roster_retry);
        let retry = pending && asked.is_some_and(|at| since(at) >= self.retry_gap());
        let due = match (self.rosters, asked, cue) {
            (_, None, RosterCue::Sweep) => false,
            (_, None, _) => true,
            // The recheck; while a retry is pending, the retry's gap stands in for it.
            (1, Some(at), _) => !pending && since(at) >= ROSTER_RECHECK,
            (_, Some(_), RosterCue::Sweep) => false,
            (_, Some(at), RosterCue::Neighbour) => since(at) >= ROSTER_GAP,
            (_, Some(at), RosterCue::Back) => since(at) >= ROSTER_RECHECK,
        };
        if due || retry {
            self.last_roster = Some(now);
            self.roster_retry = false;
        }
        if due && !pending {
            self.rosters = self.rosters.saturating_add(1);
        }
        due || retry
    }

    /// The roster asked for did not come: ask again after [`Liveness::retry_gap`].
    pub fn roster_failed(&mut self) {
        self.roster_failures = self.roster_failures.saturating_add(1);
        self.roster_retry = true;
    }

    /// How long after a failed ask the next is made: [`ROSTER_RECHECK`], doubled for each
    /// further failure in a row, at most [`ROSTER_RETRY_MAX`].
    fn retry_gap(&self) -> Duration {
        let doublings = self.roster_failures.saturating_sub(1).min(16);
        (ROSTER_RECHECK * 2u32.pow(doublings)).min(ROSTER_RETRY_MAX)
    }

    /// A roster came; `complete`: its sender's table was complete. Until one like that came,
    /// an incomplete one is asked again like a failed one, and after [`INCOMPLETE_ROSTERS`] of
    /// them this node counts as complete itself: completeness spreads from the node that
    /// started the mesh one roster at a time, slowly when hundreds join at once, while the
    /// incomplete rosters of different neighbours fill the table meanwhile; and a mesh whose
    /// starter left before anyone asked it stops asking.
    pub fn roster_received(&mut self, complete: bool) {
        self.incomplete_rosters += u32::from(!complete);
        let give_up = self.incomplete_rosters >= INCOMPLETE_ROSTERS;
        if complete || self.complete || give_up {
            self.roster_failures = 0;
            self.complete = true;
        } else {
            self.roster_failed();
        }
    }

    /// This node started the mesh: every member announced itself to it, so its table is
    /// complete from the start. A restart without a join ticket starts another mesh (a new
    /// mesh id, `MeshConfig::keys`), whose table is again complete; a restart that rejoins
    /// comes back with a ticket and counts as a newcomer.
    pub fn started_mesh(&mut self) {
        self.complete = true;
    }

    /// Whether this node's table is complete: it started the mesh, or it had a complete
    /// roster (or gave up waiting for one). Said with every roster it hands out.
    pub fn roster_complete(&self) -> bool {
        self.complete
    }

    /// Something happened to our connection to `peer`; `member`: it is in the peer table.
    pub fn signal(
        &mut self,
        peer: EndpointId,
        signal: Signal,
        member: bool,
        now: Instant,
    ) -> Verdict {
        if !member {
            return Verdict::Nothing;
        }
        match signal {
            Signal::TimedOut => {
                self.probing.remove(&peer);
                Verdict::Gone
            }
            Signal::Lost => {
                if self.probing.contains_key(&peer) || self.probing.len() >= MAX_PROBES {
                    return Verdict::Nothing;
                }
                self.probing.insert(peer, now);
                Verdict::Probe
            }
        }
    }

    /// The probe's answer: `alive` when a connection was made within [`Timers::probe`].
    pub fn answered(&mut self, peer: EndpointId, alive: bool) -> Verdict {
        match (self.probing.remove(&peer), alive) {
            (Some(_), false) => Verdict::Gone,
            _ => Verdict::Nothing,
        }
    }

    /// A member's `Down` report about `about`, which it last knew at `about_seq`. `known`: the
    /// newest `seq` of `about` in our table (`None`: not a peer); `reporter_member`: the
    /// report's author is a peer.
    pub fn report(
        &mut self,
        about: EndpointId,
        about_seq: u64,
        me: EndpointId,
        reporter_member: bool,
        known: Option<u64>,
        now: Instant,
    ) -> Report {
        if about == me {
            return Report::Refute;
        }
        let Some(known) = known else {
            return Report::Ignore;
        };
        if !reporter_member || about_seq < known {
            // A stranger's word, or the peer announced after the reporter's evidence.
            return Report::Ignore;
        }
        if self.suspects.len() >= MAX_SUSPECTS && !self.suspects.contains_key(&about) {
            return Report::Ignore;
        }
        let fresh = Suspicion {
            seq: known,
            until: now + self.timers.suspect,
        };
        match self.suspects.get_mut(&about) {
            // Reported again before it refuted: the first report's deadline stands.
            Some(s) if s.seq >= known => {}
            // It refuted an earlier report already: this one gets its own time to refute.
            Some(s) => *s = fresh,
            None => {
                self.suspects.insert(about, fresh);
            }
        }
        Report::Suspect
    }

    /// Suspects whose time is up: those still at the reported `seq` (`newest`: a peer's newest
    /// `seq` in our table, `None` when it left) are gone; those that announced since are not.
    pub fn suspicions_due(
        &mut self,
        now: Instant,
        newest: impl Fn(&EndpointId) -> Option<u64>,
    ) -> Vec<EndpointId> {
        let mut gone = Vec::new();
        self.suspects.retain(|id, s| {
            if now < s.until {
                return true;
            }
            if newest(id).is_some_and(|seq| seq <= s.seq) {
                gone.push(*id);
            }
            false
        });
        gone
    }

    /// Whether `peer` is suspected now (for tests and views).
    pub fn is_suspected(&self, peer: &EndpointId) -> bool {
        self.suspects.contains_key(peer)
    }

    /// Forgets probes that never answered (the probe task is bounded by [`Timers::probe`], so
    /// this only guards the table's size).
    pub fn prune(&mut self, now: Instant) {
        let probe = self.timers.probe;
        self.probing
            .retain(|_, since| now.saturating_duration_since(*since) <= probe * 2);
    }

    /// Entries: probes in flight, suspects.
    pub fn sizes(&self) -> [usize; 2] {
        [self.probing.len(), self.suspects.len()]
    }
}

#[cfg(test)]
#[path = "liveness_tests.rs"]
mod tests;
