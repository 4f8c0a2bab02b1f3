//! The management API (default 127.0.0.1:3131), for people and scripts:
//! - `GET /api/status`: this node (models, slots, stats) and its mesh (ids, role, peers; not
//!   the ticket, whose secret a page must never read).
//! - `GET /api/ticket`: the ticket, answered to loopback peers only (403 otherwise).
//! - `GET /api/peers`: the peer table.
//! - `POST /api/join {"ticket": "mesh1…"}`: join more members of this node's mesh.
//! - `GET /api/discover`, `GET|POST|DELETE /api/publish`: Nostr discovery (`discover.rs`).
//! - `GET /api/events`: SSE — a `status` snapshot, then `peer_joined`, `peer_left`,
//!   `model_added`, `model_removed`, `download`; a keep-alive comment every 15 s.
//! - The web console: `GET /` and `/console/*` (`console.rs`), reading `GET /api/nodes`,
//!   `GET /api/models` (`nodes.rs`), `GET /api/catalog`, `POST /api/catalog/download`
//!   (`catalog.rs`), and chatting through `POST /v1/chat/completions` and `GET /v1/models`,
//!   the OpenAI API's own handlers mounted here too, so the page needs no other origin.
//! - `POST /api/invite`, `POST /api/send`, `GET /api/inbox`, `POST /api/leave`,
//!   `GET /api/logs`: join codes, messages, leaving, logs (`p2p.rs`); `message` events.
//! - `GET|POST /api/shares`, `DELETE /api/shares/{name}`, `POST /api/connect`: TCP sharing
//!   (`shares.rs`).
//!
//! Every document is a type in [`docs`] (or beside its handler), shared with the CLI that
//! reads it.

pub mod catalog;
mod console;
mod discover;
pub mod docs;
mod events;
pub mod nodes;
pub mod p2p;
pub mod shares;

use axum::extract::State;
use axum::http::{Extensions, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::generate::LocalSlot;
use super::guard::peer_is_loopback;
use super::route;
use crate::catalog::ResolveOptions;
use crate::discovery::invite::Invites;
use crate::discovery::Discovery;
use crate::mesh::{Mesh, Ticket};
use docs::{
    EngineStatus, JoinDoc, JoinRequest, MeshStatus, ModelStatus, PeersDoc, Queue, Slots, StatusDoc,
    TicketDoc,
};

/// Largest `POST /api/join` body.
const MAX_JOIN_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub local: LocalSlot,
    pub mesh: Option<Mesh>,
    pub discovery: Option<Discovery>,
    /// The console's catalog downloads (from and into where `hub` of [`router`] says).
    pub downloads: catalog::Downloads,
    /// Join codes this node opened (`POST /api/invite`).
    pub invites: Invites,
}

/// The management API and the console; `hub` says where catalog downloads come from and go.
pub fn router(
    local: LocalSlot,
    mesh: Option<Mesh>,
    discovery: Option<Discovery>,
    hub: ResolveOptions,
) -> Router {
    let chat = super::openai::console_router(local.clone(), mesh.clone());
    Router::new()
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/api/nodes", get(nodes::nodes))
        .route("/api/models", get(nodes::models))
        .route("/api/catalog", get(catalog::catalog))
        .route("/api/catalog/download", post(catalog::download))
        .route("/api/status", get(status))
        .route("/api/ticket", get(ticket))
        .route("/api/peers", get(peers))
        .route("/api/join", post(join))
        .route("/api/events", get(events::events))
        .route("/api/invite", post(p2p::invite))
        .route("/api/send", post(p2p::send))
        .route("/api/inbox", get(p2p::inbox))
        .route("/api/leave", post(p2p::leave))
        .route("/api/logs", get(p2p::logs))
        .route("/api/shares", get(shares::list).post(shares::add))
        .route("/api/shares/{name}", axum::routing::delete(shares::remove))
        .route("/api/connect", post(shares::connect))
        .route("/api/discover", get(discover::discover))
        .route(
            "/api/publish",
            get(discover::publish_state)
                .post(discover::start_publishing)
                .delete(discover::stop_publishing),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JOIN_BYTES))
        .with_state(ApiState {
            local,
            mesh,
            discovery,
            downloads: catalog::Downloads::new(hub),
            invites: Invites::default(),
        })
        .merge(chat)
}

