//! The management API (default 127.0.0.1:3131): `GET /api/status` for people and scripts.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::engine::Engine;

pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .with_state(engine)
}

async fn status(State(engine): State<Engine>) -> Json<Value> {
    let info = engine.info();
    let stats = engine.stats();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "model": info.name,
        "model_path": info.path,
        "context_size": info.ctx,
        "context_train": info.n_ctx_train,
        "threads": info.threads,
        "slots": {"busy": stats.slots_busy, "total": info.parallel},
        "queue": {"length": stats.queue_len, "capacity": info.queue_capacity},
        "requests_served": stats.requests_served,
        "prompt_tokens": stats.prompt_tokens,
        "tokens_generated": stats.tokens_generated,
        "decode_tokens_per_second": stats.decode_tokens_per_second,
        "tokens_per_second_last_minute": stats.tokens_per_second_last_minute,
        "shutting_down": engine.is_shutting_down(),
    }))
}
