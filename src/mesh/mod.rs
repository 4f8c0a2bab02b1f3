//! The mesh: nodes that act as one. An iroh endpoint (identity, QUIC, hole punching, relays),
//! four protocols on it — admission (`mesh/admit/1`), membership (iroh-gossip), HTTP tunnel
//! (`mesh/http/1`) and ping (`mesh/ping/1`, open to all, for discovery's RTT probe) — and the
//! peer table the proxy routes by.
//!
//! Pure pieces: `ticket` (text format), `admission` proofs, `announce` (gossip messages),
//! `peers` (table and timers), `routing` (replica choice). IO pieces: `gate` (endpoint hooks),
//! `membership` (gossip driver), `tunnel` (HTTP over streams). docs/PROTOCOL.md has the wire
//! formats and timers.

pub mod admission;
pub mod announce;
pub mod gate;
pub mod identity;
mod membership;
pub mod peers;
pub mod ping;
pub mod routing;
pub mod ticket;
pub mod tunnel;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::presets;
use iroh::protocol::Router;
use iroh::tls::CaTlsConfig;
use iroh::{Endpoint, EndpointId, RelayMode, RelayUrl, SecretKey};
use iroh_gossip::net::Gossip;
use iroh_gossip::TopicId;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::engine::EngineSlot;
use admission::{AdmitError, MeshKeys};
use announce::{Announcement, Message, ModelOffer, Role};
use gate::Gate;
use peers::{PeerTable, Timers};
use routing::Candidate;
use ticket::{MeshId, MeshSecret, Ticket, TicketError};
use tunnel::{Tunnel, TunnelServer};

/// How long a graceful leave waits for its message to go out before the endpoint closes.
const LEAVE_FLUSH: Duration = Duration::from_millis(200);
/// Most model names remembered as "seen in this mesh" (for 503 vs. 404).
const MAX_KNOWN_MODELS: usize = 4096;
/// How long `online()` may take when a relay is configured.
const RELAY_ONLINE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("the tickets name different meshes ({0} and {1}); join one mesh at a time")]
    MixedTickets(MeshId, MeshId),
    #[error("this node is in mesh {ours}; the ticket is for mesh {theirs}")]
    OtherMesh { ours: MeshId, theirs: MeshId },
    #[error("cannot start the iroh endpoint: {0}")]
    Bind(String),
    #[error("not admitted to the mesh: {0}")]
    Refused(AdmitError),
    #[error("cannot join the gossip topic: {0}")]
    Gossip(String),
}

/// How to start the mesh side of a node.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub secret_key: SecretKey,
    /// Tickets to join; none starts a new mesh.
    pub join: Vec<Ticket>,
    /// A new mesh without a secret (anyone with the ticket may join).
    pub public: bool,
    /// UDP address for iroh; `None` binds all interfaces on a random port.
    pub bind: Option<SocketAddr>,
    /// Relay server to use; `None` disables relays (direct addresses only).
    pub relay: Option<RelayUrl>,
    /// TLS roots for a private relay's certificate.
    pub relay_tls: Option<CaTlsConfig>,
    /// Use no direct (IP) transport at all: everything goes through the relay.
    pub relay_only: bool,
    /// Display name and region announced to peers.
    pub name: String,
    pub region: Option<String>,
    pub timers: Timers,
}

impl MeshConfig {
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            join: Vec::new(),
            public: false,
            bind: None,
            relay: None,
            relay_tls: None,
            relay_only: false,
            name: default_name(),
            region: None,
            timers: Timers::default(),
        }
    }
}

fn default_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().chars().take(announce::MAX_NAME_CHARS).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "mesh".into())
}

/// What happened in the mesh, for `GET /api/events`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MeshEvent {
    PeerJoined { node_id: String },
    PeerLeft { node_id: String, reason: String },
    ModelAdded { model: String },
    ModelRemoved { model: String },
}

