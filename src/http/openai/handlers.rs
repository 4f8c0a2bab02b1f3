//! Handlers of the OpenAI routes: validate, template, tokenize, submit, answer.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::forward::{self, Forwarded};
use super::stream::{self, Choice, Flavor};
use super::validate::{self, ChatCompletionRequest, CompletionRequest, Options, MAX_BODY_BYTES};
use super::AppState;
use super::{logprobs, tools};
use crate::engine::tools::{Format, ToolPrompt};
use crate::engine::{ChatMessage, Event, EventStream, GenerateRequest, Usage};
use crate::http::error::ApiError;
use crate::http::generate::Generate;
use crate::http::route::{self, Target};
use crate::http::slots::{Origin, SlotPermit};
use crate::http::upstream;
use crate::mesh::net::tunnel_server::TunnelPeer;
use crate::mesh::state::routing::Need;
use crate::mesh::Mesh;

/// Every model in the mesh: this node's own, then the peers', each once.
pub fn model_names(state: &AppState) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (engine, _) in state.local.all() {
        let name = &engine.info().name;
        if seen.insert(name.clone()) {
            names.push(name.clone());
        }
    }
    for offer in state.local.upstreams().offers() {
        if seen.insert(offer.name.clone()) {
            names.push(offer.name);
        }
    }
    if let Some(mesh) = &state.mesh {
        for name in mesh.remote_models() {
            if seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    names
}

/// `GET /v1/models`: [`model_names`], with the local models' load time; a local embedding model
/// says so (`"embedding": true`: it answers `/v1/embeddings`, not chat).
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let local: Vec<(String, u64, bool)> = state
        .local
        .all()
        .map(|(g, _)| {
            let info = g.info();
            (info.name.clone(), info.created, info.embedding)
        })
        .collect();
    let data: Vec<Value> = model_names(&state)
        .into_iter()
        .map(|name| {
            let (created, embedding) = local
                .iter()
                .find(|(l, _, _)| *l == name)
                .map_or((0, false), |(_, at, e)| (*at, *e));
            let mut v =
                json!({"id": name, "object": "model", "created": created, "owned_by": "mesh"});
            if embedding {
                v["embedding"] = json!(true);
            }
            v
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    peer: Option<Extension<TunnelPeer>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: ChatCompletionRequest = validate::parse(&body)?;
    let model = req.model;
    let turns = validate::chat_turns(req.messages)?;
    let tools = tools::tools(req.tools, req.tool_choice, req.parallel_tool_calls)?;
    let mut options = validate::options(req.options)?;
    if tools.active() && options.grammar.is_some() {
        return Err(ApiError::bad_request(
            "'tools' cannot be combined with 'response_format', 'grammar' or 'json_schema'",
        ));
    }
    let with_tools = tools::in_play(&tools, &turns);
    let tool_bytes: usize = tools
        .defs
        .iter()
        .map(|d| d.parameters.to_string().len())
        .sum();
    let mut fwd = Forwarded {
        model: &model,
        path: "/v1/chat/completions",
        body,
        flavor: Flavor::Chat,
        stream: options.stream,
        // Role markers and template text: a few bytes a message more than the content.
        prompt_bytes: turns.iter().map(|m| m.content.len() + 16).sum::<usize>() + tool_bytes,
        refused_ctx: 0,
        prefix: forward::chat_key(
            &model,
            turns.iter().map(|t| (t.role.as_str(), t.content.as_str())),
        ),
    };
    let local = match route::choose(&state.local, state.mesh.as_ref(), &model) {
        Target::Local(g) => g,
        Target::Upstream(u) => {
            return upstream::proxy::forward(u, "/chat/completions", fwd.body).await
        }
        Target::Mesh(mesh) => return forward::forward(mesh, fwd).await,
        Target::Nowhere => return Err(ApiError::model_not_found(&model)),
    };
    let engine = local.clone();
    // Templating and tokenizing a long conversation is CPU work: keep it off the async workers.
    let prepared = tokio::task::spawn_blocking(move || {
        if with_tools {
            engine.tool_prompt(&turns, &tools)
        } else {
            let messages: Vec<ChatMessage> = turns
                .into_iter()
                .map(|t| ChatMessage {
                    role: t.role,
                    content: t.content,
                })
                .collect();
            engine.chat_prompt(&messages).map(|tokens| ToolPrompt {
                tokens,
                grammar: None,
                format: Format::Text,
            })
        }
    })
    .await
    .map_err(|e| ApiError::bad_request(format!("tokenizer failed: {e}")))??;
    let prompt = prepared.tokens;
    if prepared.grammar.is_some() {
        options.grammar = prepared.grammar;
    }
    if let Some(mesh) = larger_elsewhere(&state, local.as_ref(), prompt.len()) {
        fwd.refused_ctx = local.info().ctx;
        return forward::forward(mesh, fwd).await;
    }
    let permit = take_turn(&state, &model, peer).await?;
    generate(
        local.as_ref(),
        permit,
        prompt,
        options,
        Flavor::Chat,
        prepared.format,
    )
    .await
}

pub async fn completions(
    State(state): State<AppState>,
    peer: Option<Extension<TunnelPeer>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: CompletionRequest = validate::parse(&body)?;
    let model = req.model;
    let text = validate::prompt_text(req.prompt)?;
    let options = validate::options(req.options)?;
    let mut fwd = Forwarded {
        model: &model,
        path: "/v1/completions",
        body,
        flavor: Flavor::Text,
        stream: options.stream,
        prompt_bytes: text.len(),
        refused_ctx: 0,
        prefix: forward::text_key(&model, &text),
    };
    let local = match route::choose(&state.local, state.mesh.as_ref(), &model) {
        Target::Local(g) => g,
        Target::Upstream(u) => return upstream::proxy::forward(u, "/completions", fwd.body).await,
        Target::Mesh(mesh) => return forward::forward(mesh, fwd).await,
        Target::Nowhere => return Err(ApiError::model_not_found(&model)),
    };
    let engine = local.clone();
    let prompt = tokio::task::spawn_blocking(move || engine.tokenize(&text))
        .await
        .map_err(|e| ApiError::bad_request(format!("tokenizer failed: {e}")))?;
    if let Some(mesh) = larger_elsewhere(&state, local.as_ref(), prompt.len()) {
        fwd.refused_ctx = local.info().ctx;
        return forward::forward(mesh, fwd).await;
    }
    let permit = take_turn(&state, &model, peer).await?;
    generate(
        local.as_ref(),
        permit,
        prompt,
        options,
        Flavor::Text,
        Format::Text,
    )
    .await
}

/// The mesh, when a prompt of `tokens` is too long for this node's context and some replica of
/// the model announces a larger one (tunnelled requests have no mesh: they never travel on).
fn larger_elsewhere<'a>(
    state: &'a AppState,
    local: &dyn Generate,
    tokens: usize,
) -> Option<&'a Mesh> {
    let info = local.info();
    let mesh = state.mesh.as_ref()?;
    if tokens < info.ctx as usize {
        return None;
    }
    let hosts = mesh.hosts_for(&info.name, &[], &Need::default());
    hosts.iter().any(|c| c.ctx > info.ctx).then_some(mesh)
}

