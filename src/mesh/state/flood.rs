//! The flood guard: how many gossip messages each neighbour and each author may send us, and
//! who is banned for sending more. Pure: neighbour ids, message kinds and `Instant`s go in,
//! [`Verdict`]s come out; no sockets, no clocks.
//!
//! iroh-gossip forwards and caches every new message before we see it, so this guard cannot
//! stop a flood from reaching us; it makes each junk message cost a map lookup, and it names the
//! neighbour to cut off (the membership driver closes its connections and the gate keeps it
//! out for [`BAN`]). Three token buckets:
//!
//! - **direct** (per neighbour, messages that come straight from their author: gossip round 0
//!   or neighbour scope): an honest node sends at most four a second (an announcement when what
//!   it is changes or a neighbour comes up, at most every 250 ms; load at most every 2 s;
//!   `Down` reports within their own budget). Emptying it bans the neighbour.
//! - **relayed** (per neighbour, messages it forwards for others): sized for a full table
//!   announcing at once, twice over. Emptying it drops that neighbour's
//!   messages until it refills, without a ban: an honest node forwarding a flood it received
//!   before the flooder was cut off must not be banned for it.
//! - **author** (per signer of a valid message, however it arrived): the same rate as direct.
//!   Emptying it drops the author's messages and bans it when it is also the neighbour.
//!
//! Every table is bounded ([`MAX_TRACKED`], [`MAX_BANNED`]) and pruned by [`FloodGuard::prune`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use iroh::EndpointId;

use super::peers::MAX_PEERS;

/// How long a neighbour that flooded us stays banned (its messages dropped, its connections
/// refused by the gate).
pub const BAN: Duration = Duration::from_secs(600);
/// Direct messages (and valid messages per author): burst, and refill per second.
pub const DIRECT_BURST: f64 = 32.0;
pub const DIRECT_PER_SEC: f64 = 8.0;
/// Relayed messages per neighbour: a full table's heartbeats, twice over.
pub const RELAYED_BURST: f64 = 4.0 * MAX_PEERS as f64;
pub const RELAYED_PER_SEC: f64 = 2.0 * MAX_PEERS as f64;
/// Most neighbours and authors with a bucket each; most bans remembered.
pub const MAX_TRACKED: usize = 4 * MAX_PEERS;
pub const MAX_BANNED: usize = 4 * MAX_PEERS;

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (decode, check, apply).
    Pass,
    /// Drop it, nothing else to do.
    Drop,
    /// Drop it and cut this neighbour off: it has just been banned.
    Ban(EndpointId),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills for the time since the last call, then takes one token if there is one.
    fn take(&mut self, now: Instant, burst: f64, per_sec: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Full again by `now`: forgetting it changes nothing.
    fn idle(&self, now: Instant, burst: f64, per_sec: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec >= burst
    }
}

/// Buckets of one kind, keyed by node, at most [`MAX_TRACKED`].
#[derive(Debug)]
struct Buckets {
    burst: f64,
    per_sec: f64,
    map: HashMap<EndpointId, Bucket>,
}

impl Buckets {
    fn new(burst: f64, per_sec: f64) -> Self {
        Self {
            burst,
            per_sec,
            map: HashMap::new(),
        }
    }

    fn take(&mut self, id: EndpointId, now: Instant) -> bool {
        if !self.map.contains_key(&id) && self.map.len() >= MAX_TRACKED {
            // Full between two prunes: forget any one (a forgotten bucket starts full, which
            // only ever favours that node).
            if let Some(k) = self.map.keys().next().copied() {
                self.map.remove(&k);
            }
        }
        let (burst, per_sec) = (self.burst, self.per_sec);
        self.map
            .entry(id)
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            })
            .take(now, burst, per_sec)
    }

    fn prune(&mut self, now: Instant) {
        let (burst, per_sec) = (self.burst, self.per_sec);
        self.map.retain(|_, b| !b.idle(now, burst, per_sec));
    }
}

#[derive(Debug)]
pub struct FloodGuard {
    direct: Buckets,
    relayed: Buckets,
    authors: Buckets,
    /// Banned nodes and until when.
    banned: HashMap<EndpointId, Instant>,
}

impl Default for FloodGuard {
    fn default() -> Self {
        Self {
            direct: Buckets::new(DIRECT_BURST, DIRECT_PER_SEC),
            relayed: Buckets::new(RELAYED_BURST, RELAYED_PER_SEC),
            authors: Buckets::new(DIRECT_BURST, DIRECT_PER_SEC),
            banned: HashMap::new(),
        }
    }
}

impl FloodGuard {
    /// A message arrived from neighbour `from` (`direct`: straight from its author), before it is
    /// decoded. Cheap: one or two map lookups.
    pub fn arrived(&mut self, from: EndpointId, direct: bool, now: Instant) -> Verdict {
        if self.is_banned(&from, now) {
            return Verdict::Drop;
        }
        if direct {
            if self.direct.take(from, now) {
                Verdict::Pass
            } else {
                self.ban(from, now)
            }
        } else if self.relayed.take(from, now) {
            Verdict::Pass
        } else {
            Verdict::Drop
        }
    }

    /// A valid message signed by `author` arrived from neighbour `from`.
    pub fn authored(&mut self, author: EndpointId, from: EndpointId, now: Instant) -> Verdict {
        if self.is_banned(&author, now) {
            return Verdict::Drop;
        }
        if self.authors.take(author, now) {
            Verdict::Pass
        } else if author == from {
            self.ban(from, now)
        } else {
            Verdict::Drop
        }
    }

