//! The Ollama-compatible API, on the OpenAI port (default 127.0.0.1:9337) beside OpenAI's:
//! `GET /api/tags`, `/api/version`, `/api/ps`, `POST /api/chat`, `/api/generate`, `/api/show`.
//!
//! Every model of the mesh, routed exactly like the OpenAI endpoints: `request` translates an
//! Ollama body into the OpenAI one (pure; 400 in Ollama's `{"error": "..."}` shape), the OpenAI
//! handlers validate, route and forward it (`openai::answer`), and `reply` turns their event
//! stream back into Ollama's NDJSON chunks (streamed by default, as Ollama does) or one answer
//! (`"stream": false`). Files: `request` and `reply` (pure), `handlers`.

mod handlers;
pub mod reply;
pub mod request;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

pub use handlers::OLLAMA_VERSION;

use super::generate::LocalSlot;
use super::openai::validate::MAX_BODY_BYTES;
use super::openai::AppState;
use crate::mesh::Mesh;

/// The Ollama routes, to be merged into the OpenAI port's router (no fallback of their own).
pub fn router(local: LocalSlot, mesh: Option<Mesh>) -> Router {
    Router::new()
        .route("/api/version", get(handlers::version))
        .route("/api/tags", get(handlers::tags))
        .route("/api/ps", get(handlers::ps))
        .route("/api/show", post(handlers::show))
        .route("/api/chat", post(handlers::chat))
        .route("/api/generate", post(handlers::generate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState { local, mesh })
}
