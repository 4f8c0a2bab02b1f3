//! Response bodies: whole answers and Server-Sent-Event streams of `chat.completion.chunk` /
//! `text_completion` objects, ending with `data: [DONE]`. A generation that breaks off mid-stream
//! (shutdown, engine failure) ends with an OpenAI error object instead, so clients never hang.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use crate::engine::{Event, EventStream, FinishReason, Usage};
use crate::http::error::ApiError;

/// How often a stream with nothing to say sends an SSE comment: a node forwarding the stream
/// tells a slow prompt from a stalled replica by it (`mesh::net::tunnel::IDLE_TIMEOUT`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/v1/chat/completions`
    Chat,
    /// `/v1/completions`
    Text,
}

/// Fields every response and chunk of one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    flavor: Flavor,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    pub fn new(flavor: Flavor, model: &str) -> Self {
        let prefix = match flavor {
            Flavor::Chat => "chatcmpl",
            Flavor::Text => "cmpl",
        };
        Self {
            flavor,
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: crate::util::time::unix_secs(),
            model: model.to_owned(),
        }
    }

    /// The whole answer of a non-streaming request.
    pub fn complete(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
        let choice = match self.flavor {
            Flavor::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Flavor::Text => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str()})
            }
        };
        let object = match self.flavor {
            Flavor::Chat => "chat.completion",
            Flavor::Text => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage_json(usage),
        })
    }

    fn chunk(&self, choices: Value) -> Value {
        let object = match self.flavor {
            Flavor::Chat => "chat.completion.chunk",
            Flavor::Text => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }

    /// A chunk carrying text (or, for chat, the opening role delta when `role` is set).
    fn text_chunk(&self, text: &str, role: bool) -> Value {
        match self.flavor {
            Flavor::Chat => {
                let delta = if role {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                self.chunk(
                    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]),
                )
            }
            Flavor::Text => self.chunk(
                json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": null}]),
            ),
        }
    }

    fn finish_chunk(&self, finish: FinishReason) -> Value {
        match self.flavor {
            Flavor::Chat => self.chunk(json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish.as_str()}])),
            Flavor::Text => self.chunk(json!([{"index": 0, "text": "", "logprobs": null, "finish_reason": finish.as_str()}])),
        }
    }

    /// The extra chunk `stream_options.include_usage` asks for: no choices, only usage.
    fn usage_chunk(&self, usage: Usage) -> Value {
        let mut v = self.chunk(json!([]));
        v["usage"] = usage_json(usage);
        v
    }
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// Where a stream is: before the first chunk, in the middle, or finished.
enum State {
    Start(EventStream),
    Running(EventStream),
    Ended,
}

/// Turns engine events into an SSE response. Dropping the response (client gone) drops the
/// event receiver, which frees the engine slot, and `hold` (the slot's permit).
pub fn sse(
    events: EventStream,
    meta: Meta,
    include_usage: bool,
    hold: impl Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let chunks = stream::unfold(State::Start(events), move |state| {
        let _held = &hold;
        let meta = meta.clone();
        async move {
            let (mut events, first) = match state {
                State::Start(e) => (e, true),
                State::Running(e) => (e, false),
                State::Ended => return None,
            };
            if first && meta.flavor == Flavor::Chat {
                // OpenAI opens a chat stream with the assistant role before any text.
                return Some((
                    vec![data(&meta.text_chunk("", true))],
                    State::Running(events),
                ));
            }
            let out = match events.recv().await {
                Some(Event::Text(t)) => {
                    return Some((
                        vec![data(&meta.text_chunk(&t, false))],
                        State::Running(events),
                    ))
                }
                Some(Event::Done { finish, usage }) => {
                    let mut out = vec![data(&meta.finish_chunk(finish))];
                    if include_usage {
                        out.push(data(&meta.usage_chunk(usage)));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    out
                }
                Some(Event::Error(e)) => vec![data(&ApiError::generation_failed(e).body())],
                None => vec![data(&ApiError::generation_failed("engine stopped").body())],
            };
            Some((out, State::Ended))
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Sse::new(chunks).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}