/// A peer as the management API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    pub node_id: String,
    pub name: String,
    pub role: Role,
    pub region: Option<String>,
    pub models: Vec<ModelOffer>,
    pub connection: peers::ConnType,
    pub rtt_ms: Option<f64>,
    pub queue_depth: u32,
    pub tokens_per_second: f32,
    pub memory_bytes: u64,
    pub last_seen_ms: u64,
}

/// State shared by the handle and the background tasks.
pub(crate) struct Shared {
    secret_key: SecretKey,
    keys: MeshKeys,
    timers: Timers,
    name: String,
    region: Option<String>,
    engine: EngineSlot,
    endpoint: Endpoint,
    gate: Gate,
    lookup: MemoryLookup,
    tunnel: Tunnel,
    table: Mutex<PeerTable>,
    outstanding: Mutex<HashMap<EndpointId, usize>>,
    /// Every model some peer has announced since this node started.
    known_models: Mutex<BTreeSet<String>>,
    events: broadcast::Sender<MeshEvent>,
    memory_bytes: u64,
}

impl Shared {
    fn remember_model(&self, model: &str) {
        if let Ok(mut known) = self.known_models.lock() {
            if known.len() < MAX_KNOWN_MODELS {
                known.insert(model.to_owned());
            }
        }
    }

