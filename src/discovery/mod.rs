//! Discovery: meshes advertised as signed Nostr events ("offers"), browsed, scored and joined.
//!
//! Pure pieces: `offer` (event format and validation), `score` (the scorer and its terms),
//! `verify` (does gossip contradict a joined mesh's offer?), `untrusted` (publishers caught
//! lying; its `load`/`record` read and write the file),
//! `publish::summary` (the offer's figures) and `publish::schedule` (when to republish). IO
//! pieces: `nostr_io` (talking to relays), `local` (offers from the LAN and `--peers`, over
//! `mesh/offer/1`), `publish` (the publisher and its driver), `probe` (RTT over iroh), `browse`
//! (fetch + score + probe). The Nostr relay server is `crate::relay`.
//! [`Discovery`] is a node's handle on all of it. docs/PROTOCOL.md has the format.
//!
//! A domain module: it imports `mesh` (offers describe a mesh and bind its node key) and
//! `util` (and may import `catalog` or `engine`); never `relay`, `http`, `node` or `cmd`, and
//! it prints nothing.

pub mod browse;
pub mod demand;
pub mod invite;
pub mod local;
pub mod nostr_io;
pub mod offer;
pub mod probe;
pub mod publish;
pub mod score;
pub mod untrusted;
pub mod verify;

use std::sync::Arc;

use nostr::{Keys, RelayUrl};
use tokio::sync::Mutex;

use crate::mesh::Mesh;
use browse::{Browse, BrowseOptions};
use nostr_io::{Query, RelayReport};
use publish::{PublishSettings, PublishState, Publisher};
use score::Preferences;

/// How a node discovers and publishes.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Nostr key the offers are signed with.
    pub keys: Keys,
    /// Relays, offer fields and timing (`settings.relays` is where offers go and come from).
    pub settings: PublishSettings,
    /// How the RTT probes reach offers' nodes (relays, which addresses to dial).
    pub net: crate::mesh::NetConfig,
    /// Publish as soon as the node is up (`mesh serve --publish`).
    pub publish: bool,
    /// Where to look for offers besides the relays (`--lan`, `--peers FILE`).
    pub local: local::LocalSources,
}

/// A node's discovery side: its relays and key, and its publisher while it publishes.
#[derive(Clone)]
pub struct Discovery {
    cfg: Arc<DiscoveryConfig>,
    publisher: Arc<Mutex<Option<Arc<Publisher>>>>,
}

impl Discovery {
    pub fn new(cfg: DiscoveryConfig) -> Self {
        Self {
            cfg: Arc::new(cfg),
            publisher: Arc::default(),
        }
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    /// Starts publishing `mesh`'s offer (to `relays`, else the configured ones); a no-op when
    /// already publishing.
    pub async fn start_publishing(&self, mesh: &Mesh, relays: Option<Vec<RelayUrl>>) {
        let mut slot = self.publisher.lock().await;
        if slot.is_none() {
            let mut settings = self.cfg.settings.clone();
            if let Some(r) = relays.filter(|r| !r.is_empty()) {
                settings.relays = r;
            }
            *slot = Some(Publisher::start(
                mesh.clone(),
                self.cfg.keys.clone(),
                settings,
            ));
        }
    }

    /// Stops publishing and deletes the offer from the relays; `None` when not publishing.
    pub async fn stop_publishing(&self) -> Option<Vec<RelayReport>> {
        let publisher = self.publisher.lock().await.take()?;
        Some(publisher.stop().await)
    }

    pub async fn publish_state(&self) -> Option<PublishState> {
        self.publisher.lock().await.as_ref().map(|p| p.state())
    }

    /// The publishing state once the first round is done (at most `timeout`); `None` when not
    /// publishing.
    pub async fn publish_state_after_first_round(
        &self,
        timeout: std::time::Duration,
    ) -> Option<PublishState> {
        let publisher = self.publisher.lock().await.clone()?;
        let _ = tokio::time::timeout(timeout, publisher.first_round()).await;
        Some(publisher.state())
    }

    /// Browses the configured relays.
    pub async fn browse(&self, query: Query, prefs: Preferences, probe: bool) -> Browse {
        browse::browse(&BrowseOptions {
            relays: self.cfg.settings.relays.clone(),
            query,
            prefs,
            probe,
            net: self.cfg.net.clone(),
            local: self.cfg.local.clone(),
        })
        .await
    }
}

/// File in the mesh home naming the mesh this node joined last (the scorer's sticky term).
pub const LAST_MESH_FILE: &str = "last-mesh";

pub fn load_last_mesh(home: &std::path::Path) -> Option<crate::mesh::MeshId> {
    let text = std::fs::read_to_string(home.join(LAST_MESH_FILE)).ok()?;
    offer::parse_mesh_id(text.trim())
}

pub fn save_last_mesh(home: &std::path::Path, id: crate::mesh::MeshId) {
    if let Err(e) = std::fs::write(home.join(LAST_MESH_FILE), id.to_string()) {
        tracing::debug!("cannot remember the last mesh: {e}");
    }
}

/// What people filter offers by (`mesh discover` flags, `/api/discover` query parameters).
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub model: Option<String>,
    pub region: Option<String>,
    /// GB (10^9 bytes) of memory on the serving nodes, at least.
    pub min_memory: Option<f64>,
}

impl Filters {
    pub fn query(&self) -> Query {
        Query {
            model: self.model.clone(),
            region: self.region.clone(),
        }
    }

    /// Preferences for browsing: nothing is excluded for lack of a ticket.
    pub fn prefs(&self, now: u64, last_mesh: Option<crate::mesh::MeshId>) -> Preferences {
        Preferences {
            model: self.model.clone(),
            region: self.region.clone(),
            min_memory_bytes: self.min_memory.map_or(0, |gb| (gb.max(0.0) * 1e9) as u64),
            last_mesh,
            client: false,
            servable: Vec::new(),
            joinable_only: false,
            untrusted: Default::default(),
            now,
        }
    }
}
