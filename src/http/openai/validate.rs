//! Request validation: parses OpenAI request bodies and checks every field before anything
//! reaches the engine. Pure functions over bytes; each rejection is a 400 with a clear message.

use serde::Deserialize;
use serde_json::Value;

use crate::engine::tools::Turn;
use crate::engine::{grammar, ChatMessage, SamplingParams, MAX_CHOICES, MAX_TOP_LOGPROBS};
use crate::http::error::ApiError;

/// Largest request body accepted, in bytes (documented in the README): over it, 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most stop strings per request, and the longest one in bytes.
pub const MAX_STOPS: usize = 16;
pub const MAX_STOP_BYTES: usize = 256;

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    /// Function calling (`super::tools`).
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub options: OptionsIn,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptIn,
    #[serde(flatten)]
    pub options: OptionsIn,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentIn>,
    /// An assistant's calls, in the history (`super::tools`).
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    /// A tool result's call id and function name.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Message content: a string, or OpenAI's list of parts (only text parts are understood).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentIn {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptIn {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    One(String),
    Many(Vec<String>),
}

/// Options shared by chat and text completions; unknown fields are ignored, as OpenAI's
/// clients send many we do not use.
#[derive(Debug, Default, Deserialize)]
pub struct OptionsIn {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<StopIn>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptionsIn>,
    pub n: Option<u32>,
    /// llama-server extension: keep generating past end-of-generation tokens.
    pub ignore_eos: Option<bool>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`.
    pub response_format: Option<Value>,
    /// llama-server extensions: a GBNF grammar, or a JSON schema, the output must match.
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
    /// Chat: `true`/`false` (with `top_logprobs`); completions: how many alternatives.
    pub logprobs: Option<LogprobsIn>,
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LogprobsIn {
    On(bool),
    Alternatives(u32),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptionsIn {
    pub include_usage: Option<bool>,
}

/// Validated options, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub sampling: SamplingParams,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// GBNF grammar the output must match (structured output).
    pub grammar: Option<String>,
    /// Alternatives per token when log-probabilities are asked for.
    pub logprobs: Option<u32>,
    /// Choices to generate, 1..=[`MAX_CHOICES`].
    pub n: u32,
}

pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "malformed JSON"
        } else {
            "invalid request"
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

pub fn chat_messages(messages: Vec<MessageIn>) -> Result<Vec<ChatMessage>, ApiError> {
    Ok(chat_turns(messages)?
        .into_iter()
        .map(|t| ChatMessage {
            role: t.role,
            content: t.content,
        })
        .collect())
}

/// The messages with what tools add (an assistant's `tool_calls`, a result's `tool_call_id`).
pub fn chat_turns(messages: Vec<MessageIn>) -> Result<Vec<Turn>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "'messages' must hold at least one message",
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant" | "tool") {
                return Err(ApiError::bad_request(format!("messages[{i}].role '{}' is not a known role", m.role)));
            }
            let content = match m.content {
                None => String::new(),
                Some(ContentIn::Text(t)) => t,
                Some(ContentIn::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::bad_request(format!(
                                    "messages[{i}]: content part of type '{kind}' is not supported (text only)"
                                )))
                            }
                        }
                    }
                    text
                }
            };
            if content.contains('\0') {
                return Err(ApiError::bad_request(format!("messages[{i}].content contains a NUL character")));
            }
            let tool_calls = match m.tool_calls {
                Some(calls) if m.role == "assistant" => super::tools::history_calls(i, calls)?,
                Some(_) => return Err(ApiError::bad_request(format!("messages[{i}]: only assistant messages may hold 'tool_calls'"))),
                None => Vec::new(),
            };
            // llama.cpp's templates know "system", not OpenAI's newer "developer".
            let role = if m.role == "developer" { "system".to_owned() } else { m.role };
            Ok(Turn { role, content, tool_calls, tool_call_id: m.tool_call_id, name: m.name })
        })
        .collect()
}

pub fn prompt_text(prompt: PromptIn) -> Result<String, ApiError> {
    let text = match prompt {
        PromptIn::One(s) => s,
        PromptIn::Many(mut v) if v.len() == 1 => v.remove(0),
        PromptIn::Many(_) => {
            return Err(ApiError::bad_request(
                "'prompt' must be one string (batches are not supported)",
            ))
        }
    };
    if text.is_empty() {
        return Err(ApiError::bad_request("'prompt' is empty"));
    }
    Ok(text)
}

pub fn options(o: OptionsIn) -> Result<Options, ApiError> {
    let defaults = SamplingParams::default();
    let temperature =
        range("temperature", o.temperature, 0.0, 2.0)?.unwrap_or(defaults.temperature);
    let top_p = range("top_p", o.top_p, 0.0, 1.0)?.unwrap_or(defaults.top_p);
    if top_p <= 0.0 {
        return Err(ApiError::bad_request("'top_p' must be greater than 0"));
    }
    let top_k = match o.top_k {
        Some(k) if k < 0 => return Err(ApiError::bad_request("'top_k' must be 0 (off) or more")),
        Some(k) => k,
        None => defaults.top_k,
    };
    let min_p = range("min_p", o.min_p, 0.0, 1.0)?.unwrap_or(defaults.min_p);
    let presence_penalty = range("presence_penalty", o.presence_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty =
        range("frequency_penalty", o.frequency_penalty, -2.0, 2.0)?.unwrap_or(0.0);
    let n = o.n.unwrap_or(1);
    if !(1..=MAX_CHOICES).contains(&n) {
        return Err(ApiError::bad_request(format!(
            "'n' must be between 1 and {MAX_CHOICES}, got {n}"
        )));
    }
    let logprobs = logprobs(o.logprobs, o.top_logprobs)?;
    let grammar = structured_output(o.response_format, o.grammar, o.json_schema)?;
    let max_tokens = o.max_completion_tokens.or(o.max_tokens);
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request("'max_tokens' must be at least 1"));
    }
    let stop = match o.stop {
        None => Vec::new(),
        Some(StopIn::One(s)) => vec![s],
        Some(StopIn::Many(v)) => v,
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_STOPS} stop strings are allowed"
        )));
    }
    if stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::bad_request(format!(
            "a stop string is longer than {MAX_STOP_BYTES} bytes"
        )));
    }
    let stream = o.stream.unwrap_or(false);
    let include_usage = o
        .stream_options
        .and_then(|s| s.include_usage)
        .unwrap_or(false);
    Ok(Options {
        sampling: SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p,
            // Any integer is a valid seed; llama.cpp takes 32 bits.
            seed: o.seed.map(|s| s as u32),
            presence_penalty,
            frequency_penalty,
            ignore_eos: o.ignore_eos.unwrap_or(false),
        },
        max_tokens,
        stop,
        stream,
        include_usage,
        grammar,
        logprobs,
        n,
    })
}

/// `logprobs` / `top_logprobs` as the number of alternatives per token, `None` when off.
fn logprobs(on: Option<LogprobsIn>, top: Option<u32>) -> Result<Option<u32>, ApiError> {
    let k = match (on, top) {
        (None | Some(LogprobsIn::On(false)), Some(_)) => {
            return Err(ApiError::bad_request(
                "'top_logprobs' needs 'logprobs': true",
            ))
        }
        (None | Some(LogprobsIn::On(false)), None) => return Ok(None),
        (Some(LogprobsIn::On(true)), top) => top.unwrap_or(0),
        (Some(LogprobsIn::Alternatives(k)), top) => top.unwrap_or(k),
    };
    if k > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad_request(format!(
            "'top_logprobs' must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"
        )));
    }
    Ok(Some(k))
}

/// The grammar that `response_format`, `grammar` or `json_schema` asks for (at most one of
/// them). JSON schemas go through llama.cpp's converter (`engine::grammar`); a raw grammar is
/// parsed by the engine when submitted (it needs the model's vocabulary).
fn structured_output(
    format: Option<Value>,
    gbnf: Option<String>,
    schema: Option<Value>,
) -> Result<Option<String>, ApiError> {
    let format = format.filter(|f| f.get("type").and_then(Value::as_str) != Some("text"));
    let given = [format.is_some(), gbnf.is_some(), schema.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::bad_request(
            "give at most one of 'response_format', 'grammar' and 'json_schema'",
        ));
    }
    let convert = |field: &str, schema: &Value| {
        grammar::from_json_schema(schema)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("'{field}': {e}")))
    };
    if let Some(g) = gbnf {
        if g.len() > grammar::MAX_GRAMMAR_BYTES {
            return Err(ApiError::bad_request(format!(
                "'grammar' is over {} bytes",
                grammar::MAX_GRAMMAR_BYTES
            )));
        }
        return Ok(Some(g));
    }
    if let Some(schema) = schema {
        return convert("json_schema", &schema);
    }
    let Some(format) = format else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        // llama-server also takes a schema here: {"type": "json_object", "schema": {...}}.
        Some("json_object") => match format.get("schema") {
            Some(schema) => convert("response_format.schema", schema),
            None => {
                let any_object = serde_json::from_str(grammar::JSON_OBJECT_SCHEMA)
                    .expect("constant schema is JSON");
                convert("response_format", &any_object)
            }
        },
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .or_else(|| format.get("schema"))
                .ok_or_else(|| {
                    ApiError::bad_request("'response_format.json_schema.schema' is required")
                })?;
            convert("response_format.json_schema.schema", schema)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "'response_format.type' must be text, json_object or json_schema, got '{other}'"
        ))),
        None => Err(ApiError::bad_request(
            "'response_format' must be an object with a 'type'",
        )),
    }
}

fn range(name: &str, v: Option<f32>, lo: f32, hi: f32) -> Result<Option<f32>, ApiError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(ApiError::bad_request(format!(
            "'{name}' must be between {lo} and {hi}, got {x}"
        ))),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<(Vec<ChatMessage>, Options), ApiError> {
        let req: ChatCompletionRequest = parse(body.as_bytes())?;
        Ok((chat_messages(req.messages)?, options(req.options)?))
    }

    #[test]
    fn accepts_a_full_openai_request() {
        let (msgs, o) = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
               {"role":"user","content":[{"type":"text","text":"hi"}]}],
               "temperature":0,"top_p":0.9,"seed":42,"max_tokens":5,"stop":"\n",
               "stream":true,"stream_options":{"include_usage":true},"user":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(msgs[0].role, "system");
        assert_eq!(msgs[1].content, "hi");
        assert_eq!(o.sampling.temperature, 0.0);
        assert_eq!(o.sampling.seed, Some(42));
        assert_eq!(o.max_tokens, Some(5));
        assert_eq!(o.stop, vec!["\n".to_owned()]);
        assert!(o.stream && o.include_usage);
    }

    #[test]
    fn malformed_json_and_wrong_types_are_400() {
        for body in [
            "{not json",
            r#"{"model":"m","messages":"hi"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
        ] {
            let err = chat(body).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
        }
        assert!(chat("{not json")
            .unwrap_err()
            .message
            .starts_with("malformed JSON"));
    }

    #[test]
    fn out_of_range_values_are_400_naming_the_field() {
        for (field, value) in [
            ("temperature", "3"),
            ("top_p", "0"),
            ("min_p", "1.5"),
            ("presence_penalty", "-3"),
            ("top_k", "-1"),
            ("n", "0"),
            ("n", "9"),
            ("top_logprobs", "21"),
            ("max_tokens", "0"),
        ] {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"{field}":{value}}}"#
            );
            let err = chat(&body).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.contains(field.trim_end_matches("_tokens")) || field == "n",
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn empty_messages_unknown_roles_and_images_are_rejected() {
        assert!(chat(r#"{"model":"m","messages":[]}"#).is_err());
        assert!(chat(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#).is_err());
        let img = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        assert!(chat(img).unwrap_err().message.contains("image_url"));
    }

    #[test]
    fn prompt_must_be_one_non_empty_string() {
        let p =
            |s: &str| parse::<CompletionRequest>(s.as_bytes()).and_then(|r| prompt_text(r.prompt));
        assert_eq!(p(r#"{"model":"m","prompt":"abc"}"#).unwrap(), "abc");
        assert_eq!(p(r#"{"model":"m","prompt":["abc"]}"#).unwrap(), "abc");
        assert!(p(r#"{"model":"m","prompt":["a","b"]}"#).is_err());
        assert!(p(r#"{"model":"m","prompt":""}"#).is_err());
        assert!(p(r#"{"model":"m","prompt":5}"#).is_err());
    }

    #[test]
    fn structured_output_fields_become_a_grammar() {
        let with = |extra: &str| {
            chat(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
            ))
        };
        assert_eq!(with("").unwrap().1.grammar, None);
        assert_eq!(
            with(r#","response_format":{"type":"text"}"#)
                .unwrap()
                .1
                .grammar,
            None
        );
        for extra in [
            r#","response_format":{"type":"json_object"}"#,
            r#","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"object"}}}"#,
            r#","json_schema":{"type":"integer"}"#,
        ] {
            let g = with(extra).unwrap().1.grammar.unwrap();
            assert!(g.contains("root ::="), "{extra}: {g}");
        }
        let raw = with(r#","grammar":"root ::= \"a\"""#).unwrap().1.grammar;
        assert_eq!(raw.as_deref(), Some(r#"root ::= "a""#));
        for (extra, needle) in [
            (
                r#","response_format":{"type":"json_schema"}"#,
                "json_schema.schema",
            ),
            (r#","response_format":{"type":"yaml"}"#, "yaml"),
            (r#","response_format":"json""#, "'type'"),
            (
                r#","response_format":{"type":"json_schema","json_schema":{"schema":{"type":"strnig"}}}"#,
                "strnig",
            ),
            (r#","grammar":"a","json_schema":{}"#, "at most one"),
        ] {
            let e = with(extra).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{extra}: {}", e.message);
        }
        let huge = format!(
            r#","grammar":"{}""#,
            "a".repeat(grammar::MAX_GRAMMAR_BYTES + 1)
        );
        assert!(with(&huge).unwrap_err().message.contains("grammar"));
    }

    #[test]
    fn logprobs_and_n_are_read_for_chat_and_completions() {
        let o = |extra: &str| {
            chat(&format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}]{extra}}}"#
            ))
            .map(|(_, o)| (o.logprobs, o.n))
        };
        assert_eq!(o("").unwrap(), (None, 1));
        assert_eq!(o(r#","logprobs":false"#).unwrap(), (None, 1));
        assert_eq!(o(r#","logprobs":true"#).unwrap(), (Some(0), 1));
        assert_eq!(
            o(r#","logprobs":true,"top_logprobs":20,"n":8"#).unwrap(),
            (Some(20), 8)
        );
        // The completions spelling: a count.
        assert_eq!(o(r#","logprobs":3"#).unwrap(), (Some(3), 1));
        assert!(o(r#","logprobs":21"#).is_err());
        assert!(o(r#","top_logprobs":1"#).is_err());
        assert!(o(r#","n":9"#).is_err());
    }

    #[test]
    fn too_many_stop_strings_are_rejected() {
        let stops: Vec<String> = (0..=MAX_STOPS).map(|i| format!("\"s{i}\"")).collect();
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"stop":[{}]}}"#,
            stops.join(",")
        );
        assert!(chat(&body).is_err());
    }
}
