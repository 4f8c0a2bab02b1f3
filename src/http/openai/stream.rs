//! Response bodies: whole answers and Server-Sent-Event streams of `chat.completion.chunk` /
//! `text_completion` objects, ending with `data: [DONE]`. A generation that breaks off mid-stream
//! (shutdown, engine failure) ends with an OpenAI error object instead, so clients never hang.
//! A request of `n` choices streams them interleaved, each chunk naming its choice's `index`;
//! `[DONE]` follows the last choice's finish. Log-probabilities ride on the chunk carrying the
//! text they belong to (or on the choice's finish chunk when stop-string checks held it back).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use super::logprobs;
use crate::engine::{Event, EventStream, FinishReason, TokenLogprob, Usage};
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

/// One choice of a whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub text: String,
    pub finish: FinishReason,
    /// In the flavor's shape (see `logprobs`), or `null` when not asked for.
    pub logprobs: Value,
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
    pub fn complete(&self, choices: &[Choice], usage: Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, c)| match self.flavor {
                Flavor::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish.as_str(),
                }),
                Flavor::Text => json!({
                    "index": index, "text": c.text, "logprobs": c.logprobs,
                    "finish_reason": c.finish.as_str(),
                }),
            })
            .collect();
        let object = match self.flavor {
            Flavor::Chat => "chat.completion",
            Flavor::Text => "text_completion",
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices, "usage": usage_json(usage),
        })
    }

    fn chunk(&self, choices: Value) -> Value {
        let object = match self.flavor {
            Flavor::Chat => "chat.completion.chunk",
            Flavor::Text => "text_completion",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices})
    }

    /// A chunk of choice `index` carrying text (or, for chat, the opening role delta when
    /// `role` is set) and the logprobs of its tokens (`null` when none).
    fn text_chunk(&self, index: usize, text: &str, role: bool, logprobs: Value) -> Value {
        match self.flavor {
            Flavor::Chat => {
                let delta = if role {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                self.chunk(
                    json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}]),
                )
            }
            Flavor::Text => self.chunk(
                json!([{"index": index, "text": text, "logprobs": logprobs, "finish_reason": null}]),
            ),
        }
    }

    fn finish_chunk(&self, index: usize, finish: FinishReason, logprobs: Value) -> Value {
        match self.flavor {
            Flavor::Chat => self.chunk(json!([{"index": index, "delta": {}, "logprobs": logprobs, "finish_reason": finish.as_str()}])),
            Flavor::Text => self.chunk(json!([{"index": index, "text": "", "logprobs": logprobs, "finish_reason": finish.as_str()}])),
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
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// Per-choice progress of a stream.
#[derive(Default)]
struct ChoiceState {
    /// Logprobs of tokens whose text has not been sent yet.
    pending: Vec<TokenLogprob>,
    /// Byte offset of the next token in the choice's text (legacy logprobs).
    offset: usize,
    done: bool,
}

impl ChoiceState {
    /// The pending logprobs as JSON (`null` when there are none), emptied.
    fn take_logprobs(&mut self, flavor: Flavor) -> Value {
        if self.pending.is_empty() {
            return Value::Null;
        }
        let v = logprobs::render(flavor == Flavor::Chat, &self.pending, &mut self.offset);
        self.pending.clear();
        v
    }
}

/// A stream in progress: the choices' merged events and what each has sent.
struct Running<S> {
    merged: S,
    states: Vec<ChoiceState>,
    /// Prompt tokens once, completion tokens of every finished choice.
    usage: Usage,
    /// The answer is complete (`[DONE]` sent) or broke off (error sent).
    ended: bool,
}

impl<S> Running<S> {
    fn on_event(
        &mut self,
        meta: &Meta,
        include_usage: bool,
        i: usize,
        event: Option<Event>,
    ) -> Vec<SseEvent> {
        let st = &mut self.states[i];
        match event {
            Some(Event::Logprob(lp)) => {
                st.pending.push(lp);
                Vec::new()
            }
            Some(Event::Text(t)) => {
                let lp = st.take_logprobs(meta.flavor);
                vec![data(&meta.text_chunk(i, &t, false, lp))]
            }
            Some(Event::Done { finish, usage }) => {
                st.done = true;
                let lp = st.take_logprobs(meta.flavor);
                let mut out = vec![data(&meta.finish_chunk(i, finish, lp))];
                self.usage.prompt_tokens = usage.prompt_tokens;
                self.usage.cached_tokens = usage.cached_tokens;
                self.usage.completion_tokens += usage.completion_tokens;
                if self.states.iter().all(|s| s.done) {
                    self.ended = true;
                    if include_usage {
                        out.push(data(&meta.usage_chunk(self.usage)));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                }
                out
            }
            // A finished choice's channel closing says nothing more.
            None if st.done => Vec::new(),
            Some(Event::Error(e)) => {
                self.ended = true;
                vec![data(&ApiError::generation_failed(e).body())]
            }
            None => {
                self.ended = true;
                vec![data(&ApiError::generation_failed("engine stopped").body())]
            }
        }
    }
}

/// A stream of one choice's events, tagged with its index; `None` when its channel closed.
fn tagged(index: usize, events: EventStream) -> impl Stream<Item = (usize, Option<Event>)> {
    stream::unfold(Some(events), move |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(e) => Some(((index, Some(e)), Some(rx))),
            None => Some(((index, None), None)),
        }
    })
}

/// Turns engine events (one stream per choice) into an SSE response. Dropping the response
/// (client gone) drops the event receivers, which frees the engine slots, and `hold` (the
/// slot's permit).
pub fn sse(
    choices: Vec<EventStream>,
    meta: Meta,
    include_usage: bool,
    hold: impl Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let n = choices.len();
    // OpenAI opens a chat stream with the assistant role, per choice, before any text.
    let opening: Vec<SseEvent> = match meta.flavor {
        Flavor::Chat => (0..n)
            .map(|i| data(&meta.text_chunk(i, "", true, Value::Null)))
            .collect(),
        Flavor::Text => Vec::new(),
    };
    let merged = stream::select_all(
        choices
            .into_iter()
            .enumerate()
            .map(|(i, rx)| Box::pin(tagged(i, rx))),
    );
    let start = Running {
        merged,
        states: (0..n).map(|_| ChoiceState::default()).collect(),
        usage: Usage::default(),
        ended: false,
    };
    let body = stream::unfold(start, move |mut run| {
        let _held = &hold;
        let meta = meta.clone();
        async move {
            if run.ended {
                return None;
            }
            let (i, event) = run.merged.next().await?;
            let out = run.on_event(&meta, include_usage, i, event);
            Some((out, run))
        }
    });
    let chunks = stream::iter(vec![opening])
        .chain(body)
        .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Sse::new(chunks).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}
