//! The mesh: nodes that act as one. An iroh endpoint (identity, QUIC, hole punching, relays),
//! six protocols on it — admission (`mesh/admit/1`), membership (iroh-gossip), HTTP tunnel
//! (`mesh/http/1`), ping (`mesh/ping/1`, open to all, for discovery's RTT probe) and offer
//! (`mesh/offer/1`, open to all: the signed offer discovery gives it, for LAN discovery),
//! messages (`mesh/msg/1`, members only), TCP sharing (`mesh/tcp/1`, members only) — and the
//! peer table that requests are routed by.
//!
//! - [`proto`]: wire formats and handshakes, sans IO (tickets, admission, announcements).
//! - [`state`]: the peer table and replica choice, plain data with timers passed in.
//! - [`net`]: the endpoint and the tasks that drive `proto` and `state` over real connections.
//! - [`Mesh`] (here): the handle the node holds — start, peers, routing, join, shutdown.
//!
//! The mesh knows nothing of llama.cpp or HTTP APIs: what this node serves comes in as a
//! [`ServingFn`], requests arriving over the tunnel go to an `axum::Router` it is given.
//! It must not import `engine`, `discovery`, `http`, `node` or `cmd`. docs/PROTOCOL.md has the
//! wire formats and timers.

mod attempt;
mod config;
mod error;
mod gossip_config;
#[cfg(test)]
mod hostile_tests;
pub mod identity;
#[cfg(test)]
mod liveness_tests;
mod messages;
pub mod net;
pub mod proto;
mod shares;
#[cfg(any(test, feature = "sim"))]
#[doc(hidden)]
pub mod sim;
#[cfg(test)]
mod stall_tests;
mod start;
pub mod state;
#[cfg(test)]
mod tests;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::address_lookup::memory::MemoryLookup;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointId, SecretKey};
use iroh_gossip::net::Gossip;
use iroh_gossip::TopicId;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use attempt::{Attempt, Picked};
pub use config::{MeshConfig, NetConfig, Relays, DEFAULT_RELAYS_ENV};
pub use error::MeshError;
pub use messages::SendReport;
pub use net::tcp_share::{ConnectEvent, ConnectInfo, Connector, ShareInfo};
pub use proto::announce::{ModelOffer, Role, SplitOffer};
pub use proto::share::ShareError;
pub use proto::ticket::{MeshId, Ticket};
pub use state::inbox::InboxMessage;
pub use state::peers::ConnType;
pub use view::{MeshEvent, PeerView};

use net::admit::{self, Admission};
use net::gate::{self, Gate};
use net::offer::{OfferServer, OfferSlot};
use net::tunnel::{self, Tunnel};
use net::tunnel_server::TunnelServer;
use net::{endpoint, membership, ping};
use proto::addrs::AddrPolicy;
use proto::admission::{self, MeshKeys};
use proto::announce::{self, Announcement, Message};
use state::affinity::AffinityTable;
use state::flood::FloodGuard;
use state::health::HealthTable;
use state::member::Member;
use state::peers::{PeerTable, Timers};
use state::seen::SeenModels;

/// How long stopping waits for iroh's router (its protocols) before closing the endpoint.
const ROUTER_SHUTDOWN: Duration = Duration::from_secs(5);
/// How long a graceful leave waits for its message to go out before the endpoint closes.
const LEAVE_FLUSH: Duration = Duration::from_millis(200);
/// What this node serves right now, as it is announced to peers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Serving {
    pub models: Vec<ModelOffer>,
    pub queue_depth: u32,
    pub tokens_per_second: f32,
}

impl Serving {
    /// A node that serves a model is a host; one that serves none is a client.
    pub fn role(&self) -> Role {
        Role::of(&self.models)
    }
}

/// Asked at every sweep of the membership driver: what this node serves now (the node reads its
/// engine slot); announced when it changed (`state::liveness::Schedule`).
pub type ServingFn = Arc<dyn Fn() -> Serving + Send + Sync>;

