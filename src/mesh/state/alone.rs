//! A node cut off from gossip asks back in (pure). With no gossip neighbour a node hears
//! nothing more from the mesh: no announcements, no `Down` reports, so its table only expires.
//! iroh-gossip's HyParView refills an empty active view from its passive view, but once that
//! is empty too (every passive peer it tried failed, or its connections closed) it never tries
//! again. The simulation showed it: 1 node of 200 lost its last neighbour during the join burst
//! and stayed alone for good, learning of a death only at expiry (4 minutes later in that run).
//!
//! So after [`Timers::rejoin`] alone, and again every `rejoin` while alone, the node joins a
//! few members of its table (gossip's `Join`: a member always takes a joining node into its
//! active view), taking the next ones in its table each time.

use std::time::Instant;

use iroh::EndpointId;

use super::peers::Timers;

/// Members asked at each try.
pub const REJOIN_PEERS: usize = 3;

#[derive(Debug, Default)]
pub struct Alone {
    /// Since when the node has had no gossip neighbour (`None`: it has one).
    since: Option<Instant>,
    /// When it last asked members to take it in, and how many times it did while alone.
    asked_at: Option<Instant>,
    tries: usize,
}

impl Alone {
    /// Called at every sweep with the node's neighbour count and its table's members; returns
    /// the members to join now, if any.
    pub fn check(
        &mut self,
        now: Instant,
        neighbours: usize,
        members: impl FnOnce() -> Vec<EndpointId>,
        timers: &Timers,
    ) -> Option<Vec<EndpointId>> {
        if neighbours > 0 {
            *self = Self::default();
            return None;
        }
        let since = *self.since.get_or_insert(now);
        let waited = |t: Instant| now.saturating_duration_since(t) >= timers.rejoin;
        if !waited(since) || !self.asked_at.is_none_or(waited) {
            return None;
        }
        let mut ids = members();
        if ids.is_empty() {
            return None;
        }
        // The table's order is a hash map's: sort, so that each try takes the next members.
        ids.sort_unstable();
        let start = self.tries * REJOIN_PEERS % ids.len();
        let take = REJOIN_PEERS.min(ids.len());
        let pick = ids.iter().cycle().skip(start).take(take).copied().collect();
        self.tries += 1;
        self.asked_at = Some(now);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn ids(n: usize) -> Vec<EndpointId> {
        let mut v: Vec<_> = (0..n).map(|_| SecretKey::generate().public()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_node_alone_for_the_rejoin_time_asks_the_next_members_each_time() {
        let (t, timers, members) = (Instant::now(), Timers::default(), ids(5));
        let every = timers.rejoin;
        let mut a = Alone::default();
        let mut check = |at, neighbours| a.check(at, neighbours, || members.clone(), &timers);
        // With a neighbour: nothing.
        assert_eq!(check(t, 1), None);
        // Alone: not before `rejoin` has passed.
        assert_eq!(check(t, 0), None);
        assert_eq!(check(t + every / 2, 0), None);
        assert_eq!(check(t + every, 0), Some(members[0..3].to_vec()));
        // Then once per `rejoin`, the next members (wrapping around).
        assert_eq!(check(t + every + every / 2, 0), None);
        let next = [members[3], members[4], members[0]];
        assert_eq!(check(t + 2 * every, 0), Some(next.to_vec()));
        // A neighbour again: the count starts over.
        assert_eq!(check(t + 3 * every, 1), None);
        assert_eq!(check(t + 3 * every, 0), None);
        assert_eq!(check(t + 4 * every, 0), Some(members[0..3].to_vec()));
    }

    #[test]
    fn an_empty_table_or_a_small_one_asks_whom_it_can() {
        let (t, timers) = (Instant::now(), Timers::default());
        let mut a = Alone::default();
        assert_eq!(a.check(t, 0, Vec::new, &timers), None);
        assert_eq!(a.check(t + timers.rejoin, 0, Vec::new, &timers), None);
        let one = ids(1);
        let got = a.check(t + timers.rejoin, 0, || one.clone(), &timers);
        assert_eq!(got, Some(one));
    }
}
