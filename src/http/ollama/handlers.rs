//! Handlers of the Ollama routes. Generation goes through the OpenAI handlers
//! ([`openai::answer`]: the same validation, routing and forwarding to other nodes), always as an
//! event stream, read back by [`Reader`] into Ollama's NDJSON chunks or its whole answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::reply::{self, Piece, Reader, Reply, Shape, Timing};
use super::request::{self, Generate, Translated};
use crate::http::error::ApiError;
use crate::http::openai::body_bytes;
use crate::http::openai::{self, AppState, Flavor};
use crate::mesh::state::routing::Need;

/// The Ollama API version `GET /api/version` reports: the one whose endpoints and shapes this
/// port follows (clients check it before using newer fields).
pub const OLLAMA_VERSION: &str = "0.6.0";
/// Largest answer gathered for a request with `"stream": false`, in bytes of text.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Largest error body read back from the OpenAI handlers (a replica's 4xx passed on).
const MAX_ERROR_BYTES: usize = 64 * 1024;

pub async fn version() -> Json<Value> {
    Json(json!({ "version": OLLAMA_VERSION }))
}

/// `GET /api/tags`: every model of the mesh, as Ollama lists its installed models.
pub async fn tags(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = openai::model_names(&state)
        .into_iter()
        .map(|name| {
            let mut m = describe(&name);
            m["modified_at"] = json!(reply::rfc3339(now_ns()));
            m
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `GET /api/ps`: the models Ollama would have loaded: every model of the mesh is loaded
/// somewhere, with the largest context a replica offers.
pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let expires = reply::rfc3339(now_ns() + Duration::from_secs(24 * 3600).as_nanos());
    let models: Vec<Value> = openai::model_names(&state)
        .into_iter()
        .map(|name| {
            let mut m = describe(&name);
            m["expires_at"] = json!(expires);
            m["size_vram"] = json!(0);
            m["context_length"] = json!(context_length(&state, &name));
            m
        })
        .collect();
    Json(json!({ "models": models }))
}

/// `POST /api/show`: what is known of one model of the mesh.
pub async fn show(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let name = match body_bytes(body).and_then(|b| request::show(&b)) {
        Ok(name) => name,
        Err(e) => return ollama_error(e),
    };
    if !openai::model_names(&state).contains(&name) {
        return not_found(&name);
    }
    let described = describe(&name);
    Json(json!({
        "modelfile": format!("# served by mesh\nFROM {name}\n"),
        "parameters": "",
        "template": "",
        "details": described["details"],
        "model_info": {
            "general.basename": name,
            "mesh.context_length": context_length(&state, &name),
        },
        "capabilities": ["completion"],
        "modified_at": reply::rfc3339(now_ns()),
    }))
    .into_response()
}

/// `POST /api/chat`.
pub async fn chat(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    match body_bytes(body).and_then(|b| request::chat(&b)) {
        Ok(req) => run(state, req, Shape::Chat, Flavor::Chat).await,
        Err(e) => ollama_error(e),
    }
}

/// `POST /api/generate`.
pub async fn generate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body_bytes(body).and_then(|b| request::generate(&b)) {
        Ok(Generate::Run { raw, request }) => {
            let flavor = if raw { Flavor::Text } else { Flavor::Chat };
            run(state, request, Shape::Generate, flavor).await
        }
        Ok(Generate::Load { model, stream }) => {
            if !openai::model_names(&state).contains(&model) {
                return not_found(&model);
            }
            let r = Reply {
                shape: Shape::Generate,
                model,
            };
            let done = r.done("", "load", Default::default(), Timing::default(), now_ns());
            if stream {
                ndjson(Body::from(format!("{done}\n")))
            } else {
                Json(done).into_response()
            }
        }
        Err(e) => ollama_error(e),
    }
}

/// Asks the OpenAI handlers and answers in Ollama's shape, streamed or whole.
async fn run(state: AppState, req: Translated, shape: Shape, flavor: Flavor) -> Response {
    let start = Instant::now();
    let body = Bytes::from(req.body.to_string());
    let response = match openai::answer(state, flavor, body).await {
        Ok(r) => r,
        Err(e) => return ollama_error(e),
    };
    let status = response.status();
    if !status.is_success() {
        return passed_on_error(status, response.into_body()).await;
    }
    let reply = Reply {
        shape,
        model: req.model,
    };
    let events = response.into_body().into_data_stream();
    let progress = Progress::new(start);
    if !req.stream {
        return gather(events, reply, progress).await;
    }
    let state = (
        events,
        Reader::default(),
        VecDeque::<Value>::new(),
        progress,
        false,
    );
    let lines = stream::unfold(state, move |mut s| {
        let reply = reply.clone();
        async move {
            let (events, reader, pending, progress, ended) = &mut s;
            loop {
                if let Some(v) = pending.pop_front() {
                    let line = Bytes::from(format!("{v}\n"));
                    return Some((Ok::<_, std::io::Error>(line), s));
                }
                if *ended {
                    return None;
                }
                let pieces = match events.next().await {
                    Some(Ok(bytes)) => reader.push(&bytes),
                    Some(Err(e)) => {
                        reader.finish();
                        vec![Piece::Failed(format!("the answer broke off: {e}"))]
                    }
                    None => reader.finish().into_iter().collect(),
                };
                for p in pieces {
                    *ended |= !matches!(p, Piece::Text(_));
                    pending.push_back(progress.line(&reply, p));
                }
            }
        }
    });
    ndjson(Body::from_stream(lines))
}

/// Times an answer: its start, and when the first text came.
#[derive(Debug, Clone, Copy)]
struct Progress {
    start: Instant,
    first: Option<Instant>,
}

impl Progress {
    fn new(start: Instant) -> Self {
        Self { start, first: None }
    }

    fn timing(&self) -> Timing {
        let now = Instant::now();
        let first = self.first.unwrap_or(now);
        Timing {
            total: now - self.start,
            prompt: first - self.start,
            eval: now - first,
        }
    }

    /// The NDJSON line for one piece of a stream.
    fn line(&mut self, reply: &Reply, piece: Piece) -> Value {
        match piece {
            Piece::Text(t) => {
                self.first.get_or_insert_with(Instant::now);
                reply.chunk(&t, now_ns())
            }
            Piece::Done { finish, usage } => reply.done(
                "",
                reply::done_reason(finish),
                usage,
                self.timing(),
                now_ns(),
            ),
            Piece::Failed(message) => reply::error(&message),
        }
    }
}

/// A whole answer for `"stream": false`.
async fn gather(
    mut events: impl futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
    reply: Reply,
    mut progress: Progress,
) -> Response {
    let mut reader = Reader::default();
    let mut text = String::new();
    loop {
        let pieces = match events.next().await {
            Some(Ok(bytes)) => reader.push(&bytes),
            Some(Err(e)) => vec![Piece::Failed(format!("the answer broke off: {e}"))],
            None => reader.finish().into_iter().collect(),
        };
        for p in pieces {
            match p {
                Piece::Text(t) => {
                    progress.first.get_or_insert_with(Instant::now);
                    text.push_str(&t);
                    if text.len() > MAX_ANSWER_BYTES {
                        return ollama_error(ApiError::generation_failed(format!(
                            "the answer is over {MAX_ANSWER_BYTES} bytes"
                        )));
                    }
                }
                Piece::Done { finish, usage } => {
                    let reason = reply::done_reason(finish);
                    return Json(reply.done(&text, reason, usage, progress.timing(), now_ns()))
                        .into_response();
                }
                Piece::Failed(message) => {
                    return ollama_error(ApiError::generation_failed(message))
                }
            }
        }
    }
}

/// The OpenAI handlers' error answer (a replica's 4xx passed on) in Ollama's shape.
async fn passed_on_error(status: StatusCode, body: Body) -> Response {
    let message = match axum::body::to_bytes(body, MAX_ERROR_BYTES).await {
        Ok(b) => serde_json::from_slice::<Value>(&b)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&b).into_owned()),
        Err(_) => format!("the request failed ({status})"),
    };
    (status, Json(reply::error(&message))).into_response()
}