/// State shared by the handle and the background tasks.
pub(crate) struct Shared {
    secret_key: SecretKey,
    keys: MeshKeys,
    timers: Timers,
    name: String,
    region: Option<String>,
    serving: ServingFn,
    endpoint: Endpoint,
    gate: Gate,
    lookup: MemoryLookup,
    tunnel: Tunnel,
    table: Mutex<PeerTable>,
    outstanding: Mutex<HashMap<EndpointId, usize>>,
    /// Which host got a prompt prefix last (`state::affinity`; see [`attempt`]).
    affinity: Mutex<AffinityTable<EndpointId>>,
    /// How each host answered this node's forwarded requests (see [`attempt`]).
    health: Mutex<HealthTable<EndpointId>>,
    /// Counts outcomes recorded in `health`: requests waiting for a host's trial wake on it.
    health_changed: watch::Sender<u64>,
    /// Models some peer serves or served recently (bounded).
    known_models: Mutex<SeenModels>,
    /// Gossip rate limits per neighbour and author, and bans.
    flood: Mutex<FloodGuard>,
    /// The membership protocol's own state: announcement schedule, probes in flight, peers
    /// reported down (`state::member`). Locked before `flood`, and `flood` before `table`.
    member: Mutex<Member>,
    events: broadcast::Sender<MeshEvent>,
    /// Counts changes of the roster (see [`Mesh::watch_roster`]).
    roster: watch::Sender<u64>,
    /// Model names this node announced last, to notice when its own serving changes.
    own_models: Mutex<Vec<String>>,
    /// Asks the membership driver to announce now instead of at its next sweep.
    announce_now: tokio::sync::Notify,
    memory_bytes: u64,
    /// Which of this node's addresses it tells others.
    tell: AddrPolicy,
    /// Which addresses others tell of themselves this node dials.
    dial: AddrPolicy,
    relays_configured: bool,
    /// The offer `mesh/offer/1` hands out (set by discovery's publisher).
    offer: OfferSlot,
    /// Messages from members (`mesh/msg/1`), and the `seq` of the newest.
    inbox: Mutex<state::inbox::Inbox>,
    inbox_seq: watch::Sender<u64>,
    /// TCP services this node shares, and its `mesh connect` listeners (`mesh/tcp/1`).
    shares: net::tcp_share::Shares,
    /// `mesh/rpc/1`'s worker side: lends this node's memory to splits (`--split-worker`).
    rpc: net::rpc::RpcServer,
    /// Times this node's gossip stalled and was freed (`net::stall`).
    gossip_stalls: std::sync::atomic::AtomicU64,
    /// Set when this node starts leaving (`leave`, `shutdown`): nothing of it that is signed
    /// after its `Leave` (a roster's own entry) may go out, or members would take it back.
    leaving: std::sync::atomic::AtomicBool,
    /// A first roster was applied: until then the table's size says nothing about the mesh's
    /// (a newcomer hears a join burst's announcements one by one), so no eager tunnel opens.
    roster_seen: watch::Sender<bool>,
    /// What this node announces to split serving (`node::split`).
    split_offer: Mutex<SplitOffer>,
}

impl Shared {
    /// Compares this node's models with those it announced last: a model loaded or unloaded
    /// changes the roster. Called with every check of the announcement (every sweep).
    fn note_own_models(&self, models: &[ModelOffer]) {
        let names = models.iter().map(|m| m.name.as_str());
        let changed = match self.own_models.lock() {
            Ok(mut own) if !own.iter().map(String::as_str).eq(names.clone()) => {
                *own = names.map(str::to_owned).collect();
                true
            }
            _ => false,
        };
        if changed {
            self.roster_changed();
        }
    }

    fn remember_model(&self, model: &str) {
        if let Ok(mut known) = self.known_models.lock() {
            known.saw(model, Instant::now());
        }
    }

    fn with_flood<T>(&self, f: impl FnOnce(&mut FloodGuard) -> T) -> T {
        let mut guard = self.flood.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn with_member<T>(&self, f: impl FnOnce(&mut Member) -> T) -> T {
        let mut member = self.member.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut member)
    }

    #[cfg(test)]
    fn with_liveness<T>(&self, f: impl FnOnce(&state::liveness::Liveness) -> T) -> T {
        self.with_member(|m| f(m.liveness()))
    }

