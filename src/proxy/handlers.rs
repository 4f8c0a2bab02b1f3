//! Handlers of the OpenAI routes: validate, template, tokenize, submit, answer.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::stream::{self, Flavor};
use super::validate::{self, ChatCompletionRequest, CompletionRequest, Options, MAX_BODY_BYTES};
use super::AppState;
use crate::engine::{Engine, Event, EventStream, FinishReason, GenerateRequest, Usage};

pub async fn models(State(state): State<AppState>) -> Json<Value> {
    let info = state.engine.info();
    Json(json!({
        "object": "list",
        "data": [{"id": info.name, "object": "model", "created": info.created, "owned_by": "mesh"}],
    }))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: ChatCompletionRequest = validate::parse(&body)?;
    check_model(&state.engine, &req.model)?;
    let messages = validate::chat_messages(req.messages)?;
    let options = validate::options(req.options)?;
    let engine = state.engine.clone();
    // Templating and tokenizing a long conversation is CPU work: keep it off the async workers.
    let prompt = tokio::task::spawn_blocking(move || {
        engine
            .apply_chat_template(&messages)
            .map(|text| engine.tokenize(&text))
    })
    .await
    .map_err(|e| ApiError::bad_request(format!("tokenizer failed: {e}")))??;
    generate(&state.engine, prompt, options, Flavor::Chat).await
}

pub async fn completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: CompletionRequest = validate::parse(&body)?;
    check_model(&state.engine, &req.model)?;
    let text = validate::prompt_text(req.prompt)?;
    let options = validate::options(req.options)?;
    let engine = state.engine.clone();
    let prompt = tokio::task::spawn_blocking(move || engine.tokenize(&text))
        .await
        .map_err(|e| ApiError::bad_request(format!("tokenizer failed: {e}")))?;
    generate(&state.engine, prompt, options, Flavor::Text).await
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(MAX_BODY_BYTES)
        } else {
            ApiError::bad_request(format!("cannot read request body: {rejection}"))
        }
    })
}

fn check_model(engine: &Engine, model: &str) -> Result<(), ApiError> {
    if model == engine.info().name {
        Ok(())
    } else {
        Err(ApiError::model_not_found(model))
    }
}

async fn generate(
    engine: &Engine,
    prompt: Vec<i32>,
    o: Options,
    flavor: Flavor,
) -> Result<Response, ApiError> {
    let events = engine.submit(GenerateRequest {
        prompt,
        sampling: o.sampling,
        max_tokens: o.max_tokens,
        stop: o.stop,
    })?;
    let meta = stream::Meta::new(flavor, &engine.info().name);
    if o.stream {
        return Ok(stream::sse(events, meta, o.include_usage).into_response());
    }
    let (text, finish, usage) = collect(events).await?;
    Ok(Json(meta.complete(&text, finish, usage)).into_response())
}

/// Gathers a whole answer for a non-streaming request.
async fn collect(mut events: EventStream) -> Result<(String, FinishReason, Usage), ApiError> {
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, usage } => return Ok((text, finish, usage)),
            Event::Error(e) => return Err(generation_failed(e)),
        }
    }
    Err(generation_failed("engine stopped".into()))
}

pub fn generation_failed(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "generation_failed",
        message,
    )
}
