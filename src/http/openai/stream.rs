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

use super::{logprobs, tools};
use crate::engine::tools::{parse, Format, ToolCall};
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
    /// Tool calls the model asked for (chat with tools): finish reason `tool_calls`.
    pub tool_calls: Vec<ToolCall>,
}

impl Choice {
    /// A choice of text; with `format` other than [`Format::Text`], the text is read for tool
    /// calls first (`engine::tools::parse`).
    pub fn read(text: String, finish: FinishReason, logprobs: Value, format: Format) -> Choice {
        if format == Format::Text {
            return Choice {
                text,
                finish,
                logprobs,
                tool_calls: Vec::new(),
            };
        }
        let reply = parse::parse(format, &text);
        Choice {
            text: reply.content.unwrap_or_default(),
            finish,
            logprobs,
            tool_calls: reply.calls,
        }
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool_calls.is_empty() {
            self.finish.as_str()
        } else {
            "tool_calls"
        }
    }

    /// The chat message: `content` null when the model only called tools.
    fn message(&self) -> Value {
        if self.tool_calls.is_empty() {
            return json!({"role": "assistant", "content": self.text});
        }
        let content = if self.text.is_empty() {
            Value::Null
        } else {
            json!(self.text)
        };
        json!({"role": "assistant", "content": content,
               "tool_calls": tools::calls_json(&self.tool_calls, false)})
    }
}

/// Fields every response and chunk of one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    flavor: Flavor,
    id: String,
    created: u64,
    model: String,
    /// How tool calls are read from the output ([`Format::Text`]: no tools in play).
    tools: Format,
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
            tools: Format::Text,
        }
    }

    /// Reads the output for tool calls in `format`. A stream then holds each choice's text
    /// back until it is complete (a call is only known once whole) and sends it as content or
    /// as `tool_calls` deltas; SSE keep-alives go on meanwhile.
    pub fn with_tools(mut self, format: Format) -> Self {
        self.tools = format;
        self
    }

    /// The whole answer of a non-streaming request.
    pub fn complete(&self, choices: &[Choice], usage: Usage) -> Value {
        let choices: Vec<Value> = choices
            .iter()
            .enumerate()
            .map(|(index, c)| match self.flavor {
                Flavor::Chat => json!({
                    "index": index,
                    "message": c.message(),
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish_reason(),
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

    fn finish_chunk(&self, index: usize, finish: &str, logprobs: Value) -> Value {
        match self.flavor {
            Flavor::Chat => self.chunk(json!([{"index": index, "delta": {}, "logprobs": logprobs, "finish_reason": finish}])),
            Flavor::Text => self.chunk(json!([{"index": index, "text": "", "logprobs": logprobs, "finish_reason": finish}])),
        }
    }

    /// The delta of choice `index` carrying its tool calls, whole, in OpenAI's shape.
    fn tool_calls_chunk(&self, index: usize, calls: &[ToolCall]) -> Value {
        let delta = json!({"tool_calls": tools::calls_json(calls, true)});
        self.chunk(
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": null}]),
        )
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
    /// Text held back to be read for tool calls at the end ([`Meta::with_tools`]).
    held: String,
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
            Some(Event::Text(t)) if meta.tools != Format::Text => {
                st.held.push_str(&t);
                Vec::new()
            }
            Some(Event::Text(t)) => {
                let lp = st.take_logprobs(meta.flavor);
                vec![data(&meta.text_chunk(i, &t, false, lp))]
            }
            Some(Event::Done { finish, usage }) => {
                st.done = true;
                let mut out = Vec::new();
                let mut reason = finish.as_str();
                if meta.tools != Format::Text {
                    let held = std::mem::take(&mut st.held);
                    let c = Choice::read(held, finish, Value::Null, meta.tools);
                    if !c.text.is_empty() {
                        out.push(data(&meta.text_chunk(i, &c.text, false, Value::Null)));
                    }
                    if !c.tool_calls.is_empty() {
                        out.push(data(&meta.tool_calls_chunk(i, &c.tool_calls)));
                    }
                    reason = c.finish_reason();
                }
                let lp = st.take_logprobs(meta.flavor);
                out.push(data(&meta.finish_chunk(i, reason, lp)));
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