    fn with_table<T>(&self, f: impl FnOnce(&mut PeerTable) -> T) -> T {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut table)
    }

    fn announcement(&self) -> Announcement {
        let (models, queue_depth, tokens_per_second) = match self.engine.get() {
            Some(e) => {
                let (info, stats) = (e.info(), e.stats());
                let offer = ModelOffer {
                    name: info.name.clone(),
                    free_slots: info.parallel.saturating_sub(stats.slots_busy as u32),
                    slots: info.parallel,
                    ctx: info.ctx,
                };
                (
                    vec![offer],
                    stats.queue_len as u32,
                    stats.tokens_per_second_last_minute as f32,
                )
            }
            None => (Vec::new(), 0, 0.0),
        };
        Announcement {
            node: self.secret_key.public(),
            seq: now_micros(),
            role: if models.is_empty() {
                Role::Client
            } else {
                Role::Host
            },
            name: self.name.clone(),
            region: self.region.clone(),
            models,
            memory_bytes: self.memory_bytes,
            queue_depth,
            tokens_per_second,
            addr: self.endpoint.addr(),
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Total memory from /proc/meminfo (0 elsewhere).
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

/// Handle to a running mesh node. Clone freely.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    router: Router,
    sender: iroh_gossip::api::GossipSender,
    cancel: CancellationToken,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Mesh {
    /// Starts the endpoint and protocols, joins the tickets' mesh (or starts a new one).
    /// `engine` is what this node serves (empty: a client, until a model is loaded); `tunnel_app` answers requests
    /// that arrive over the tunnel (the node's local-only OpenAI router).
    pub async fn start(
        cfg: MeshConfig,
        engine: EngineSlot,
        tunnel_app: axum::Router,
    ) -> Result<Self, MeshError> {
        let keys = mesh_keys(&cfg)?;
        let gate = Gate::default();
        let (hooks, admit_requests) = gate::hooks(gate.clone());
        let lookup = MemoryLookup::new();
        for t in &cfg.join {
            for addr in &t.peers {
                lookup.add_endpoint_info(addr.clone());
            }
        }
        let endpoint = bind_endpoint(&cfg, hooks, lookup.clone()).await?;
        let cancel = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(gate::run_admitter(
            endpoint.clone(),
            keys,
            gate.clone(),
            admit_requests,
            cancel.clone(),
        ))];
        let gossip = Gossip::builder()
            .max_message_size(announce::MAX_MESSAGE_BYTES)
            .spawn(endpoint.clone());
        let router = Router::builder(endpoint.clone())
            .accept(
                admission::ALPN,
                admission::Admission {
                    keys,
                    gate: gate.clone(),
                    me: endpoint.id(),
                },
            )
            .accept(iroh_gossip::ALPN, gossip.clone())
            .accept(tunnel::ALPN, TunnelServer { app: tunnel_app })
            .accept(ping::ALPN, ping::PingServer)
            .spawn();

        let bootstrap = match admit_to_tickets(&endpoint, &cfg.join, &keys, &gate).await {
            Ok(ids) => ids,
            Err(e) => {
                let _ = router.shutdown().await;
                return Err(e);
            }
        };
        let topic = gossip
            .subscribe(TopicId::from_bytes(keys.topic()), bootstrap)
            .await
            .map_err(|e| MeshError::Gossip(e.to_string()))?;
        let (sender, receiver) = topic.split();
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            secret_key: cfg.secret_key.clone(),
            keys,
            timers: cfg.timers,
            name: cfg.name.clone(),
            region: cfg.region.clone(),
            engine,
            tunnel: Tunnel::new(endpoint.clone(), gate.clone()),
            endpoint,
            gate,
            lookup,
            table: Mutex::default(),
            outstanding: Mutex::default(),
            known_models: Mutex::default(),
            events,
            memory_bytes: memory_bytes(),
        });
        tasks.push(tokio::spawn(membership::run(
            shared.clone(),
            sender.clone(),
            receiver,
            cancel.clone(),
        )));
        Ok(Self {
            shared,
            router,
            sender,
            cancel,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

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
        if self.shared.engine.get().is_some() {
            Role::Host
        } else {
            Role::Client
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.shared.endpoint
    }

    /// A ticket inviting others to this mesh through this node.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            mesh_id: self.shared.keys.mesh_id,
            secret: self.shared.keys.secret,
            peers: vec![self.shared.endpoint.addr()],
        }
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
                    queue_depth: p.ann.queue_depth,
                    tokens_per_second: p.ann.tokens_per_second,
                    memory_bytes: p.ann.memory_bytes,
                    last_seen_ms: now.saturating_duration_since(p.last_seen).as_millis() as u64,
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

    /// Whether some peer has served `model` since this node started: a request for it with no
    /// host now is "unavailable" (503), one for a model never seen is "not found" (404).
    pub fn has_seen_model(&self, model: &str) -> bool {
        self.shared
            .known_models
            .lock()
            .is_ok_and(|k| k.contains(model))
    }

    /// Peers serving `model`, best first, leaving out `tried`.
    pub fn hosts_for(&self, model: &str, tried: &[EndpointId]) -> Vec<EndpointId> {
        let outstanding = self
            .shared
            .outstanding
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        let candidates = self.shared.with_table(|t| {
            t.hosts_of(model)
                .filter(|p| !tried.contains(&p.ann.node))
                .map(|p| Candidate {
                    id: p.ann.node,
                    outstanding: outstanding.get(&p.ann.node).copied().unwrap_or(0),
                    rtt: p.rtt,
                })
                .collect()
        });
        routing::rank(candidates)
    }

    pub fn tunnel(&self) -> &Tunnel {
        &self.shared.tunnel
    }

    /// Counts a request in flight to `peer` until the guard drops.
    pub fn outstanding(&self, peer: EndpointId) -> Outstanding {
        if let Ok(mut o) = self.shared.outstanding.lock() {
            *o.entry(peer).or_default() += 1;
        }
        Outstanding {
            shared: self.shared.clone(),
            peer,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<MeshEvent> {
        self.shared.events.subscribe()
    }

    /// Joins more members of this mesh by ticket (`POST /api/join`).
    pub async fn join(&self, ticket: &Ticket) -> Result<usize, MeshError> {
        if ticket.mesh_id != self.shared.keys.mesh_id || ticket.secret != self.shared.keys.secret {
            return Err(MeshError::OtherMesh {
                ours: self.shared.keys.mesh_id,
                theirs: ticket.mesh_id,
            });
        }
        for addr in &ticket.peers {
            self.shared.lookup.add_endpoint_info(addr.clone());
        }
        let ids = admit_to_tickets(
            &self.shared.endpoint,
            std::slice::from_ref(ticket),
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

    /// Graceful leave: tells peers, then closes the endpoint.
    pub async fn shutdown(&self) {
        let leave = Message::Leave {
            node: self.node_id(),
            seq: now_micros(),
        };
        let bytes = announce::encode(&self.shared.secret_key, &leave);
        if self.sender.broadcast(bytes.into()).await.is_ok() {
            // Gossip sends asynchronously; give the message a moment to leave the socket.
            tokio::time::sleep(LEAVE_FLUSH).await;
        }
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
        if let Err(e) = self.router.shutdown().await {
            tracing::debug!("iroh router shutdown: {e}");
        }
    }
}

/// Decrements the outstanding count of a peer when dropped.
pub struct Outstanding {
    shared: Arc<Shared>,
    peer: EndpointId,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        if let Ok(mut o) = self.shared.outstanding.lock() {
            if let Some(n) = o.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.remove(&self.peer);
                }
            }
        }
    }
}

fn mesh_keys(cfg: &MeshConfig) -> Result<MeshKeys, MeshError> {
    let Some(first) = cfg.join.first() else {
        let secret = (!cfg.public).then(MeshSecret::random);
        return Ok(MeshKeys {
            mesh_id: MeshId::random(),
            secret,
        });
    };
    for t in &cfg.join[1..] {
        if t.mesh_id != first.mesh_id || t.secret != first.secret {
            return Err(MeshError::MixedTickets(first.mesh_id, t.mesh_id));
        }
    }
    Ok(MeshKeys {
        mesh_id: first.mesh_id,
        secret: first.secret,
    })
}

async fn bind_endpoint(
    cfg: &MeshConfig,
    hooks: gate::GateHooks,
    lookup: MemoryLookup,
) -> Result<Endpoint, MeshError> {
    let bind_err = |e: &dyn std::fmt::Display| MeshError::Bind(e.to_string());
    let relay_mode = match &cfg.relay {
        Some(url) => RelayMode::custom([url.clone()]),
        None => RelayMode::Disabled,
    };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(cfg.secret_key.clone())
        .relay_mode(relay_mode)
        .hooks(hooks)
        .address_lookup(lookup);
    if let Some(tls) = &cfg.relay_tls {
        builder = builder.ca_tls_config(tls.clone());
    }
    if cfg.relay_only {
        builder = builder.clear_ip_transports();
    } else if let Some(addr) = cfg.bind {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| bind_err(&e))?;
    }
    let endpoint = builder.bind().await.map_err(|e| bind_err(&e))?;
    if cfg.relay.is_some()
        && tokio::time::timeout(RELAY_ONLINE_TIMEOUT, endpoint.online())
            .await
            .is_err()
    {
        tracing::warn!(
            "relay not reachable after {RELAY_ONLINE_TIMEOUT:?}; going on with direct addresses"
        );
    }
    Ok(endpoint)
}

/// Proves membership to every ticket peer (concurrently). Refusal by all reachable peers is an
/// error; peers that cannot be reached are logged and left to gossip to retry.
async fn admit_to_tickets(
    endpoint: &Endpoint,
    tickets: &[Ticket],
    keys: &MeshKeys,
    gate: &Gate,
) -> Result<Vec<EndpointId>, MeshError> {
    let addrs: Vec<_> = tickets
        .iter()
        .flat_map(|t| t.peers.iter().cloned())
        .filter(|a| a.id != endpoint.id())
        .collect();
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let results = futures::future::join_all(
        addrs
            .iter()
            .map(|a| admission::dial(endpoint, a.clone(), keys, gate)),
    )
    .await;
    let mut ids = Vec::new();
    let mut refusal = None;
    for (addr, result) in addrs.iter().zip(results) {
        match result {
            Ok(()) => ids.push(addr.id),
            Err(e) if e.is_refusal() => refusal = Some(e),
            Err(e) => {
                tracing::warn!("{e}; will keep trying through gossip");
                ids.push(addr.id);
            }
        }
    }
    match refusal {
        Some(e) if ids.is_empty() => Err(MeshError::Refused(e)),
        _ => Ok(ids),
    }
}