/// The request body, or the error for one too large or unreadable (shared with Ollama's API).
pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(MAX_BODY_BYTES)
        } else {
            ApiError::bad_request(format!("cannot read request body: {rejection}"))
        }
    })
}

/// Waits for a slot of the local generator of `model`, in turn with the other origins (local
/// users and each peer: see `http::slots`).
async fn take_turn(
    state: &AppState,
    model: &str,
    peer: Option<Extension<TunnelPeer>>,
) -> Result<Option<SlotPermit>, ApiError> {
    let Some((_, slots)) = state.local.find(model) else {
        return Ok(None);
    };
    let origin = Origin::of(peer.map(|Extension(p)| p));
    Ok(Some(slots.acquire(origin).await?))
}

/// Submits and answers; `permit` (the slot) is held until the answer is complete or dropped.
async fn generate(
    engine: &dyn Generate,
    permit: Option<SlotPermit>,
    prompt: Vec<i32>,
    o: Options,
    flavor: Flavor,
    format: Format,
) -> Result<Response, ApiError> {
    let choices = engine.submit_choices(GenerateRequest {
        prompt,
        sampling: o.sampling,
        max_tokens: o.max_tokens,
        stop: o.stop,
        grammar: o.grammar,
        logprobs: o.logprobs,
        n: o.n,
    })?;
    let meta = stream::Meta::new(flavor, &engine.info().name).with_tools(format);
    if o.stream {
        return Ok(stream::sse(choices, meta, o.include_usage, permit).into_response());
    }
    let answers =
        futures::future::try_join_all(choices.into_iter().map(|c| collect(c, flavor, format)))
            .await?;
    drop(permit);
    let mut usage = Usage::default();
    for (_, u) in &answers {
        usage.prompt_tokens = u.prompt_tokens;
        usage.cached_tokens = u.cached_tokens;
        usage.completion_tokens += u.completion_tokens;
    }
    let choices: Vec<Choice> = answers.into_iter().map(|(c, _)| c).collect();
    Ok(Json(meta.complete(&choices, usage)).into_response())
}

/// Gathers a whole choice for a non-streaming request.
async fn collect(
    mut events: EventStream,
    flavor: Flavor,
    format: Format,
) -> Result<(Choice, Usage), ApiError> {
    let mut text = String::new();
    let mut lps = Vec::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Logprob(lp) => lps.push(lp),
            Event::Done { finish, usage } => {
                let logprobs = if lps.is_empty() {
                    Value::Null
                } else {
                    logprobs::render(flavor == Flavor::Chat, &lps, &mut 0)
                };
                return Ok((Choice::read(text, finish, logprobs, format), usage));
            }
            Event::Error(e) => return Err(ApiError::generation_failed(e)),
        }
    }
    Err(ApiError::generation_failed("engine stopped"))
}
