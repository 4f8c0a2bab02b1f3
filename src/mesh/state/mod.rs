//! The mesh's state as plain data, with timers passed in as `Instant`s (no IO, no clocks read):
//! - [`peers`]: the peer table — announcements, leaves, expiry.
//! - [`health`]: how well each host answered this node's requests (error rate, latency,
//!   circuit breaker).
//! - [`routing`]: which replica of a model a request goes to.
//! - [`affinity`]: which replica probably holds a prompt's prefix in its KV cache.
//! - [`network`]: what this machine looks like from outside, and the verdict on connections.
//! - [`budget`]: streams and body bytes each peer may hold on the tunnel server.
//! - [`flood`]: per-neighbour and per-author gossip rate limits, and bans.
//! - [`seen`]: models seen in the mesh recently (503 vs. 404).
//! - [`inbox`]: messages from members, and the per-sender rate limit.
//! - [`conns`]: TCP-share connections held per peer and in all.
//! - [`lease`]: split serving, which host may use this node's llama.cpp RPC server.
//! - [`liveness`]: when this node announces itself; which peers are gone (connection state,
//!   probes, `Down` reports and their refutation).
//! - [`alone`]: when a node cut off from gossip asks members to take it in again.

pub mod affinity;
pub mod alone;
pub mod budget;
pub mod catch_up;
pub mod conns;
pub mod flood;
pub mod health;
pub mod inbox;
pub mod lease;
pub mod liveness;
pub mod member;
pub mod network;
pub mod peers;
pub mod routing;
pub mod seen;
