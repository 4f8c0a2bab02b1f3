//! `POST /v1/embeddings` in OpenAI's shape: `input` is a string, an array of strings, an array
//! of token ids or an array of such arrays; `encoding_format` is `float` (default) or `base64`
//! (little-endian f32s, as OpenAI's clients decode them). One vector per input, in order, from
//! the model's engine (`engine::embed`: pooled as the model declares, normalised); a model
//! served elsewhere goes over the mesh (`forward_json`), as chat does.
//!
//! A request that came over the tunnel gets its head (200) as soon as its inputs are queued, and
//! its body is a space every [`KEEP_ALIVE`] until the document (JSON allows leading whitespace):
//! a big batch can take longer than the forwarding node's `tunnel::HEAD_TIMEOUT`, and the spaces
//! keep the body within its `tunnel::IDLE_TIMEOUT`, so a slow batch is told from a dead replica.
//! An error found after the head (the engine failed, `dimensions` does not match) is the body
//! instead: an OpenAI error object, which `forward_json` reads as such.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::stream;
use serde::Deserialize;
use serde_json::{json, Value};

use super::forward_json;
use super::stream::KEEP_ALIVE;
use super::validate::{self, MAX_BODY_BYTES};
use super::AppState;
use crate::engine::{EmbedInput, Embeddings};
use crate::http::error::ApiError;
use crate::http::route::{self, Target};
use crate::mesh::net::tunnel_server::TunnelPeer;

/// Most inputs one request may hold (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Accepted when it equals the model's width (this API cannot shorten vectors).
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// OpenAI's end-user id: accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub user: Option<Value>,
}

/// How the vectors are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

/// `encoding_format`: absent or `float`, or `base64`.
pub fn encoding(format: Option<&str>) -> Result<Encoding, ApiError> {
    match format {
        None | Some("float") => Ok(Encoding::Float),
        Some("base64") => Ok(Encoding::Base64),
        Some(other) => Err(ApiError::bad_request(format!(
            "'encoding_format' must be \"float\" or \"base64\", not {other:?}"
        ))),
    }
}

/// The inputs of `input`: a string, an array of strings, an array of token ids, or an array of
/// arrays of token ids; never empty, at most [`MAX_INPUTS`], no empty string. Pure.
pub fn inputs(input: Value) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = |m: &str| ApiError::bad_request(format!("'input' {m}"));
    let token = |v: &Value| {
        v.as_i64()
            .and_then(|t| i32::try_from(t).ok())
            .ok_or_else(|| bad("holds a token id that is not a 32-bit integer"))
    };
    let tokens = |a: &[Value]| a.iter().map(token).collect::<Result<Vec<i32>, _>>();
    let out = match input {
        Value::String(s) => vec![EmbedInput::Text(s)],
        Value::Array(items) if items.is_empty() => return Err(bad("must not be empty")),
        Value::Array(items) => match &items[0] {
            Value::Number(_) => vec![EmbedInput::Tokens(tokens(&items)?)],
            Value::String(_) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(EmbedInput::Text(s)),
                    _ => Err(bad("mixes strings with other values")),
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .map(|v| match v {
                    Value::Array(a) => Ok(EmbedInput::Tokens(tokens(a)?)),
                    _ => Err(bad("mixes token arrays with other values")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("must hold strings or token ids")),
        },
        _ => return Err(bad("must be a string or an array")),
    };
    if out.len() > MAX_INPUTS {
        return Err(bad(&format!(
            "holds {} inputs, more than {MAX_INPUTS}",
            out.len()
        )));
    }
    let empty = |i: &EmbedInput| match i {
        EmbedInput::Text(s) => s.is_empty(),
        EmbedInput::Tokens(t) => t.is_empty(),
    };
    if let Some(i) = out.iter().position(empty) {
        return Err(bad(&format!("[{i}] is empty")));
    }
    Ok(out)
}

/// The response document. Pure.
pub fn document(model: &str, e: &Embeddings, encoding: Encoding) -> Value {
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = match encoding {
                Encoding::Float => json!(v),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(data_encoding::BASE64.encode(&bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
    })
}

pub async fn embeddings(
    State(state): State<AppState>,
    peer: Option<Extension<TunnelPeer>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(MAX_BODY_BYTES)
        } else {
            ApiError::bad_request(format!("cannot read request body: {rejection}"))
        }
    })?;
    let req: EmbeddingsRequest = validate::parse(&body)?;
    let encoding = encoding(req.encoding_format.as_deref())?;
    let inputs = inputs(req.input)?;
    let local = match route::choose(&state.local, state.mesh.as_ref(), &req.model) {
        Target::Local(g) => g,
        Target::Upstream(u) => {
            return crate::http::upstream::proxy::forward(u, "/embeddings", body).await
        }
        Target::Mesh(mesh) => {
            return forward_json::forward(mesh, &req.model, "/v1/embeddings", body).await
        }
        Target::Nowhere => return Err(ApiError::model_not_found(&req.model)),
    };
    let reply = local.embed(inputs)?;
    let name = local.info().name.clone();
    let answer = async move {
        let answer = reply
            .await
            .map_err(|_| ApiError::generation_failed("the embedding thread stopped"))??;
        if let (Some(want), Some(v)) = (req.dimensions, answer.vectors.first()) {
            if want as usize != v.len() {
                return Err(ApiError::bad_request(format!(
                    "'dimensions' {want} is not supported: model '{name}' embeds in {} dimensions",
                    v.len()
                )));
            }
        }
        Ok(document(&name, &answer, encoding))
    };
    if peer.is_none() {
        return answer.await.map(|doc| Json(doc).into_response());
    }
    Ok(head_first(Box::pin(answer)))
}

