//! Discovery in the management API:
//! - `GET /api/discover?model=M&region=R&min_memory=GB&probe=false`: offers from this node's
//!   relays, scored (with breakdown) best first, plus rejections and relay errors.
//! - `GET /api/publish`: publishing state; `POST /api/publish {"relays": [...]}` starts
//!   publishing this node's mesh; `DELETE /api/publish` stops and deletes the offer.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use std::time::Duration;

use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::docs::{PublishDoc, PublishRequest};
use super::ApiState;
use crate::discovery::{Discovery, Filters};
use crate::http::error::ApiError;
use crate::util::time::unix_secs;

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
    let home = crate::util::home::mesh_home();
    let last = crate::discovery::load_last_mesh(&home);
    let filters = Filters {
        model: params.model,
        region: params.region,
        min_memory: params.min_memory,
    };
    let mut prefs = filters.prefs(unix_secs(), last);
    prefs.untrusted = crate::discovery::untrusted::load(&home, prefs.now);
    let found = discovery.browse(filters.query(), prefs, params.probe).await;
    Ok(Json(found.to_json()))
}

/// How long `POST /api/publish` waits for the first round, so the answer says how the relays
/// took the offer.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(12);

fn publish_doc(state: Option<crate::discovery::publish::PublishState>) -> PublishDoc {
    PublishDoc {
        publishing: state.is_some(),
        state,
        deleted: None,
    }
}

pub async fn publish_state(State(state): State<ApiState>) -> Result<Json<PublishDoc>, ApiError> {
    let discovery = discovery(&state)?;
    Ok(Json(publish_doc(discovery.publish_state().await)))
}

pub async fn start_publishing(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<PublishDoc>, ApiError> {
    let body: PublishRequest = if body.is_empty() {
        PublishRequest::default()
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
    let state = discovery
        .publish_state_after_first_round(FIRST_ROUND_WAIT)
        .await;
    Ok(Json(publish_doc(state)))
}

fn bad_relay(url: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "bad_relay",
        format!("not a relay URL {url:?}: {e}"),
    )
}

pub async fn stop_publishing(State(state): State<ApiState>) -> Result<Json<PublishDoc>, ApiError> {
    let discovery = discovery(&state)?;
    let deleted = discovery.stop_publishing().await;
    Ok(Json(PublishDoc {
        publishing: false,
        state: None,
        deleted,
    }))
}