    pub fn is_banned(&self, id: &EndpointId, now: Instant) -> bool {
        self.banned.get(id).is_some_and(|&until| now < until)
    }

    /// Bans `id` for [`BAN`] (also when it flooded us some other way).
    pub fn ban(&mut self, id: EndpointId, now: Instant) -> Verdict {
        if self.banned.len() >= MAX_BANNED {
            self.prune_bans(now);
        }
        if self.banned.len() >= MAX_BANNED {
            // Still full: the ban ending soonest makes room.
            if let Some(k) = self.banned.iter().min_by_key(|(_, u)| **u).map(|(k, _)| *k) {
                self.banned.remove(&k);
            }
        }
        self.banned.insert(id, now + BAN);
        Verdict::Ban(id)
    }

    /// Forgets full buckets and ended bans (called with the peer table's sweep).
    pub fn prune(&mut self, now: Instant) {
        self.direct.prune(now);
        self.relayed.prune(now);
        self.authors.prune(now);
        self.prune_bans(now);
    }

    fn prune_bans(&mut self, now: Instant) {
        self.banned.retain(|_, until| now < *until);
    }

    /// Entries in each table: buckets (direct, relayed, author) and bans.
    pub fn sizes(&self) -> [usize; 4] {
        [
            self.direct.map.len(),
            self.relayed.map.len(),
            self.authors.map.len(),
            self.banned.len(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn id() -> EndpointId {
        SecretKey::generate().public()
    }

    #[test]
    fn an_honest_heartbeat_passes_forever() {
        let mut g = FloodGuard::default();
        let (n, t0) = (id(), Instant::now());
        // Two messages a second (heartbeat plus a change) for ten minutes.
        for i in 0..1200 {
            let now = t0 + Duration::from_millis(500 * i);
            assert_eq!(g.arrived(n, true, now), Verdict::Pass, "message {i}");
            assert_eq!(g.authored(n, n, now), Verdict::Pass, "message {i}");
        }
    }

    #[test]
    fn a_direct_flood_bans_its_neighbour_and_then_costs_a_lookup() {
        let mut g = FloodGuard::default();
        let (x, honest, now) = (id(), id(), Instant::now());
        let verdicts: Vec<_> = (0..1000).map(|_| g.arrived(x, true, now)).collect();
        let passed = verdicts.iter().filter(|v| **v == Verdict::Pass).count();
        assert_eq!(passed, DIRECT_BURST as usize);
        assert_eq!(verdicts[passed], Verdict::Ban(x));
        assert!(verdicts[passed + 1..].iter().all(|v| *v == Verdict::Drop));
        // Banned for BAN, also for its relayed and authored messages; others are untouched.
        let later = now + BAN - Duration::from_secs(1);
        assert_eq!(g.arrived(x, false, later), Verdict::Drop);
        assert_eq!(g.authored(x, honest, later), Verdict::Drop);
        assert_eq!(g.arrived(honest, true, now), Verdict::Pass);
        assert_eq!(g.arrived(x, true, now + BAN), Verdict::Pass);
    }

    #[test]
    fn a_relayed_flood_is_dropped_but_the_honest_relay_is_not_banned() {
        let mut g = FloodGuard::default();
        let (relay, now) = (id(), Instant::now());
        let verdicts: Vec<_> = (0..20_000).map(|_| g.arrived(relay, false, now)).collect();
        assert!(verdicts.iter().all(|v| !matches!(v, Verdict::Ban(_))));
        let passed = verdicts.iter().filter(|v| **v == Verdict::Pass).count();
        assert_eq!(passed, RELAYED_BURST as usize);
        // A second later it passes again.
        assert_eq!(
            g.arrived(relay, false, now + Duration::from_secs(1)),
            Verdict::Pass
        );
        assert!(!g.is_banned(&relay, now));
    }

    #[test]
    fn an_author_over_its_rate_is_dropped_and_banned_only_when_it_is_the_neighbour() {
        let mut g = FloodGuard::default();
        let (author, relay, now) = (id(), id(), Instant::now());
        for _ in 0..DIRECT_BURST as usize {
            assert_eq!(g.authored(author, relay, now), Verdict::Pass);
        }
        assert_eq!(g.authored(author, relay, now), Verdict::Drop);
        assert!(!g.is_banned(&relay, now) && !g.is_banned(&author, now));
        assert_eq!(g.authored(author, author, now), Verdict::Ban(author));
    }

    #[test]
    fn tables_stay_under_their_caps_and_are_pruned() {
        let mut g = FloodGuard::default();
        let now = Instant::now();
        for _ in 0..MAX_TRACKED + 100 {
            let (a, b) = (id(), id());
            g.arrived(a, true, now);
            g.arrived(a, false, now);
            g.authored(b, a, now);
            g.ban(b, now);
        }
        let [d, r, a, b] = g.sizes();
        assert!(d <= MAX_TRACKED && r <= MAX_TRACKED && a <= MAX_TRACKED && b <= MAX_BANNED);
        // Buckets are full again after their burst's worth of refill; bans end after BAN.
        g.prune(now + Duration::from_secs(10));
        assert_eq!(g.sizes()[..3], [0, 0, 0]);
        assert_eq!(g.sizes()[3], b);
        g.prune(now + BAN);
        assert_eq!(g.sizes(), [0, 0, 0, 0]);
    }
}
