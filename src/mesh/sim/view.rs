//! What a caller reads off the simulated world: who knows whom, faults, rosters, traffic.

use std::collections::HashSet;

use iroh::EndpointId;

use super::{Faults, Traffic, World};

impl World {
    pub fn id(&self, i: usize) -> EndpointId {
        self.nodes[i].id
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].alive)
    }

    /// How many peers node `i` has in its table.
    pub fn known_by(&self, i: usize) -> usize {
        self.nodes[i].table.len()
    }

    /// Whether node `i` has node `j` in its table.
    pub fn knows(&self, i: usize, j: usize) -> bool {
        self.nodes[i].table.get(&self.id(j)).is_some()
    }

    /// Live nodes other than `j` that have `j` in their table, and those that could.
    pub fn known_count(&self, j: usize) -> (usize, usize) {
        let others = self.alive().filter(|&i| i != j);
        let (mut yes, mut all) = (0, 0);
        for i in others {
            all += 1;
            yes += usize::from(self.knows(i, j));
        }
        (yes, all)
    }

    /// Pairs of live nodes (i, j) where i does not have j in its table; how many nodes lack
    /// some node, and how many nodes some node lacks.
    pub fn missing(&self) -> (usize, usize, usize) {
        let (mut pairs, mut lacking) = (0, 0);
        let mut unknown = HashSet::new();
        for i in self.alive() {
            let before = pairs;
            for j in self.alive().filter(|&j| j != i && !self.knows(i, j)) {
                pairs += 1;
                unknown.insert(j);
            }
            lacking += usize::from(pairs > before);
        }
        (pairs, lacking, unknown.len())
    }

    /// Every live node knows every other live node (and, tables holding only nodes that
    /// existed, when no node has died: every table is full).
    pub fn complete(&self) -> bool {
        let alive = self.alive().count();
        // Table sizes first (cheap), then who is in them.
        self.alive().all(|i| self.known_by(i) >= alive - 1)
            && self
                .alive()
                .all(|i| self.alive().all(|j| i == j || self.knows(i, j)))
    }

    /// Times nodes with no gossip neighbour asked members to take them in, since the start.
    pub fn rejoins(&self) -> u64 {
        self.rejoins
    }

    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Rosters node `i` asked for (`mesh/roster/2`), since it started.
    pub fn rosters_asked(&self, i: usize) -> u32 {
        self.nodes[i].rosters_asked
    }

    /// Gossip neighbours of node `i` (iroh-gossip's active view, from its events).
    pub fn neighbours(&self, i: usize) -> usize {
        self.nodes[i].neighbours.len()
    }

    pub fn traffic(&mut self) -> Traffic {
        self.account_conns(self.now);
        let mut t = self.traffic;
        t.seconds = (self.now - self.traffic_since).as_secs_f64();
        if t.seconds > 0.0 {
            t.conns_per_node = 2.0 * self.conn_seconds / t.seconds / self.alive().count() as f64;
        }
        t
    }

    pub fn reset_traffic(&mut self) {
        self.account_conns(self.now);
        self.traffic = Traffic::default();
        self.traffic_since = self.now;
        self.conn_seconds = 0.0;
    }
}