fn ollama_error(e: ApiError) -> Response {
    (e.status, Json(reply::error(&e.message))).into_response()
}

fn not_found(model: &str) -> Response {
    ollama_error(ApiError::model_not_found(model))
}

fn ndjson(body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// The fields Ollama lists for a model. Models of the mesh are GGUF files whose details live on
/// the nodes serving them, so only the name is known for sure; the digest is the name's hash
/// (stable, and unique per name as clients expect).
fn describe(name: &str) -> Value {
    let digest = data_encoding::HEXLOWER.encode(&Sha256::digest(name.as_bytes()));
    json!({
        "name": name,
        "model": name,
        "size": 0,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "",
            "families": [],
            "parameter_size": "",
            "quantization_level": "",
        },
    })
}

/// The model's context per sequence: this node's, or the largest a replica announces.
fn context_length(state: &AppState, name: &str) -> u32 {
    if let Some(g) = state.local.get().filter(|g| g.info().name == name) {
        return g.info().ctx;
    }
    state.mesh.as_ref().map_or(0, |m| {
        let hosts = m.hosts_for(name, &[], &Need::default());
        hosts.iter().map(|c| c.ctx).max().unwrap_or(0)
    })
}

fn now_ns() -> u128 {
    u128::from(crate::util::time::unix_micros()) * 1000
}
