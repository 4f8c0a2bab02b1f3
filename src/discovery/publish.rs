//! Publishing this node's mesh offer: a loop that signs the mesh's current state as an offer
//! every [`REPUBLISH`] (expiring after [`OFFER_TTL`]) and as soon as the mesh changes shape,
//! sends it to every relay, retries with backoff when relays fail (never stopping the node), and
//! on stop publishes a NIP-09 deletion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr::nips::nip01::Coordinate;
use nostr::nips::nip09::EventDeletionRequest;
use nostr::{Event, EventBuilder, Keys, Kind, RelayUrl};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::nostr_io::{self, RelayReport};
use super::offer::{self, OfferContent, ServedModel, OFFER_KIND};
use crate::mesh::Mesh;
use crate::mesh::{ModelOffer, Role};

/// How often the offer is signed and sent again.
pub const REPUBLISH: Duration = Duration::from_secs(60);
/// How long an offer lives (NIP-40 expiration): three missed republishes.
pub const OFFER_TTL: Duration = Duration::from_secs(180);
/// How often the loop looks for changes in the mesh between rounds.
const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// First retry delay after a round where some relay failed; doubles up to [`REPUBLISH`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// How long stopping waits for relays to confirm the offer's deletion (Ctrl-C stays quick).
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(3);
/// Nostr key file in the mesh home.
pub const NOSTR_KEY_FILE: &str = "nostr.key";

/// What goes into the offer besides the mesh's live state.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    pub relays: Vec<RelayUrl>,
    pub name: String,
    pub region: Option<String>,
    pub wanted: Vec<String>,
    pub max_clients: u32,
    /// Republish interval (tests shorten it) and time to live.
    pub interval: Duration,
    pub ttl: Duration,
}

/// What the management API shows of publishing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishState {
    pub publisher: String,
    pub relays: Vec<RelayReport>,
    pub published: u64,
    pub last_event_id: Option<String>,
    pub last_published_at: Option<u64>,
    pub offer: Option<OfferContent>,
}

/// The Nostr key kept in the mesh home (`nostr.key`, mode 0600).
pub fn load_keys(home: &std::path::Path) -> anyhow::Result<Keys> {
    let bytes = crate::mesh::identity::load_or_create_secret(home, NOSTR_KEY_FILE, "Nostr key")?;
    Ok(Keys::new(nostr::SecretKey::from_slice(&bytes)?))
}

/// One node as the offer counts it.
#[derive(Debug, Clone)]
pub struct NodeSummary {
    pub role: Role,
    pub memory_bytes: u64,
    pub models: Vec<ModelOffer>,
}

/// Sums nodes into the offer's figures: models (hosts, slots, free slots, smallest context),
/// serving nodes, clients, and the serving nodes' memory. Pure.
pub fn summarize(nodes: &[NodeSummary]) -> (Vec<ServedModel>, u32, u32, u64) {
    let mut models: Vec<ServedModel> = Vec::new();
    let (mut hosts, mut clients, mut memory) = (0u32, 0u32, 0u64);
    for n in nodes {
        if n.role == Role::Client {
            clients += 1;
            continue;
        }
        hosts += 1;
        memory += n.memory_bytes;
        for m in &n.models {
            match models.iter_mut().find(|s| s.name == m.name) {
                Some(s) => {
                    s.hosts += 1;
                    s.slots += m.slots;
                    s.free_slots += m.free_slots.min(m.slots);
                    s.ctx = s.ctx.min(m.ctx);
                }
                None => models.push(ServedModel {
                    name: m.name.clone(),
                    ctx: m.ctx,
                    quant: offer::quant_from_name(&m.name),
                    hosts: 1,
                    slots: m.slots,
                    free_slots: m.free_slots.min(m.slots),
                }),
            }
        }
    }
    models.truncate(offer::MAX_MODELS);
    models.sort_by(|a, b| a.name.cmp(&b.name));
    (models, hosts, clients, memory)
}

/// The offer content for `mesh` now (binding filled in when signed).
pub fn content(mesh: &Mesh, settings: &PublishSettings) -> OfferContent {
    let own = mesh.own_announcement();
    let mut nodes = vec![NodeSummary {
        role: own.role,
        memory_bytes: own.memory_bytes,
        models: own.models,
    }];
    nodes.extend(mesh.peers().into_iter().map(|p| NodeSummary {
        role: p.role,
        memory_bytes: p.memory_bytes,
        models: p.models,
    }));
    let (models, hosts, clients, memory_bytes) = summarize(&nodes);
    let public = mesh.is_public();
    OfferContent {
        schema: offer::SCHEMA.into(),
        name: settings.name.clone(),
        public,
        models,
        wanted: settings.wanted.clone(),
        region: settings.region.clone(),
        memory_bytes,
        nodes: hosts,
        clients,
        max_clients: settings.max_clients,
        ticket: public.then(|| mesh.ticket().encode()),
        version: env!("CARGO_PKG_VERSION").into(),
        node: String::new(),
        binding: String::new(),
    }
}

/// A running publish loop.
pub struct Publisher {
    state: Arc<Mutex<PublishState>>,
    /// Rounds finished so far (the first one says how the relays took the offer).
    rounds: tokio::sync::watch::Receiver<u64>,
    cancel: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
    keys: Keys,
    mesh: Mesh,
    relays: Vec<RelayUrl>,
}

