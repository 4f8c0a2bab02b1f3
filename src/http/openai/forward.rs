//! Requests for a model this node does not serve (or whose context is too small here) go over
//! the HTTP tunnel to a peer that does.
//!
//! Replicas are tried best first (`mesh::state::routing`: health, context, free slots, load,
//! RTT), at most [`MAX_ATTEMPTS`] of them. Every request goes upstream as a stream (a
//! non-streaming one is assembled here, `assemble`), so a replica shows progress and nothing
//! reaches the client before a replica has proven itself: a replica that cannot be reached,
//! misses a deadline (`mesh::net::tunnel`), answers 5xx, or sends something that is not an
//! OpenAI event stream is reported to the mesh's health table and the next one is tried, as
//! long as no byte went to the client (for a non-streaming request: until the whole answer is
//! in). `context_length_exceeded` tries a replica with a larger context. Other 4xx answers go
//! to the client as they are. Once a stream has begun, it streams through; if it stalls or breaks
//! off, it ends with an OpenAI error chunk. No host for a model the mesh has served → 503 naming
//! it; a model no node has ever announced → 404, as on a single node.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream;
use http_body_util::Full;
use hyper::body::Incoming;
use iroh::EndpointId;
use serde_json::Value;

use super::assemble::{self, Assembled, Ending};
use super::stream::{Flavor, Meta};
use crate::http::error::ApiError;
use crate::mesh::net::tunnel::{self, TunnelError};
use crate::mesh::state::affinity::PrefixKey;
use crate::mesh::state::routing::{self, Need};
use crate::mesh::{Attempt, Mesh, Picked};

/// Most replicas one request is tried on.
pub const MAX_ATTEMPTS: usize = 4;
/// How long a request waits for a half-open host's trial before it goes to a host anyway.
pub const TRIAL_WAIT: Duration = Duration::from_secs(5);
/// Largest error body read from a replica (a 4xx passed on to the client).
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Largest answer assembled for a non-streaming request (text), and largest single SSE event.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of a relayed stream kept to judge how it ended.
const TAIL_BYTES: usize = 16 * 1024;

/// A validated request for a model served elsewhere.
pub struct Forwarded<'a> {
    pub model: &'a str,
    pub path: &'static str,
    /// The client's body, validated and unchanged.
    pub body: Bytes,
    pub flavor: Flavor,
    pub stream: bool,
    /// Bytes of prompt text, for the token estimate routing uses.
    pub prompt_bytes: usize,
    /// This node refused the prompt as too long for this context: prefer larger ones.
    pub refused_ctx: u32,
    /// The prompt's prefix, to prefer the replica whose KV cache holds it ([`chat_key`]).
    pub prefix: PrefixKey,
}

/// The prefix key of a chat prompt: its messages' roles and contents, in order.
pub fn chat_key<'a>(
    model: &str,
    messages: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> PrefixKey {
    PrefixKey::of(
        model,
        messages
            .into_iter()
            .flat_map(|(role, content)| [role.as_bytes(), content.as_bytes()]),
    )
}

/// The prefix key of a plain prompt.
pub fn text_key(model: &str, text: &str) -> PrefixKey {
    PrefixKey::of(model, [text.as_bytes()])
}

/// The next replica to try for `model`: the best one not in `tried`, waiting while every one
/// left is half-open with its trial running (at most [`TRIAL_WAIT`] in all, counted in
/// `waited`; then a host on trial is taken anyway). `None`: no replica left.
pub(super) async fn next_host(
    mesh: &Mesh,
    model: &str,
    tried: &[EndpointId],
    need: &Need,
    waited: &mut Duration,
) -> Option<(Attempt, u32)> {
    loop {
        let mut changes = mesh.watch_health();
        changes.borrow_and_update();
        match mesh.pick(model, tried, need, *waited >= TRIAL_WAIT) {
            Picked::Host { attempt, ctx } => return Some((attempt, ctx)),
            Picked::Wait => {
                let start = Instant::now();
                let woke = tokio::time::timeout(TRIAL_WAIT - *waited, changes.changed()).await;
                *waited = match woke {
                    Ok(Ok(())) => *waited + start.elapsed(),
                    _ => TRIAL_WAIT,
                };
            }
            Picked::Nothing => return None,
        }
    }
}

/// How one try went.
enum Tried {
    /// The response for the client.
    Served(Response),
    /// This replica failed; try another. The reason is kept for the final error.
    Failed(String),
    /// The prompt is too long for this replica's context: try a larger one.
    TooLong(Response),
}