    fn with_table<T>(&self, f: impl FnOnce(&mut PeerTable) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut table)
    }

    /// Tells roster watchers that who is in the mesh, or what some member serves, changed.
    fn roster_changed(&self) {
        self.roster.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This node's announcement, signed now, then every peer's as its author signed it, and
    /// whether its table is complete (`mesh/roster/2`); `None`: refused (this node is leaving).
    fn signed_roster(&self) -> Option<proto::roster::Roster> {
        if self.leaving.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let own = Message::Announce(self.announcement());
        let mut entries = vec![bytes::Bytes::from(announce::encode(&self.secret_key, &own))];
        entries.extend(self.with_table(|t| t.signed_roster()));
        let complete = self.with_member(|m| m.roster_complete());
        Some(proto::roster::Roster { complete, entries })
    }

    fn announcement(&self) -> Announcement {
        let Serving {
            models,
            queue_depth,
            tokens_per_second,
        } = (self.serving)();
        self.note_own_models(&models);
        Announcement {
            node: self.secret_key.public(),
            seq: crate::util::time::unix_micros(),
            role: Role::of(&models),
            name: self.name.clone(),
            region: self.region.clone(),
            models,
            memory_bytes: self.memory_bytes,
            queue_depth,
            tokens_per_second,
            addr: self.tell.tidy(&self.endpoint.addr()),
            shares: self.shares.names(),
            split: Box::new(
                self.split_offer
                    .lock()
                    .map(|o| o.clone())
                    .unwrap_or_default(),
            ),
        }
    }
}

