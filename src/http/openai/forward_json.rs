//! Requests whose answer is one JSON document, not a stream (`/v1/embeddings`), for a model
//! this node does not serve: over the HTTP tunnel to a peer that does.
//!
//! The same rules as `forward` where they apply: replicas best first, at most
//! [`MAX_ATTEMPTS`]; a replica that cannot be reached, misses a deadline, answers 5xx, answers
//! `model_not_found`, or sends something that is not a JSON object (or more than
//! [`MAX_ANSWER_BYTES`]) is reported to the health table and the next one is tried; other 4xx
//! answers go to the client as they are. Nothing reaches the client before a whole answer is in.
//! The replica sends the answer's head as soon as the work is queued, then spaces while it
//! computes (`embeddings`), so a batch longer than the tunnel's `HEAD_TIMEOUT` still arrives;
//! an error it found after its 200 head comes as the body (an OpenAI error object): a request
//! error goes to the client as a 400, any other is this replica failing.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::Full;
use hyper::body::Incoming;
use iroh::EndpointId;
use serde_json::Value;

use super::forward::{next_host, no_host, MAX_ANSWER_BYTES, MAX_ATTEMPTS, MAX_ERROR_BODY_BYTES};
use crate::http::error::ApiError;
use crate::mesh::net::tunnel;
use crate::mesh::state::routing::{self, Need};
use crate::mesh::{Attempt, Mesh};

/// Sends `body` (the client's, validated and unchanged) for `model` to `path` on the best
/// replica that answers properly.
pub async fn forward(
    mesh: &Mesh,
    model: &str,
    path: &'static str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let need = Need {
        tokens: routing::estimate_tokens(body.len()),
        ..Need::default()
    };
    let mut tried: Vec<EndpointId> = Vec::new();
    let mut last_error: Option<String> = None;
    let mut waited = Duration::ZERO;
    while tried.len() < MAX_ATTEMPTS {
        let Some((mut attempt, _)) = next_host(mesh, model, &tried, &need, &mut waited).await
        else {
            break;
        };
        tried.push(attempt.peer());
        match try_host(mesh, &mut attempt, path, body.clone()).await {
            Ok(response) => return Ok(response),
            Err(reason) => {
                attempt.failed();
                tracing::warn!(model, "{reason}; trying another host");
                last_error = Some(reason);
            }
        }
    }
    Err(match last_error {
        None if !mesh.has_seen_model(model) => ApiError::model_not_found(model),
        None => no_host(model),
        Some(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_unavailable",
            format!(
                "every node serving model '{model}' failed ({} tried); last error: {e}",
                tried.len()
            ),
        ),
    })
}

/// One try on one replica: the response for the client, or why this replica failed.
async fn try_host(
    mesh: &Mesh,
    attempt: &mut Attempt,
    path: &'static str,
    body: Bytes,
) -> Result<Response, String> {
    let peer = attempt.peer();
    let name = peer.fmt_short().to_string();
    let request = hyper::Request::post(path)
        .header(header::HOST, "mesh")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| format!("cannot build request: {e}"))?;
    let response = mesh
        .tunnel()
        .request(peer, request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let mut incoming = response.into_body();
    if !status.is_success() && !status.is_client_error() {
        return Err(format!("node {name} answered {status}"));
    }
    let limit = if status.is_success() {
        MAX_ANSWER_BYTES
    } else {
        MAX_ERROR_BODY_BYTES
    };
    let bytes = read_all(&mut incoming, &peer, limit)
        .await
        .map_err(|e| format!("node {name}: {e}"))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| format!("node {name} answered {status} with something other than JSON"))?;
    if status.is_success() && doc.get("error").is_some() {
        if doc["error"]["type"] == "invalid_request_error" && doc["error"]["message"].is_string() {
            attempt.answered();
            attempt.completed();
            return Ok((StatusCode::BAD_REQUEST, Json(doc)).into_response());
        }
        return Err(format!("node {name} failed: {}", doc["error"]["message"]));
    }
    if status.is_client_error() {
        if !doc["error"]["message"].is_string() {
            return Err(format!(
                "node {name} answered {status} without an error object"
            ));
        }
        if doc["error"]["code"] == "model_not_found" {
            return Err(format!("node {name} does not serve the model"));
        }
    }
    attempt.answered();
    attempt.completed();
    Ok((status, Json(doc)).into_response())
}

/// A replica's whole body, at most `limit` bytes.
async fn read_all(body: &mut Incoming, peer: &EndpointId, limit: usize) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    while let Some(b) = tunnel::next_chunk(body, peer)
        .await
        .map_err(|e| e.to_string())?
    {
        all.extend_from_slice(&b);
        if all.len() > limit {
            return Err(format!("answer over {limit} bytes"));
        }
    }
    Ok(all)
}
