//! iroh-gossip's settings for the mesh topic, in one place: `Mesh::start` spawns gossip with
//! them and the simulation (`sim`) runs the same protocol state with them.

use std::time::Duration;

use super::proto::announce;

/// How long iroh-gossip keeps a message's payload to answer neighbours' repair requests
/// (default 30 s): a lost announcement heals at its author's next change or refresh (and a
/// newcomer gets the roster directly), and everything a flooding member sent before it was cut
/// off is held this long.
pub(super) const GOSSIP_CACHE: Duration = Duration::from_secs(5);
/// How long iroh-gossip remembers a message's id to deliver it only once (default 90 s); a
/// copy seen again later is refused by the peer table (`seq` not newer) or the `seq` window.
pub(super) const GOSSIP_IDS: Duration = Duration::from_secs(30);

/// iroh-gossip's broadcast settings for the mesh topic (also the simulation's, `sim`).
pub(super) fn plumtree_config() -> iroh_gossip::proto::PlumtreeConfig {
    iroh_gossip::proto::PlumtreeConfig {
        message_cache_retention: GOSSIP_CACHE,
        message_id_retention: GOSSIP_IDS,
        ..Default::default()
    }
}

/// How often HyParView swaps a sample of its views with a random member (default 60 s). Each
/// swap's reply comes over a connection of its own: a QUIC handshake, path MTU discovery and
/// 10 s until it is closed as a stray, ~22 KB (`just bench-connect`). At the default that was
/// 60 % of what an idle member received (docs/BENCHMARKS.md, "Membership at scale"). The
/// passive view it refreshes is also filled by joins' random walks, and a node left with no
/// neighbour asks members of its table instead (`state::alone`); so it swaps once per refresh.
pub(super) const GOSSIP_SHUFFLE: Duration = announce::REFRESH;

/// iroh-gossip's membership settings for the mesh topic (also the simulation's, `sim`).
pub(super) fn hyparview_config() -> iroh_gossip::proto::HyparviewConfig {
    iroh_gossip::proto::HyparviewConfig {
        shuffle_interval: GOSSIP_SHUFFLE,
        ..Default::default()
    }
}
