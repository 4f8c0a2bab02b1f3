//! Ollama request bodies (`/api/chat`, `/api/generate`, `/api/show`) and their translation into
//! the OpenAI request the OpenAI handlers validate and route. Pure: bytes in, an OpenAI body (or
//! a 400) out. Options map as Ollama documents them: `temperature`, `top_p`, `top_k`, `min_p`,
//! `seed`, `stop`, `presence_penalty`, `frequency_penalty`, and `num_predict` (→ `max_tokens`;
//! negative means "no limit"). Options that only tune Ollama's own runner (`num_ctx`, `num_gpu`,
//! …) are ignored, as Ollama ignores options a model does not use; features this node cannot do
//! (images, tools, `format`, `context`, `template`, `suffix`) are refused by name.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::error::ApiError;
use crate::http::openai::validate;

/// `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatIn {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<MessageIn>,
    pub stream: Option<bool>,
    #[serde(default)]
    pub options: Option<OptionsIn>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateIn {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    pub system: Option<String>,
    pub stream: Option<bool>,
    /// No chat template: the prompt goes to the model as it is (`/v1/completions`).
    #[serde(default)]
    pub raw: bool,
    #[serde(default)]
    pub options: Option<OptionsIn>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(default)]
    pub context: Option<Vec<Value>>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
}

/// `POST /api/show`: Ollama's clients send `model` (older ones `name`).
#[derive(Debug, Deserialize)]
pub struct ShowIn {
    pub model: Option<String>,
    pub name: Option<String>,
}

/// The sampling options of Ollama's `options` object that this node understands.
#[derive(Debug, Default, Deserialize)]
pub struct OptionsIn {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub num_predict: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
}

/// A request ready for the OpenAI handlers.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub model: String,
    /// Ollama streams unless told `"stream": false`.
    pub stream: bool,
    /// The OpenAI body, always asking for a stream with usage (the answer is translated back
    /// from the events, streamed or gathered).
    pub body: Value,
}

/// What `/api/generate` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Generate {
    /// An empty prompt: Ollama loads the model and answers at once (`done_reason: "load"`).
    Load { model: String, stream: bool },
    /// A completion (`/v1/completions` when `raw`, else a chat turn).
    Run { raw: bool, request: Translated },
}

pub fn chat(body: &[u8]) -> Result<Translated, ApiError> {
    let req: ChatIn = validate::parse(body)?;
    refuse("format", req.format.as_ref().is_some_and(given))?;
    refuse("tools", req.tools.as_ref().is_some_and(|t| !t.is_empty()))?;
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        if m.images.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "messages[{i}].images: images are not supported (text only)"
            )));
        }
        messages.push(json!({"role": m.role, "content": m.content}));
    }
    let stream = req.stream.unwrap_or(true);
    let mut body = openai_body(&req.model, req.options)?;
    body.insert("messages".into(), Value::Array(messages));
    Ok(Translated {
        model: req.model,
        stream,
        body: Value::Object(body),
    })
}

pub fn generate(body: &[u8]) -> Result<Generate, ApiError> {
    let req: GenerateIn = validate::parse(body)?;
    refuse("format", req.format.as_ref().is_some_and(given))?;
    refuse("images", req.images.as_ref().is_some_and(|v| !v.is_empty()))?;
    refuse(
        "context",
        req.context.as_ref().is_some_and(|v| !v.is_empty()),
    )?;
    refuse(
        "template",
        req.template.as_ref().is_some_and(|t| !t.is_empty()),
    )?;
    refuse("suffix", req.suffix.as_ref().is_some_and(|t| !t.is_empty()))?;
    let stream = req.stream.unwrap_or(true);
    if req.prompt.is_empty() {
        return Ok(Generate::Load {
            model: req.model,
            stream,
        });
    }
    let mut body = openai_body(&req.model, req.options)?;
    if req.raw {
        body.insert("prompt".into(), Value::String(req.prompt));
    } else {
        let mut messages = Vec::new();
        if let Some(system) = req.system.filter(|s| !s.is_empty()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        body.insert("messages".into(), Value::Array(messages));
    }
    Ok(Generate::Run {
        raw: req.raw,
        request: Translated {
            model: req.model,
            stream,
            body: Value::Object(body),
        },
    })
}

/// The model `/api/show` asks about.
pub fn show(body: &[u8]) -> Result<String, ApiError> {
    let req: ShowIn = validate::parse(body)?;
    req.model
        .or(req.name)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("'model' is required"))
}

