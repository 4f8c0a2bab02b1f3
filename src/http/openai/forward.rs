//! Requests for a model this node does not serve go over the HTTP tunnel to a peer that does.
//!
//! Replicas are tried best first (`mesh::state::routing`). A peer that fails before answering — cannot
//! connect, stream broken, or 503 (overloaded) — is skipped and the next one tried. Once a
//! response has begun, it streams through unchanged; if it breaks off, an SSE stream ends with
//! an OpenAI error chunk. No host for a model the mesh has served → 503 naming it; a model no
//! node has ever announced → 404, as on a single node.

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Full};
use iroh::EndpointId;

use crate::http::error::ApiError;
use crate::mesh::Mesh;

/// Sends `body` (already validated) for `model` to the best peer serving it.
pub async fn forward(
    mesh: &Mesh,
    model: &str,
    path: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut tried: Vec<EndpointId> = Vec::new();
    let mut last_error = None;
    loop {
        let Some(peer) = mesh.hosts_for(model, &tried).into_iter().next() else {
            return Err(match last_error {
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
            });
        };
        tried.push(peer);
        let guard = mesh.outstanding(peer);
        let request = hyper::Request::post(path)
            .header(header::HOST, "mesh")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| ApiError::bad_request(format!("cannot build request: {e}")))?;
        let response = match mesh.tunnel().request(peer, request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(model, "{e}; trying another host");
                last_error = Some(e.to_string());
                continue;
            }
        };
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            tracing::debug!(model, peer = %peer.fmt_short(), "host overloaded; trying another");
            last_error = Some(format!("node {} answered 503", peer.fmt_short()));
            continue;
        }
        tracing::debug!(model, peer = %peer.fmt_short(), status = %response.status(), "forwarded");
        return Ok(relay(response, guard));
    }
}

pub fn no_host(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "model_unavailable",
        format!(
            "no node in the mesh serves model '{model}' right now; GET /v1/models lists the models"
        ),
    )
}

/// Streams the peer's response to the client. The guard keeps the request counted as outstanding
/// until the body ends.
fn relay(
    response: hyper::Response<hyper::body::Incoming>,
    guard: crate::mesh::Outstanding,
) -> Response {
    let (parts, body) = response.into_parts();
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let chunks = body.into_data_stream();
    let body = stream::unfold(Some((chunks, guard)), move |state| async move {
        let (mut chunks, guard) = state?;
        match chunks.next().await {
            Some(Ok(bytes)) => Some((Ok::<_, std::io::Error>(bytes), Some((chunks, guard)))),
            Some(Err(e)) if sse => {
                tracing::warn!("remote stream broke off: {e}");
                let err = ApiError::generation_failed(format!(
                    "the node serving this model went away: {e}"
                ));
                Some((Ok(Bytes::from(err.sse_chunk())), None))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), None)),
            None => None,
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = parts.status;
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}