impl Publisher {
    /// Starts publishing `mesh`'s offer now and every `settings.interval`.
    pub fn start(mesh: Mesh, keys: Keys, settings: PublishSettings) -> Arc<Self> {
        let state = Arc::new(Mutex::new(PublishState {
            publisher: nostr::ToBech32::to_bech32(&keys.public_key()).unwrap_or_default(),
            ..PublishState::default()
        }));
        let cancel = CancellationToken::new();
        let (rounds_tx, rounds) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(run(
            mesh.clone(),
            keys.clone(),
            settings.clone(),
            (state.clone(), rounds_tx),
            cancel.clone(),
        ));
        Arc::new(Self {
            state,
            rounds,
            cancel,
            task: Mutex::new(Some(task)),
            keys,
            mesh,
            relays: settings.relays,
        })
    }

    pub fn state(&self) -> PublishState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits until the first round has been sent (and the relays answered or timed out).
    pub async fn first_round(&self) {
        let mut rounds = self.rounds.clone();
        let _ = rounds.wait_for(|n| *n > 0).await;
    }

    /// Stops the loop (a round in flight is dropped) and asks the relays to delete the offer
    /// (NIP-09), waiting at most [`DELETE_TIMEOUT`]: a deletion by coordinate also removes an
    /// offer that the dropped round may still have delivered.
    pub async fn stop(&self) -> Vec<RelayReport> {
        self.cancel.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        let Some(last) = self.state().last_event_id else {
            return Vec::new();
        };
        let coordinate = Coordinate::new(Kind::Custom(OFFER_KIND), self.keys.public_key())
            .identifier(self.mesh.mesh_id().to_string());
        let mut request = EventDeletionRequest::new()
            .coordinate(coordinate)
            .reason("mesh node stopped");
        if let Ok(id) = nostr::EventId::from_hex(&last) {
            request = request.id(id);
        }
        match EventBuilder::delete(request).sign_with_keys(&self.keys) {
            Ok(deletion) => {
                let sending = nostr_io::publish(&self.relays, &deletion);
                let Ok(reports) = tokio::time::timeout(DELETE_TIMEOUT, sending).await else {
                    tracing::warn!("offer deletion not confirmed within {DELETE_TIMEOUT:?}");
                    return Vec::new();
                };
                for r in reports.iter().filter(|r| !r.ok) {
                    tracing::warn!(relay = %r.url, "offer deletion not confirmed: {}", r.error.as_deref().unwrap_or("?"));
                }
                reports
            }
            Err(e) => {
                tracing::warn!("cannot sign the offer deletion: {e}");
                Vec::new()
            }
        }
    }
}

fn sign(
    mesh: &Mesh,
    keys: &Keys,
    settings: &PublishSettings,
) -> anyhow::Result<(Event, OfferContent)> {
    let content = content(mesh, settings);
    let event = offer::build_event(
        keys,
        mesh.secret_key(),
        mesh.mesh_id(),
        content.clone(),
        crate::util::time::unix_secs(),
        settings.ttl.as_secs(),
    )?;
    Ok((event, content))
}

async fn run(
    mesh: Mesh,
    keys: Keys,
    settings: PublishSettings,
    (state, rounds): (Arc<Mutex<PublishState>>, tokio::sync::watch::Sender<u64>),
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    let mut had_failed = false;
    loop {
        let delay = match sign(&mesh, &keys, &settings) {
            Ok((event, content)) => {
                let reports = nostr_io::publish(&settings.relays, &event).await;
                let ok = reports.iter().filter(|r| r.ok).count();
                for r in reports.iter().filter(|r| !r.ok) {
                    tracing::warn!(relay = %r.url, "cannot publish the offer: {}; retrying", r.error.as_deref().unwrap_or("?"));
                }
                if ok > 0 {
                    tracing::debug!(event = %event.id.to_hex(), "offer published to {ok} of {} relays", reports.len());
                }
                if let Ok(mut s) = state.lock() {
                    s.relays = reports.clone();
                    if ok > 0 {
                        s.published += 1;
                        s.last_event_id = Some(event.id.to_hex());
                        s.last_published_at = Some(event.created_at.as_secs());
                    }
                    s.offer = Some(content);
                }
                rounds.send_modify(|n| *n += 1);
                had_failed = ok < reports.len();
                if had_failed {
                    failures += 1;
                    backoff(failures, settings.interval)
                } else {
                    failures = 0;
                    settings.interval
                }
            }
            Err(e) => {
                tracing::warn!("cannot sign the offer: {e}");
                settings.interval
            }
        };
        // Wait for the next round, but republish at once when the mesh changes shape (a model
        // loaded, a node joined or left) so offers never lag a minute behind.
        let published = state.lock().ok().and_then(|s| s.offer.as_ref().map(shape));
        let due = Instant::now() + delay;
        loop {
            let left = due.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(CHANGE_CHECK.min(left)) => {}
            }
            if Instant::now() >= due {
                break;
            }
            if !had_failed && published != Some(shape(&content(&mesh, &settings))) {
                break;
            }
        }
    }
}

/// What makes an offer out of date: the models served (and by how many nodes), nodes, clients.
fn shape(c: &OfferContent) -> (Vec<(String, u32)>, u32, u32) {
    let models = c.models.iter().map(|m| (m.name.clone(), m.hosts)).collect();
    (models, c.nodes, c.clients)
}

/// 2 s, 4 s, 8 s … capped at `max`.
pub fn backoff(failures: u32, max: Duration) -> Duration {
    crate::util::backoff::Backoff::new(FIRST_RETRY, max).delay(failures)
}
