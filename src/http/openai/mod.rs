//! The OpenAI-compatible HTTP API (default 127.0.0.1:9337): `/v1/models`,
//! `/v1/chat/completions`, `/v1/completions`, streaming and not, and `/v1/embeddings`.
//!
//! Request path: body bytes → `validate` (400/413 in OpenAI's error shape) → chat template and
//! tokenizer → `Generate::submit` (503 when the queue is full) → events → JSON or SSE (`stream`).
//! `route::choose` decides local or mesh; a model served by another node of the mesh goes through
//! `forward` over the HTTP tunnel (`assemble` reads replicas' streams back, pure). Files:
//! `validate` (pure), `tools` (pure: function calling's request and response shapes),
//! `handlers`, `stream`, `logprobs` (pure), `forward`, `assemble`;
//! `embeddings` (its own handler) with `forward_json` (a JSON answer over the tunnel);
//! none of them imports another's handlers (errors come from `http::error`).

mod assemble;
pub mod embeddings;
mod forward;
mod forward_json;
mod handlers;
mod logprobs;
mod stream;
pub mod tools;
pub mod validate;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::Uri;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::error::ApiError;
use super::generate::LocalSlot;
use crate::mesh::Mesh;

/// What every handler needs: the local generator (none on a client node) and the mesh (none on
/// the tunnel's serving side, so tunnelled requests are answered locally and never travel on).
#[derive(Clone)]
pub struct AppState {
    pub local: LocalSlot,
    pub mesh: Option<Mesh>,
}

// The tunnel server refuses bodies larger than this API accepts, and none that it accepts.
const _: () =
    assert!(validate::MAX_BODY_BYTES as u64 == crate::mesh::net::tunnel_server::MAX_BODY_BYTES);

/// The routes the web console chats through, for mounting on the management port beside it
/// (same handlers and limits; no fallbacks, so it merges into another router).
pub fn console_router(local: LocalSlot, mesh: Option<Mesh>) -> Router {
    Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .layer(DefaultBodyLimit::max(validate::MAX_BODY_BYTES))
        .with_state(AppState { local, mesh })
}

pub use handlers::body_bytes;
pub use stream::Flavor;

/// Every model this port serves, each once: this node's own, then the mesh's.
pub fn model_names(state: &AppState) -> Vec<String> {
    handlers::model_names(state)
}

/// Answers a validated-or-not OpenAI body as `/v1/chat/completions` ([`Flavor::Chat`]) or
/// `/v1/completions` ([`Flavor::Text`]) would for a local user: the same validation, routing
/// and forwarding. Other APIs of this port (Ollama's) translate into this.
pub async fn answer(state: AppState, flavor: Flavor, body: Bytes) -> Result<Response, ApiError> {
    match flavor {
        Flavor::Chat => handlers::chat_completions(State(state), None, Ok(body)).await,
        Flavor::Text => handlers::completions(State(state), None, Ok(body)).await,
    }
}

pub fn router(local: LocalSlot, mesh: Option<Mesh>) -> Router {
    Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .layer(DefaultBodyLimit::max(validate::MAX_BODY_BYTES))
        .with_state(AppState { local, mesh })
}
