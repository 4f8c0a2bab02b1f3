//! Discovery: meshes advertised as signed Nostr events ("offers"), browsed, scored and joined.
//!
//! Pure pieces: `offer` (event format and validation), `score` (the scorer and its terms).
//! IO pieces: `nostr_io` (talking to relays), `publish` (the republish loop), `probe` (RTT over
//! iroh), `relay` (`mesh relay`, a small Nostr relay). docs/PROTOCOL.md has the format.

pub mod nostr_io;
pub mod offer;
pub mod relay;