/// Handle to a running mesh node. Clone freely.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    router: Router,
    sender: iroh_gossip::api::GossipSender,
    cancel: CancellationToken,
    /// Stops the membership driver alone ([`Mesh::leave`]).
    membership_stop: CancellationToken,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Mesh {
    pub fn node_id(&self) -> EndpointId {
        self.shared.secret_key.public()
    }

    /// The node key (signs gossip messages and discovery offers' bindings).
    pub fn secret_key(&self) -> &SecretKey {
        &self.shared.secret_key
    }

    pub fn mesh_id(&self) -> MeshId {
        self.shared.keys.mesh_id
    }

    pub fn is_public(&self) -> bool {
        self.shared.keys.is_public()
    }

    pub fn role(&self) -> Role {
        (self.shared.serving)().role()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// A ticket inviting others to this mesh through this node: its relay URL and the addresses
    /// it may tell (no private ones in a public mesh unless `--advertise-lan`), as known now.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            mesh_id: self.shared.keys.mesh_id,
            secret: self.shared.keys.secret,
            peers: vec![self.shared.tell.tidy(&self.shared.endpoint.addr())],
        }
    }

    /// Waits at most `within` for this node to be reachable from outside its LAN: its home relay
    /// connected (when relays are configured). `false` when that did not happen in time; the
    /// node works on regardless and its tickets gain the relay URL once it is known.
    pub async fn wait_online(&self, within: Duration) -> bool {
        if self.shared.relays_configured {
            tokio::time::timeout(within, self.shared.endpoint.online())
                .await
                .is_ok()
        } else {
            false
        }
    }

    /// Wakes when this node's addresses change (home relay chosen, public address learned):
    /// tickets and offers made before are out of date.
    pub fn watch_addr(&self) -> impl iroh::Watcher<Value = iroh::EndpointAddr> + use<> {
        self.shared.endpoint.watch_addr()
    }

    pub fn peers(&self) -> Vec<PeerView> {
        let now = Instant::now();
        self.shared.with_table(|t| {
            t.peers()
                .map(|p| PeerView {
                    node_id: p.ann.node.to_string(),
                    name: p.ann.name.clone(),
                    role: p.ann.role,
                    region: p.ann.region.clone(),
                    models: p.ann.models.clone(),
                    connection: p.conn,
                    rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                    trying_direct: p.trying_direct,
                    queue_depth: p.ann.queue_depth,
                    tokens_per_second: p.ann.tokens_per_second,
                    memory_bytes: p.ann.memory_bytes,
                    last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
                    shares: p.ann.shares.clone(),
                    split: (*p.ann.split).clone(),
                })
                .collect()
        })
    }

    /// What this node tells its peers about itself (models, free slots, memory).
    pub fn own_announcement(&self) -> Announcement {
        self.shared.announcement()
    }

    /// Models served by peers (not counting this node's own).
    pub fn remote_models(&self) -> Vec<String> {
        self.shared
            .with_table(|t| t.models_set().into_iter().collect())
    }

    /// Whether some peer serves `model` or served it in the last hour (`state::seen`): a request
    /// for it with no host now is "unavailable" (503), one for a model never seen is "not
    /// found" (404).
    pub fn has_seen_model(&self, model: &str) -> bool {
        self.shared
            .known_models
            .lock()
            .is_ok_and(|k| k.contains(model))
    }

    /// Counts `model` as served in the mesh now (a split this node re-plans), so that
    /// requests for it while no one serves it get 503 rather than 404.
    pub fn saw_model(&self, model: &str) {
        self.shared.remember_model(model);
    }

    pub fn tunnel(&self) -> &Tunnel {
        &self.shared.tunnel
    }

    /// Sizes of every table membership grows, by name (for the attacker tests: each must stay
    /// under its cap).
    #[doc(hidden)]
    pub fn table_sizes(&self) -> Vec<(&'static str, usize)> {
        let (peers, remembered) = self.shared.with_table(|t| (t.len(), t.remembered()));
        let [direct, relayed, authors, banned] = self.shared.with_flood(|f| f.sizes());
        let [admitted, gate_banned, gate_conns] = self.shared.gate.sizes();
        let [conns, down] = self.shared.tunnel.sizes();
        let [probes, suspects] = self.shared.with_member(|m| m.liveness().sizes());
        let neighbours = self.shared.with_member(|m| m.neighbours());
        let [former, listed] = self.shared.with_member(|m| m.sizes());
        let gossip_conns = self.shared.gate.open_on(iroh_gossip::ALPN).len();
        let known = self
            .shared
            .known_models
            .lock()
            .map(|k| k.len())
            .unwrap_or(0);
        vec![
            ("peers", peers),
            ("gossip_neighbours", neighbours),
            ("gossip_conns", gossip_conns),
            ("seq_remembered", remembered),
            ("flood_direct", direct),
            ("flood_relayed", relayed),
            ("flood_authors", authors),
            ("flood_banned", banned),
            ("gate_admitted", admitted),
            ("gate_banned", gate_banned),
            ("gate_conns", gate_conns),
            ("tunnel_conns", conns),
            ("tunnel_down", down),
            ("known_models", known),
            ("liveness_probes", probes),
            ("liveness_suspects", suspects),
            ("former_neighbours", former),
            ("catch_up_listed", listed),
        ]
    }

    /// Whether this node has an address for `id` from gossip or tickets (address lookup).
    #[doc(hidden)]
    pub fn knows_address_of(&self, id: EndpointId) -> bool {
        self.shared.lookup.get_endpoint_info(id).is_some()
    }

    /// Times this node's gossip stalled (a neighbour stopped reading) and was freed by closing
    /// its gossip connections (`net::stall`).
    pub fn gossip_stalls(&self) -> u64 {
        self.shared
            .gossip_stalls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// This node's gossip sender, to play a hostile member in tests (send junk on the topic).
    #[doc(hidden)]
    pub fn gossip_sender_for_tests(&self) -> iroh_gossip::api::GossipSender {
        self.sender.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MeshEvent> {
        self.shared.events.subscribe()
    }

    /// What this node serves has changed (a model was loaded after the node started): peers
    /// and roster watchers hear of it now rather than at the next sweep.
    pub fn serving_changed(&self) {
        self.shared.announce_now.notify_one();
    }

    /// Wakes (the value counts changes) when a node joins or leaves, or when what some member
    /// serves changes — the models of a peer, or this node's own, noticed at its next sweep
    /// (at once after [`Mesh::serving_changed`]).
    /// Unlike [`Mesh::subscribe`]'s events this also covers a peer that starts serving a model
    /// already in the mesh, and this node loading its model (`mesh --auto`); it is how
    /// discovery's publisher follows the mesh without polling. Load and free slots do not count.
    pub fn watch_roster(&self) -> watch::Receiver<u64> {
        self.shared.roster.subscribe()
    }

    /// Waits, at most `limit`, for a first roster (`mesh/roster/2`) to be applied: from then on
    /// the table holds every member a neighbour knew. Whether one was.
    pub async fn first_roster(&self, limit: Duration) -> bool {
        let mut seen = self.shared.roster_seen.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|&s| s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Lends this node's memory to members' split models over `mesh/rpc/1` from now on
    /// (`Some`: how to start the node's llama.cpp RPC server), or no longer (`None`).
    pub fn lend_memory(&self, lender: Option<net::rpc::LendFn>) {
        self.shared.rpc.set_lender(lender);
    }

    /// What this node tells split serving about itself from now on (lending, free memory,
    /// models it wants to host split); members hear of a change at once.
    pub fn set_split_offer(&self, offer: SplitOffer) {
        let changed = match self.shared.split_offer.lock() {
            Ok(mut own) if *own != offer => {
                *own = offer;
                true
            }
            _ => false,
        };
        if changed {
            self.serving_changed();
        }
    }

    /// What this node tells split serving about itself (see [`Mesh::set_split_offer`]).
    pub fn split_offer(&self) -> SplitOffer {
        self.shared
            .split_offer
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    /// The offer `mesh/offer/1` hands to whoever asks from now on (the signed Nostr event's
    /// JSON, which discovery's publisher makes); `None`: none.
    pub fn serve_offer(&self, offer: Option<String>) {
        self.shared.offer.set(offer);
    }

    /// Joins more members of this mesh by ticket (`POST /api/join`).
    pub async fn join(&self, ticket: &Ticket) -> Result<usize, MeshError> {
        if ticket.mesh_id != self.shared.keys.mesh_id || ticket.secret != self.shared.keys.secret {
            return Err(MeshError::OtherMesh {
                ours: self.shared.keys.mesh_id,
                theirs: ticket.mesh_id,
            });
        }
        let ticket = start::dialable(ticket, &self.shared.dial);
        for addr in &ticket.peers {
            self.shared.lookup.add_endpoint_info(addr.clone());
        }
        let ids = admit::admit_to_tickets(
            &self.shared.endpoint,
            std::slice::from_ref(&ticket),
            &self.shared.keys,
            &self.shared.gate,
        )
        .await?;
        let n = ids.len();
        self.sender
            .join_peers(ids)
            .await
            .map_err(|e| MeshError::Gossip(e.to_string()))?;
        Ok(n)
    }

    /// Tells the peers this node leaves, and gives the message a moment to leave the socket
    /// (gossip sends asynchronously). A stalled gossip actor cannot hold it up.
    async fn broadcast_leave(&self) {
        self.shared
            .leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let leave = Message::Leave {
            node: self.node_id(),
            seq: crate::util::time::unix_micros(),
        };
        let bytes = announce::encode(&self.shared.secret_key, &leave);
        let sent = tokio::time::timeout(
            net::stall::GOSSIP_STALL,
            self.sender.broadcast(bytes.into()),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            tokio::time::sleep(LEAVE_FLUSH).await;
        }
    }

    /// Graceful leave: tells peers, then closes the endpoint.
    pub async fn shutdown(&self) {
        self.broadcast_leave().await;
        self.abort().await;
    }

    /// Stops without a leave message (as if killed): for tests of failure detection.
    pub async fn abort(&self) {
        self.cancel.cancel();
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
        }
        // The router shuts gossip down through its actor, which a neighbour that stopped
        // reading can hold blocked (`net::stall`): closing the endpoint must not wait on it.
        match tokio::time::timeout(ROUTER_SHUTDOWN, self.router.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("iroh router shutdown: {e}"),
            Err(_) => {
                tracing::warn!("iroh router did not shut down within {ROUTER_SHUTDOWN:?}");
                self.shared.endpoint.close().await;
            }
        }
    }
}
