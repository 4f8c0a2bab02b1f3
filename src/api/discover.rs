//! Discovery in the management API:
//! - `GET /api/discover?model=M&region=R&min_memory=GB&probe=false`: offers from this node's
//!   relays, scored (with breakdown) best first, plus rejections and relay errors.
//! - `GET /api/publish`: publishing state; `POST /api/publish {"relays": [...]}` starts
//!   publishing this node's mesh; `DELETE /api/publish` stops and deletes the offer.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ApiState;
use crate::discovery::{publish::unix_now, Discovery, Filters};
use crate::proxy::error::ApiError;

/// Query parameters (not `#[serde(flatten)]`ed from `Filters`: flattening breaks numbers in
/// query strings).
#[derive(Debug, Deserialize)]
pub struct DiscoverParams {
    model: Option<String>,
    region: Option<String>,
    min_memory: Option<f64>,
    #[serde(default = "yes")]
    probe: bool,
}

fn yes() -> bool {
    true
}

fn discovery(state: &ApiState) -> Result<&Discovery, ApiError> {
    state
        .discovery
        .as_ref()
        .ok_or_else(|| ApiError::conflict("no_discovery", "this node has no discovery configured"))
}

pub async fn discover(
    State(state): State<ApiState>,
    Query(params): Query<DiscoverParams>,
) -> Result<Json<Value>, ApiError> {
    let discovery = discovery(&state)?;
    let last = crate::discovery::load_last_mesh(&crate::config::mesh_home());
    let filters = Filters {
        model: params.model,
        region: params.region,
        min_memory: params.min_memory,
    };
    let prefs = filters.prefs(unix_now(), last);
    let found = discovery.browse(filters.query(), prefs, params.probe).await;
    Ok(Json(found.to_json()))
}

#[derive(Debug, Default, Deserialize)]
pub struct PublishBody {
    #[serde(default)]
    relays: Vec<String>,
}

pub async fn publish_state(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let discovery = discovery(&state)?;
    Ok(Json(match discovery.publish_state().await {
        Some(s) => json!({"publishing": true, "state": s}),
        None => json!({"publishing": false}),
    }))
}

pub async fn start_publishing(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: PublishBody = if body.is_empty() {
        PublishBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!("expected {{\"relays\": [\"wss://…\"]}}: {e}"))
        })?
    };
    let discovery = discovery(&state)?;
    let mesh = super::mesh_of(&state)?;
    let relays = body
        .relays
        .iter()
        .map(|r| nostr::RelayUrl::parse(r).map_err(|e| bad_relay(r, &e)))
        .collect::<Result<Vec<_>, _>>()?;
    discovery.start_publishing(mesh, Some(relays)).await;
    // Give the first round a moment so the answer says how the relays took it.
    for _ in 0..60 {
        if let Some(s) = discovery.publish_state().await {
            if !s.relays.is_empty() {
                return Ok(Json(json!({"publishing": true, "state": s})));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    publish_state(State(state)).await
}

fn bad_relay(url: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "bad_relay",
        format!("not a relay URL {url:?}: {e}"),
    )
}

pub async fn stop_publishing(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let discovery = discovery(&state)?;
    Ok(Json(match discovery.stop_publishing().await {
        Some(reports) => json!({"publishing": false, "deleted": reports}),
        None => json!({"publishing": false}),
    }))
}