/// Sends the request to the best replica that answers properly.
pub async fn forward(mesh: &Mesh, req: Forwarded<'_>) -> Result<Response, ApiError> {
    let upstream = if req.stream {
        req.body.clone()
    } else {
        as_stream(&req.body)?
    };
    let mut need = Need {
        tokens: routing::estimate_tokens(req.prompt_bytes),
        refused_ctx: req.refused_ctx,
        prefers: mesh.prefix_host(req.model, &req.prefix),
    };
    let mut tried: Vec<EndpointId> = Vec::new();
    let mut last_error: Option<String> = None;
    let mut too_long: Option<Response> = None;
    let mut waited = Duration::ZERO;
    while tried.len() < MAX_ATTEMPTS {
        let Some((attempt, ctx)) = next_host(mesh, req.model, &tried, &need, &mut waited).await
        else {
            break;
        };
        tried.push(attempt.peer());
        mesh.remember_prefix(&req.prefix, attempt.peer());
        match try_host(mesh, attempt, &req, upstream.clone()).await {
            Tried::Served(response) => return Ok(response),
            Tried::Failed(reason) => {
                tracing::warn!(model = req.model, "{reason}; trying another host");
                last_error = Some(reason);
            }
            Tried::TooLong(response) => {
                tracing::debug!(
                    model = req.model,
                    ctx,
                    "prompt too long; trying a larger context"
                );
                need.refused_ctx = need.refused_ctx.max(ctx);
                too_long = Some(response);
            }
        }
    }
    if let Some(response) = too_long {
        return Ok(response);
    }
    Err(match last_error {
        None if !mesh.has_seen_model(req.model) => ApiError::model_not_found(req.model),
        None => no_host(req.model),
        Some(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_unavailable",
            format!(
                "every node serving model '{}' failed ({} tried); last error: {e}",
                req.model,
                tried.len()
            ),
        ),
    })
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

/// The client's body asking for a stream with usage (a non-streaming request is assembled here).
fn as_stream(body: &Bytes) -> Result<Bytes, ApiError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("cannot read request body: {e}")))?;
    let Some(o) = v.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    o.insert("stream".into(), Value::Bool(true));
    o.insert(
        "stream_options".into(),
        serde_json::json!({"include_usage": true}),
    );
    Ok(Bytes::from(v.to_string()))
}

/// One try on one replica; the outcome goes to the mesh's health table through `attempt`.
async fn try_host(
    mesh: &Mesh,
    mut attempt: Attempt,
    req: &Forwarded<'_>,
    upstream: Bytes,
) -> Tried {
    let peer = attempt.peer();
    let name = peer.fmt_short().to_string();
    let request = hyper::Request::post(req.path)
        .header(header::HOST, "mesh")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(upstream));
    let request = match request {
        Ok(r) => r,
        Err(e) => return failed(&mut attempt, format!("cannot build request: {e}")),
    };
    let response = match mesh.tunnel().request(peer, request).await {
        Ok(r) => r,
        Err(e) => return failed(&mut attempt, e.to_string()),
    };
    let status = response.status();
    let (parts, mut body) = response.into_parts();
    if status.is_client_error() {
        return match read_error(&mut body, &peer).await {
            // A replica that does not serve the model (any more): another may.
            Ok(error) if error["error"]["code"] == "model_not_found" => failed(
                &mut attempt,
                format!("node {name} does not serve the model"),
            ),
            Ok(error) => {
                attempt.answered();
                attempt.completed();
                let too_long = error["error"]["code"] == "context_length_exceeded";
                let response = (status, Json(error)).into_response();
                if too_long {
                    Tried::TooLong(response)
                } else {
                    Tried::Served(response)
                }
            }
            Err(reason) => failed(
                &mut attempt,
                format!("node {name} answered {status}: {reason}"),
            ),
        };
    }
    if !status.is_success() {
        return failed(&mut attempt, format!("node {name} answered {status}"));
    }
    let sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if !sse {
        return failed(
            &mut attempt,
            format!("node {name} answered something other than an event stream"),
        );
    }
    let first = loop {
        match tunnel::next_chunk(&mut body, &peer).await {
            Ok(Some(b)) if b.is_empty() => continue,
            Ok(Some(b)) => break b,
            Ok(None) => return failed(&mut attempt, format!("node {name} sent an empty stream")),
            Err(e) => return failed(&mut attempt, e.to_string()),
        }
    };
    if !assemble::looks_like_sse(&first) {
        return failed(
            &mut attempt,
            format!("node {name} sent garbage instead of an event stream"),
        );
    }
    attempt.answered();
    if req.stream {
        return Tried::Served(relay(first, body, attempt));
    }
    match collect(first, &mut body, &peer).await {
        Ok(Assembled::Answer { choices, usage }) => {
            attempt.completed();
            let meta = Meta::new(req.flavor, req.model);
            Tried::Served(Json(meta.complete(&choices, usage)).into_response())
        }
        Ok(Assembled::Failed(message)) => failed(
            &mut attempt,
            format!("generation failed on node {name}: {message}"),
        ),
        Err(reason) => failed(&mut attempt, format!("node {name}: {reason}")),
    }
}