/// The OpenAI body's model and options; the OpenAI validation checks the ranges.
fn openai_body(model: &str, options: Option<OptionsIn>) -> Result<Map<String, Value>, ApiError> {
    if model.is_empty() {
        return Err(ApiError::bad_request("'model' is required"));
    }
    let o = options.unwrap_or_default();
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(k.into(), v);
        }
    };
    put("temperature", o.temperature.map(|v| json!(v)));
    put("top_p", o.top_p.map(|v| json!(v)));
    put("top_k", o.top_k.map(|v| json!(v)));
    put("min_p", o.min_p.map(|v| json!(v)));
    put("seed", o.seed.map(|v| json!(v)));
    put("presence_penalty", o.presence_penalty.map(|v| json!(v)));
    put("frequency_penalty", o.frequency_penalty.map(|v| json!(v)));
    put("stop", o.stop.map(|v| json!(v)));
    match o.num_predict {
        Some(0) => return Err(ApiError::bad_request("'num_predict' must not be 0")),
        Some(n) if n > 0 => {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            body.insert("max_tokens".into(), json!(n));
        }
        // -1 (no limit) and -2 (fill the context): the engine stops at the context's end.
        _ => {}
    }
    Ok(body)
}

/// `format` counts as given unless it is null or an empty string.
fn given(format: &Value) -> bool {
    !(format.is_null() || format.as_str() == Some(""))
}

fn refuse(field: &str, present: bool) -> Result<(), ApiError> {
    if present {
        return Err(ApiError::bad_request(format!(
            "'{field}' is not supported by this server"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_maps_ollama_options_onto_openai_fields_and_streams_by_default() {
        let t = chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],
                 "options":{"temperature":0,"top_p":0.5,"top_k":7,"seed":3,"num_predict":9,
                            "stop":["\n"],"num_ctx":4096}}"#,
        )
        .unwrap();
        assert!(t.stream);
        let b = &t.body;
        assert_eq!(b["model"], "m");
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(
            (b["temperature"].as_f64(), b["top_p"].as_f64()),
            (Some(0.0), Some(0.5))
        );
        assert_eq!(
            (b["top_k"].as_i64(), b["seed"].as_i64()),
            (Some(7), Some(3))
        );
        assert_eq!(b["max_tokens"], 9);
        assert_eq!(b["stop"][0], "\n");
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert!(b.get("num_ctx").is_none());
        let t = chat(br#"{"model":"m","messages":[],"stream":false,"options":{"num_predict":-1}}"#)
            .unwrap();
        assert!(!t.stream && t.body.get("max_tokens").is_none());
    }

    #[test]
    fn generate_is_a_chat_turn_unless_raw_and_an_empty_prompt_only_loads() {
        let Generate::Run { raw, request } =
            generate(br#"{"model":"m","prompt":"hi","system":"be brief"}"#).unwrap()
        else {
            panic!("not a run")
        };
        assert!(!raw);
        assert_eq!(request.body["messages"][0]["role"], "system");
        assert_eq!(request.body["messages"][1]["content"], "hi");
        let Generate::Run { raw, request } =
            generate(br#"{"model":"m","prompt":"Once","raw":true,"stream":false}"#).unwrap()
        else {
            panic!("not a run")
        };
        assert!(raw && !request.stream);
        assert_eq!(request.body["prompt"], "Once");
        assert_eq!(
            generate(br#"{"model":"m"}"#).unwrap(),
            Generate::Load {
                model: "m".into(),
                stream: true
            }
        );
    }

    #[test]
    fn hostile_or_unsupported_requests_are_400_naming_the_field() {
        for (body, names) in [
            (&br#"{not json"#[..], "malformed JSON"),
            (br#"{"messages":[]}"#, "model"),
            (br#"{"model":"","messages":[]}"#, "model"),
            (br#"{"model":"m","messages":"hi"}"#, "invalid request"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x","images":["AAAA"]}]}"#,
                "images",
            ),
            (br#"{"model":"m","messages":[],"format":"json"}"#, "format"),
            (br#"{"model":"m","messages":[],"tools":[{}]}"#, "tools"),
            (
                br#"{"model":"m","messages":[],"options":{"num_predict":0}}"#,
                "num_predict",
            ),
            (
                br#"{"model":"m","messages":[],"options":{"temperature":"hot"}}"#,
                "invalid",
            ),
        ] {
            let err = chat(body).unwrap_err();
            assert_eq!(err.status, 400, "{}", String::from_utf8_lossy(body));
            assert!(err.message.contains(names), "{}", err.message);
        }
        for body in [
            &br#"{"model":"m","prompt":"x","context":[1,2]}"#[..],
            br#"{"model":"m","prompt":"x","template":"{{ .Prompt }}"}"#,
            br#"{"model":"m","prompt":"x","images":["AAAA"]}"#,
            br#"{"model":"m","prompt":5}"#,
        ] {
            assert_eq!(generate(body).unwrap_err().status, 400);
        }
        assert_eq!(show(br#"{"name":"m"}"#).unwrap(), "m");
        assert_eq!(show(br#"{}"#).unwrap_err().status, 400);
    }
}
