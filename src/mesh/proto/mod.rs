//! The mesh's wire formats and handshakes, sans IO: bytes in, bytes or decisions out.
//! - [`addrs`]: which addresses a node tells and dials (public vs. LAN, caps, relay list).
//! - [`ticket`]: `mesh1…` join tickets (text format).
//! - [`admission`]: `mesh/admit/1`, the HMAC challenge-response that gates every other protocol.
//! - [`announce`]: signed gossip messages (announcements, leaves, `Down` reports), their limits.
//! - [`roster`]: `mesh/roster/2`, a neighbour's signed announcements handed to a newcomer.
//! - [`peers`]: `--peers FILE`, a static list of tickets and node addresses.
//! - [`share`]: `mesh/tcp/1` (TCP sharing): share names, target policy, stream header, limits.

pub mod addrs;
pub mod admission;
pub mod announce;
pub mod peers;
pub mod roster;
pub mod share;
pub mod ticket;
