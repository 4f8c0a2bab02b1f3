//! The management API (default 127.0.0.1:3131), for people and scripts:
//! - `GET /api/status`: this node (model, slots, stats) and its mesh (ids, ticket, role, peers).
//! - `GET /api/peers`: the peer table.
//! - `POST /api/join {"ticket": "mesh1…"}`: join more members of this node's mesh.
//! - `GET /api/discover`, `GET|POST|DELETE /api/publish`: Nostr discovery (`discover.rs`).
//! - `GET /api/events`: SSE — a `status` snapshot, then `peer_joined`, `peer_left`,
//!   `model_added`, `model_removed`, `message`; a keep-alive comment every 15 s.
//! - `POST /api/invite`, `POST /api/send`, `GET /api/inbox`, `POST /api/leave`,
//!   `GET /api/logs`: join codes, messages, leaving, logs (`p2p.rs`).
//!
//! Every document is a type in [`docs`], shared with the CLI that reads it.

mod discover;
pub mod docs;
mod events;
pub mod p2p;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::ApiError;
use super::generate::LocalSlot;
use super::route;
use crate::discovery::invite::Invites;
use crate::discovery::Discovery;
use crate::mesh::{Mesh, Ticket};
use docs::{EngineStatus, JoinDoc, JoinRequest, MeshStatus, PeersDoc, Queue, Slots, StatusDoc};

/// Largest `POST /api/join` body.
const MAX_JOIN_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct ApiState {
    pub local: LocalSlot,
    pub mesh: Option<Mesh>,
    pub discovery: Option<Discovery>,
    /// Join codes this node opened (`POST /api/invite`).
    pub invites: Invites,
}

pub fn router(local: LocalSlot, mesh: Option<Mesh>, discovery: Option<Discovery>) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/join", post(join))
        .route("/api/events", get(events::events))
        .route("/api/invite", post(p2p::invite))
        .route("/api/send", post(p2p::send))
        .route("/api/inbox", get(p2p::inbox))
        .route("/api/leave", post(p2p::leave))
        .route("/api/logs", get(p2p::logs))
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
            invites: Invites::default(),
        })
}

async fn status(State(state): State<ApiState>) -> Json<StatusDoc> {
    Json(status_doc(&state))
}

/// The status document (also the first event of `/api/events`).
pub fn status_doc(state: &ApiState) -> StatusDoc {
    let engine = state.local.get().map(|g| {
        let (info, stats) = (g.info(), g.stats());
        EngineStatus {
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
                length: stats.queue_len + state.local.slots().map_or(0, |s| s.waiting()),
                capacity: info.queue_capacity,
            },
            requests_served: stats.requests_served,
            prompt_tokens: stats.prompt_tokens,
            tokens_generated: stats.tokens_generated,
            decode_tokens_per_second: stats.decode_tokens_per_second,
            tokens_per_second_last_minute: stats.tokens_per_second_last_minute,
            shutting_down: g.is_shutting_down(),
        }
    });
    let mesh = state.mesh.as_ref().map(|mesh| {
        let ticket = mesh.ticket();
        let own = ticket.peers.first();
        MeshStatus {
            node_id: mesh.node_id().to_string(),
            mesh_id: mesh.mesh_id().to_string(),
            mesh_public: mesh.is_public(),
            ticket: ticket.encode(),
            home_relay: own
                .and_then(|a| a.relay_urls().next())
                .map(|u| u.to_string()),
            addrs: own
                .map(|a| a.ip_addrs().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            peers: mesh.peers(),
            mesh_models: mesh.remote_models(),
        }
    });
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").into(),
        role: route::serving(&state.local).role(),
        model: state.local.get().map(|g| g.info().name.clone()),
        engine,
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
