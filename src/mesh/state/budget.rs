//! What each peer may hold on this node's tunnel server at once: open streams and request-body
//! bytes in flight, per peer and in all. Plain data: the server asks before it accepts a stream
//! or reads a body, and gives back when the exchange ends; nothing here reads a clock or a socket.

use std::collections::HashMap;
use std::hash::Hash;

/// The caps a [`Budget`] enforces (values in `net::tunnel_server`, documented in PROTOCOL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Streams one peer may have open at once (over all its connections).
    pub streams_per_peer: u32,
    /// Request-body bytes one peer may have announced and not yet finished with.
    pub bytes_per_peer: u64,
    /// Request-body bytes all peers together may have in flight.
    pub bytes_total: u64,
}

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer has `streams_per_peer` streams open already.
    Streams,
    /// This body would take the peer over `bytes_per_peer`.
    PeerBytes,
    /// This body would take all peers together over `bytes_total`.
    TotalBytes,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    streams: u32,
    bytes: u64,
}

/// Streams and bytes held, per peer. Peers holding nothing are not kept, so the table is never
/// larger than the number of peers with a request in progress.
#[derive(Debug)]
pub struct Budget<K> {
    limits: Limits,
    held: HashMap<K, Held>,
    bytes_total: u64,
}

impl<K: Hash + Eq + Clone> Budget<K> {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            held: HashMap::new(),
            bytes_total: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one stream for `peer`, or says why not.
    pub fn open_stream(&mut self, peer: &K) -> Result<(), Refusal> {
        let held = self.held.entry(peer.clone()).or_default();
        if held.streams >= self.limits.streams_per_peer {
            if *held == Held::default() {
                self.held.remove(peer);
            }
            return Err(Refusal::Streams);
        }
        held.streams += 1;
        Ok(())
    }

    /// Gives back a stream taken with [`Self::open_stream`].
    pub fn close_stream(&mut self, peer: &K) {
        self.update(peer, |h| h.streams = h.streams.saturating_sub(1));
    }

    /// Takes `bytes` of body for `peer`, or says why not (then nothing is taken).
    pub fn reserve(&mut self, peer: &K, bytes: u64) -> Result<(), Refusal> {
        if bytes == 0 {
            return Ok(());
        }
        let mine = self.held.get(peer).map_or(0, |h| h.bytes);
        if mine.saturating_add(bytes) > self.limits.bytes_per_peer {
            return Err(Refusal::PeerBytes);
        }
        if self.bytes_total.saturating_add(bytes) > self.limits.bytes_total {
            return Err(Refusal::TotalBytes);
        }
        self.held.entry(peer.clone()).or_default().bytes += bytes;
        self.bytes_total += bytes;
        Ok(())
    }

    /// Gives back `bytes` taken with [`Self::reserve`].
    pub fn release(&mut self, peer: &K, bytes: u64) {
        let mut given = 0;
        self.update(peer, |h| {
            given = bytes.min(h.bytes);
            h.bytes -= given;
        });
        self.bytes_total = self.bytes_total.saturating_sub(given);
    }

    /// Streams and bytes `peer` holds now.
    pub fn held(&self, peer: &K) -> (u32, u64) {
        self.held.get(peer).map_or((0, 0), |h| (h.streams, h.bytes))
    }

    /// Bytes all peers hold now.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total
    }

    /// Peers holding anything.
    pub fn peers(&self) -> usize {
        self.held.len()
    }

    fn update(&mut self, peer: &K, f: impl FnOnce(&mut Held)) {
        if let Some(h) = self.held.get_mut(peer) {
            f(h);
            if *h == Held::default() {
                self.held.remove(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        streams_per_peer: 2,
        bytes_per_peer: 10,
        bytes_total: 15,
    };

    #[test]
    fn a_peer_over_its_stream_cap_is_refused_and_others_are_not() {
        let mut b = Budget::new(LIMITS);
        assert_eq!(b.open_stream(&"a"), Ok(()));
        assert_eq!(b.open_stream(&"a"), Ok(()));
        assert_eq!(b.open_stream(&"a"), Err(Refusal::Streams));
        assert_eq!(b.open_stream(&"b"), Ok(()));
        b.close_stream(&"a");
        assert_eq!(b.open_stream(&"a"), Ok(()));
        assert_eq!(b.held(&"a"), (2, 0));
    }

    #[test]
    fn bytes_are_capped_per_peer_and_in_all() {
        let mut b = Budget::new(LIMITS);
        assert_eq!(b.reserve(&"a", 8), Ok(()));
        assert_eq!(b.reserve(&"a", 3), Err(Refusal::PeerBytes));
        assert_eq!(b.reserve(&"a", 2), Ok(()));
        assert_eq!(b.reserve(&"b", 6), Err(Refusal::TotalBytes));
        assert_eq!(b.reserve(&"b", 5), Ok(()));
        assert_eq!(b.bytes_total(), 15);
        b.release(&"a", 10);
        assert_eq!(b.reserve(&"b", 5), Ok(()));
        assert_eq!((b.held(&"a"), b.held(&"b")), ((0, 0), (0, 10)));
    }

    #[test]
    fn a_single_body_larger_than_the_peer_cap_is_refused_without_overflow() {
        let mut b = Budget::new(LIMITS);
        assert_eq!(b.reserve(&"a", u64::MAX), Err(Refusal::PeerBytes));
        assert_eq!(b.bytes_total(), 0);
    }

    #[test]
    fn peers_that_hold_nothing_leave_the_table() {
        let mut b = Budget::new(LIMITS);
        for peer in 0..1000 {
            b.open_stream(&peer).unwrap();
            b.reserve(&peer, 0).unwrap();
            b.close_stream(&peer);
        }
        assert_eq!(b.peers(), 0);
        b.open_stream(&1).unwrap();
        b.reserve(&1, 4).unwrap();
        b.close_stream(&1);
        assert_eq!(b.peers(), 1, "still holds bytes");
        b.release(&1, 4);
        assert_eq!(b.peers(), 0);
    }

    #[test]
    fn giving_back_more_than_was_taken_cannot_underflow_or_free_others() {
        let mut b = Budget::new(LIMITS);
        b.reserve(&"a", 5).unwrap();
        b.release(&"b", 5);
        b.close_stream(&"b");
        assert_eq!(b.bytes_total(), 5);
        b.release(&"a", 50);
        assert_eq!(b.bytes_total(), 0);
    }
}