/// 200 at once; a space every [`KEEP_ALIVE`] while `answer` is computed, then the document
/// (or the error object).
fn head_first(answer: Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>) -> Response {
    let body = stream::unfold(Some(answer), |pending| async move {
        let mut answer = pending?;
        tokio::select! {
            done = &mut answer => {
                let doc = done.unwrap_or_else(|e| e.body());
                Some((Ok::<_, Infallible>(Bytes::from(doc.to_string())), None))
            }
            () = tokio::time::sleep(KEEP_ALIVE) => Some((Ok(Bytes::from_static(b" ")), Some(answer))),
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[EmbedInput]) -> Vec<String> {
        v.iter()
            .map(|i| match i {
                EmbedInput::Text(s) => s.clone(),
                EmbedInput::Tokens(t) => format!("{t:?}"),
            })
            .collect()
    }

    #[test]
    fn input_may_be_a_string_strings_tokens_or_token_arrays() {
        assert_eq!(texts(&inputs(json!("a")).unwrap()), ["a"]);
        assert_eq!(texts(&inputs(json!(["a", "b"])).unwrap()), ["a", "b"]);
        assert_eq!(texts(&inputs(json!([1, 2])).unwrap()), ["[1, 2]"]);
        assert_eq!(
            texts(&inputs(json!([[1], [2, 3]])).unwrap()),
            ["[1]", "[2, 3]"]
        );
    }

    #[test]
    fn empty_mixed_oversized_and_odd_inputs_are_400() {
        for bad in [
            json!([]),
            json!(""),
            json!(["a", ""]),
            json!([[]]),
            json!(["a", 1]),
            json!([[1], 2]),
            json!([1, "a"]),
            json!([1.5]),
            json!([5_000_000_000i64]),
            json!({"text": "a"}),
            json!(7),
            json!([null]),
        ] {
            let err = inputs(bad.clone()).expect_err(&bad.to_string());
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let many = Value::Array(vec![json!("x"); MAX_INPUTS + 1]);
        assert!(inputs(many).is_err());
        assert!(inputs(Value::Array(vec![json!("x"); MAX_INPUTS])).is_ok());
    }

    #[test]
    fn base64_holds_the_same_little_endian_floats() {
        let e = Embeddings {
            vectors: vec![vec![0.6, -0.8], vec![1.0, 0.0]],
            prompt_tokens: 5,
        };
        let floats = document("m", &e, Encoding::Float);
        assert_eq!(floats["data"][1]["index"], 1);
        assert_eq!(floats["usage"]["prompt_tokens"], 5);
        let b64 = document("m", &e, Encoding::Base64);
        for (i, v) in e.vectors.iter().enumerate() {
            let text = b64["data"][i]["embedding"].as_str().unwrap();
            let bytes = data_encoding::BASE64.decode(text.as_bytes()).unwrap();
            let back: Vec<f32> = bytes
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(&back, v);
        }
        assert!(encoding(Some("int8")).is_err());
        assert_eq!(encoding(None).unwrap(), Encoding::Float);
    }
}
