//! Connections held per peer and in all, with two caps (`mesh/tcp/1`'s [`CONNS_PER_PEER`] and
//! [`CONNS_TOTAL`]). Plain data: the share server asks before it carries a stream and gives back
//! when the stream ends. Peers holding nothing are not kept.
//!
//! [`CONNS_PER_PEER`]: crate::mesh::proto::share::CONNS_PER_PEER
//! [`CONNS_TOTAL`]: crate::mesh::proto::share::CONNS_TOTAL

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct ConnCount<K> {
    per_peer: u32,
    total_cap: u32,
    held: HashMap<K, u32>,
    total: u32,
}

impl<K: Hash + Eq + Clone> ConnCount<K> {
    pub fn new(per_peer: u32, total: u32) -> Self {
        Self {
            per_peer,
            total_cap: total,
            held: HashMap::new(),
            total: 0,
        }
    }

    /// Takes one connection for `peer`; `false` (nothing taken) when a cap is reached.
    pub fn open(&mut self, peer: &K) -> bool {
        let held = self.held.get(peer).copied().unwrap_or(0);
        if held >= self.per_peer || self.total >= self.total_cap {
            return false;
        }
        self.held.insert(peer.clone(), held + 1);
        self.total += 1;
        true
    }

    /// Gives back a connection taken with [`Self::open`].
    pub fn close(&mut self, peer: &K) {
        if let Some(n) = self.held.get_mut(peer) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.held.remove(peer);
            }
        }
    }

    /// Connections held in all.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Peers holding at least one.
    pub fn peers(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_in_all_and_gives_back() {
        let mut c = ConnCount::new(2, 3);
        assert!(c.open(&"a") && c.open(&"a"));
        assert!(!c.open(&"a"), "over the peer's cap");
        assert!(c.open(&"b"));
        assert!(!c.open(&"c"), "over the total");
        assert_eq!(c.total(), 3);
        c.close(&"a");
        assert!(c.open(&"c"));
        for p in ["a", "b", "c"] {
            c.close(&p);
        }
        c.close(&"nobody");
        assert_eq!((c.total(), c.peers()), (0, 0));
    }
}
