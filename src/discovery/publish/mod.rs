//! Publishing this node's mesh offer: signs the mesh's current state as an offer every
//! [`REPUBLISH`] (expiring after [`OFFER_TTL`]) and as soon as the mesh changes shape, sends it
//! to every relay, retries with backoff when relays fail (never stopping the node), and on stop
//! publishes a NIP-09 deletion. Each signed offer is also handed to the mesh, which serves it
//! over `mesh/offer/1` (LAN and `--peers` discovery) until publishing stops.
//!
//! - [`summary`]: what the offer says about the mesh (pure sums, the offer's shape).
//! - [`schedule`]: when to publish, a sans-IO state machine.
//! - here: [`Publisher`], the handle, and the driver task that only moves data and timers: it
//!   waits on the schedule's deadline and on the mesh's roster watch (`Mesh::watch_roster`),
//!   never polling.
//!
//! Imports `offer`, `nostr_io` and the mesh's public handle; nothing above discovery.

pub mod schedule;
pub mod summary;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::Watcher as _;
use nostr::nips::nip01::Coordinate;
use nostr::nips::nip09::EventDeletionRequest;
use nostr::{Event, EventBuilder, Keys, Kind, RelayUrl};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::nostr_io::{self, RelayReport};
use super::offer::{self, OfferContent, OFFER_KIND};
use crate::mesh::Mesh;
use schedule::{Action, Outcome, Schedule};
pub use summary::{content, summarize, NodeSummary, Shape};

/// How often the offer is signed and sent again.
pub const REPUBLISH: Duration = Duration::from_secs(60);
/// How long an offer lives (NIP-40 expiration): three missed republishes.
pub const OFFER_TTL: Duration = Duration::from_secs(180);
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
        self.mesh.serve_offer(None);
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

/// The driver: does what the [`Schedule`] says, feeding it round outcomes, timer expiries and
/// the mesh's shape whenever the roster watch fires.
async fn run(
    mesh: Mesh,
    keys: Keys,
    settings: PublishSettings,
    (state, rounds): (Arc<Mutex<PublishState>>, tokio::sync::watch::Sender<u64>),
    cancel: CancellationToken,
) {
    let mut roster = mesh.watch_roster();
    // Its relay URL and public address join the ticket when known: a new offer then.
    let mut addr = mesh.watch_addr();
    // A closed watch (the mesh is gone) leaves only the timer.
    let mut roster_open = true;
    let mut addr_open = true;
    let mut schedule = Schedule::new(settings.interval, tokio::time::Instant::now().into_std());
    let mut action = schedule.start();
    loop {
        let event = match action {
            Action::PublishNow => {
                // Changes seen from here on are judged against what this round sends.
                roster.borrow_and_update();
                let outcome = round(&mesh, &keys, &settings, &state).await;
                rounds.send_modify(|n| *n += 1);
                schedule::Event::Round(outcome)
            }
            Action::WaitUntil(due) => {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(due.into()) => schedule::Event::Timer,
                    changed = roster.changed(), if roster_open => match changed {
                        Ok(()) => schedule::Event::Mesh(Shape::of(&content(&mesh, &settings))),
                        Err(_) => {
                            roster_open = false;
                            schedule::Event::Timer
                        }
                    },
                    changed = addr.updated(), if addr_open => match changed {
                        Ok(_) => schedule::Event::Mesh(Shape::of(&content(&mesh, &settings))),
                        Err(_) => {
                            addr_open = false;
                            schedule::Event::Timer
                        }
                    },
                }
            }
        };
        action = schedule.handle(event, tokio::time::Instant::now().into_std());
    }
}

/// One round: signs the offer, sends it to every relay and records how they took it.
async fn round(
    mesh: &Mesh,
    keys: &Keys,
    settings: &PublishSettings,
    state: &Mutex<PublishState>,
) -> Outcome {
    let (event, content) = match sign(mesh, keys, settings) {
        Ok(signed) => signed,
        Err(e) => {
            tracing::warn!("cannot sign the offer: {e}");
            return Outcome::NotSigned;
        }
    };
    // Handed out directly too (`mesh/offer/1`: LAN and `--peers` discovery), whatever the
    // relays say.
    mesh.serve_offer(Some(nostr::JsonUtil::as_json(&event)));
    let reports = nostr_io::publish(&settings.relays, &event).await;
    let ok = reports.iter().filter(|r| r.ok).count();
    for r in reports.iter().filter(|r| !r.ok) {
        tracing::warn!(relay = %r.url, "cannot publish the offer: {}; retrying", r.error.as_deref().unwrap_or("?"));
    }
    if ok > 0 {
        tracing::debug!(event = %event.id.to_hex(), "offer published to {ok} of {} relays", reports.len());
    }
    let shape = Shape::of(&content);
    if let Ok(mut s) = state.lock() {
        s.relays = reports.clone();
        if ok > 0 {
            s.published += 1;
            s.last_event_id = Some(event.id.to_hex());
            s.last_published_at = Some(event.created_at.as_secs());
        }
        s.offer = Some(content);
    }
    Outcome::Sent {
        shape,
        all_ok: ok == reports.len(),
    }
}