async fn status(State(state): State<ApiState>) -> Json<StatusDoc> {
    Json(status_doc(&state))
}

/// The status document (also the first event of `/api/events`).
pub fn status_doc(state: &ApiState) -> StatusDoc {
    let models: Vec<ModelStatus> = state
        .local
        .all()
        .map(|(g, slots)| {
            let (info, stats) = (g.info(), g.stats());
            ModelStatus {
                name: info.name.clone(),
                engine: EngineStatus {
                    model_path: info.path.clone(),
                    context_size: info.ctx,
                    context_train: info.n_ctx_train,
                    threads: info.threads,
                    slots: Slots {
                        busy: stats.slots_busy,
                        total: info.parallel,
                    },
                    queue: Queue {
                        // Requests waiting for a slot in turn (`http::slots`) count as queued too.
                        length: stats.queue_len + slots.waiting(),
                        capacity: info.queue_capacity,
                    },
                    requests_served: stats.requests_served,
                    prompt_tokens: stats.prompt_tokens,
                    prompt_tokens_cached: stats.prompt_tokens_cached,
                    tokens_generated: stats.tokens_generated,
                    decode_tokens_per_second: stats.decode_tokens_per_second,
                    tokens_per_second_last_minute: stats.tokens_per_second_last_minute,
                    shutting_down: g.is_shutting_down(),
                },
            }
        })
        .collect();
    let mesh = state.mesh.as_ref().map(|mesh| {
        let ticket = mesh.ticket();
        let own = ticket.peers.first();
        let left = mesh.has_left();
        MeshStatus {
            node_id: mesh.node_id().to_string(),
            // A node that left is in no mesh: the old id would tell a script it still is.
            mesh_id: if left {
                String::new()
            } else {
                mesh.mesh_id().to_string()
            },
            mesh_public: mesh.is_public(),
            home_relay: own
                .and_then(|a| a.relay_urls().next())
                .map(|u| u.to_string()),
            addrs: own
                .map(|a| a.ip_addrs().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            peers: mesh.peers(),
            mesh_models: mesh.remote_models(),
            left,
        }
    });
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").into(),
        role: route::serving(&state.local).role(),
        model: models.first().map(|m| m.name.clone()),
        engine: models.first().map(|m| m.engine.clone()),
        models,
        mesh,
    }
}

/// The node's mesh, or 409 `no_mesh`.
fn mesh_of(state: &ApiState) -> Result<&Mesh, ApiError> {
    state
        .mesh
        .as_ref()
        .ok_or_else(|| ApiError::conflict("no_mesh", "this node runs without a mesh"))
}

/// The ticket, to loopback peers only: a page that got past the `Host` check by any means, or
/// a client elsewhere on an exposed `--api-host`, still never reads the mesh secret.
async fn ticket(
    State(state): State<ApiState>,
    ext: Extensions,
) -> Result<Json<TicketDoc>, ApiError> {
    if !peer_is_loopback(&ext) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "loopback_only",
            "the ticket is given to clients on this machine only (`mesh status --ticket` there)",
        ));
    }
    let mesh = mesh_of(&state)?;
    if mesh.has_left() {
        return Err(ApiError::conflict("left", "this node left its mesh"));
    }
    Ok(Json(TicketDoc {
        ticket: mesh.ticket().encode(),
        mesh_id: mesh.mesh_id().to_string(),
        mesh_public: mesh.is_public(),
    }))
}

async fn peers(State(state): State<ApiState>) -> Json<PeersDoc> {
    let peers = state.mesh.as_ref().map(|m| m.peers()).unwrap_or_default();
    Json(PeersDoc { peers })
}

async fn join(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<JoinDoc>, ApiError> {
    let req: JoinRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"ticket\": \"mesh1…\"}}: {e}")))?;
    let ticket = Ticket::decode(&req.ticket)
        .map_err(|e| ApiError::bad_request(format!("bad ticket: {e}")))?;
    let peers = mesh_of(&state)?
        .join(&ticket)
        .await
        .map_err(|e| ApiError::conflict("join_failed", e.to_string()))?;
    Ok(Json(JoinDoc {
        joined: true,
        peers_dialled: peers,
    }))
}