fn failed(attempt: &mut Attempt, reason: String) -> Tried {
    attempt.failed();
    Tried::Failed(reason)
}

/// A replica's 4xx body: must be an OpenAI error object.
async fn read_error(body: &mut Incoming, peer: &EndpointId) -> Result<Value, String> {
    let mut bytes = Vec::new();
    while let Some(b) = tunnel::next_chunk(body, peer)
        .await
        .map_err(|e| e.to_string())?
    {
        bytes.extend_from_slice(&b);
        if bytes.len() > MAX_ERROR_BODY_BYTES {
            return Err(format!("error body over {MAX_ERROR_BODY_BYTES} bytes"));
        }
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| "not a JSON error".to_owned())?;
    if v["error"]["message"].is_string() {
        Ok(v)
    } else {
        Err("not an OpenAI error object".into())
    }
}

/// The rest of a replica's stream, assembled into one answer (bounded by [`MAX_ANSWER_BYTES`]).
async fn collect(
    first: Bytes,
    body: &mut Incoming,
    peer: &EndpointId,
) -> Result<Assembled, String> {
    let mut all = first.to_vec();
    while let Some(b) = tunnel::next_chunk(body, peer)
        .await
        .map_err(|e| e.to_string())?
    {
        all.extend_from_slice(&b);
        if all.len() > MAX_ANSWER_BYTES {
            return Err(format!("answer over {MAX_ANSWER_BYTES} bytes"));
        }
    }
    assemble::assemble(&all).map_err(|e| e.to_string())
}

/// Streams the replica's SSE to the client, `first` first. Each piece must come within the
/// tunnel's idle deadline; a stream that stalls, breaks or ends without `[DONE]` ends with an
/// error chunk. The attempt (outstanding count, health) lives until the stream ends.
fn relay(first: Bytes, body: Incoming, attempt: Attempt) -> Response {
    struct Relay {
        first: Option<Bytes>,
        body: Incoming,
        attempt: Attempt,
        tail: Vec<u8>,
    }
    impl Relay {
        fn keep(&mut self, b: &Bytes) {
            self.tail.extend_from_slice(b);
            if self.tail.len() > 2 * TAIL_BYTES {
                self.tail.drain(..self.tail.len() - TAIL_BYTES);
            }
        }
    }
    let state = Relay {
        first: Some(first),
        body,
        attempt,
        tail: Vec::new(),
    };
    let chunks = stream::unfold(Some(state), |state| async move {
        let mut s = state?;
        if let Some(b) = s.first.take() {
            s.keep(&b);
            return Some((Ok::<_, std::io::Error>(b), Some(s)));
        }
        let peer = s.attempt.peer();
        let broke = match tunnel::next_chunk(&mut s.body, &peer).await {
            Ok(Some(b)) => {
                s.keep(&b);
                return Some((Ok(b), Some(s)));
            }
            Ok(None) => match assemble::ending(&s.tail) {
                Ending::Done => {
                    s.attempt.completed();
                    return None;
                }
                Ending::Error => {
                    s.attempt.failed();
                    return None;
                }
                Ending::Cut => "the stream ended early".to_owned(),
            },
            Err(TunnelError::Deadline { after, .. }) => format!("stalled for {after:?}"),
            Err(e) => e.to_string(),
        };
        s.attempt.failed();
        tracing::warn!("remote stream broke off: {broke}");
        let err =
            ApiError::generation_failed(format!("the node serving this model went away: {broke}"));
        Some((Ok(Bytes::from(err.sse_chunk())), None))
    });
    let mut out = Response::new(Body::from_stream(chunks));
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    out
}
