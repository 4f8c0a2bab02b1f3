//! What the simulation counts of the traffic: bytes, messages (also by iroh-gossip's message
//! kind), connections.

/// Bytes and connections since the last [`super::World::reset_traffic`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Traffic {
    /// Simulated time covered.
    pub seconds: f64,
    /// Gossip frames and roster entries, summed over all nodes.
    pub sent: u64,
    pub received: u64,
    /// Gossip messages sent, summed over all nodes.
    pub messages: u64,
    /// Mean number of open connections per node.
    pub conns_per_node: f64,
    /// Announcements to the whole mesh, greetings of new neighbours, and `Down` reports
    /// broadcast, summed over all nodes.
    pub announcements: u64,
    pub greetings: u64,
    pub reports: u64,
    /// Gossip neighbours gained, summed over all nodes (the active views' churn).
    pub neighbour_ups: u64,
    /// Stray gossip connections closed (`Member::strays`), summed over all nodes.
    pub strays_closed: u64,
    /// Connections opened (each a QUIC handshake on a real network).
    pub dials: u64,
    /// Rosters handed out, and their bytes (also in `sent` and `received`), summed over all
    /// nodes.
    pub rosters: (u64, u64),
    /// Gossip messages and their bytes by kind ([`KINDS`]), summed over all nodes.
    pub by_kind: [(u64, u64); KINDS.len()],
}

/// iroh-gossip's message kinds, in their wire order: HyParView's six, then PlumTree's four.
pub const KINDS: [&str; 10] = [
    "join",
    "forward_join",
    "shuffle",
    "shuffle_reply",
    "neighbor",
    "disconnect",
    "gossip",
    "prune",
    "graft",
    "ihave",
];

/// The index in [`KINDS`] of an encoded gossip message: postcard writes the topic (32 bytes),
/// then the layer's variant (0 HyParView, 1 PlumTree), then the message's (one byte each, as
/// all are below 128). iroh-gossip keeps the enums private to its crate.
pub(super) fn kind_of(encoded: &[u8]) -> Option<usize> {
    let (layer, kind) = (*encoded.get(32)? as usize, *encoded.get(33)? as usize);
    match layer {
        0 if kind < 6 => Some(kind),
        1 if kind < 4 => Some(6 + kind),
        _ => None,
    }
}
