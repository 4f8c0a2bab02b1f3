//! Reading a replica's SSE stream on the forwarding node. Forwarded requests always stream
//! (see `forward`): a stream shows progress, so a silent replica is told from a slow one, and a
//! non-streaming request's whole answer is assembled here before any byte reaches the client,
//! so a replica that fails or sends garbage part-way is retried on another. Pure: bytes in,
//! verdicts out.

use serde_json::Value;

use super::logprobs;
use super::stream::Choice;
use crate::engine::tools::ToolCall;
use crate::engine::{FinishReason, Usage, MAX_CHOICES};

/// How a stream's first bytes look.
pub fn looks_like_sse(first: &[u8]) -> bool {
    [&b"data:"[..], b":", b"event:", b"id:", b"retry:"]
        .iter()
        .any(|p| first.starts_with(p))
}

/// How a relayed stream ended, judged by its last bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `data: [DONE]`: a whole answer.
    Done,
    /// An error chunk from the replica (its generation failed; the client has been told).
    Error,
    /// Cut off without either: the client still needs an error chunk.
    Cut,
}

/// Judges the end of a stream from its last bytes (at least the last event's).
pub fn ending(tail: &[u8]) -> Ending {
    let text = String::from_utf8_lossy(tail);
    let last = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap_or("")
        .trim_start();
    match last.strip_prefix("data:").map(str::trim) {
        Some("[DONE]") => Ending::Done,
        Some(d) if serde_json::from_str::<Value>(d).is_ok_and(|v| v.get("error").is_some()) => {
            Ending::Error
        }
        _ => Ending::Cut,
    }
}

/// A whole stream, read back into one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// Choices in index order, each with its text, finish reason and logprobs.
    Answer { choices: Vec<Choice>, usage: Usage },
    /// The replica reported that the generation failed, with its message.
    Failed(String),
}

/// Not a stream of OpenAI chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the replica's stream is malformed: {0}")]
pub struct Garbage(pub &'static str);

/// A choice being assembled.
#[derive(Default)]
struct Partial {
    text: String,
    finish: Option<FinishReason>,
    logprobs: Value,
    /// Tool calls by their delta `index`: id and name from the first delta, arguments appended.
    calls: Vec<ToolCall>,
}

/// Folds a chunk's `delta.tool_calls` into the calls so far.
fn merge_calls(calls: &mut Vec<ToolCall>, deltas: &Value) -> Result<(), Garbage> {
    let Some(deltas) = deltas.as_array() else {
        return Ok(());
    };
    for d in deltas {
        let index = d["index"]
            .as_u64()
            .filter(|&i| i < MAX_CALLS)
            .ok_or(Garbage("a tool call index out of range"))? as usize;
        if calls.len() <= index {
            calls.resize_with(index + 1, || ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let c = &mut calls[index];
        if let Some(id) = d["id"].as_str() {
            c.id = id.to_owned();
        }
        if let Some(name) = d["function"]["name"].as_str() {
            c.name.push_str(name);
        }
        if let Some(args) = d["function"]["arguments"].as_str() {
            c.arguments.push_str(args);
        }
    }
    Ok(())
}

/// Most tool calls one assembled choice may hold.
const MAX_CALLS: u64 = 128;

/// Folds a complete SSE body (`chat.completion.chunk` or `text_completion` chunks, a usage
/// chunk, `[DONE]`) into the answer it carries; chunks of several choices are told apart by
/// their `index`.
pub fn assemble(body: &[u8]) -> Result<Assembled, Garbage> {
    let body = std::str::from_utf8(body).map_err(|_| Garbage("not UTF-8"))?;
    let mut partials: Vec<Partial> = vec![Partial::default()];
    let mut usage = Usage::default();
    for event in body.split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        if data == "[DONE]" {
            let choices = partials
                .into_iter()
                .map(|p| {
                    Ok(Choice {
                        text: p.text,
                        finish: p.finish.ok_or(Garbage("no finish reason before [DONE]"))?,
                        logprobs: p.logprobs,
                        tool_calls: p.calls,
                    })
                })
                .collect::<Result<_, _>>()?;
            return Ok(Assembled::Answer { choices, usage });
        }
        let chunk: Value =
            serde_json::from_str(&data).map_err(|_| Garbage("a chunk is not JSON"))?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"].as_str().unwrap_or("generation failed");
            return Ok(Assembled::Failed(message.to_owned()));
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |k: &str| u[k].as_u64().and_then(|n| u32::try_from(n).ok());
            usage = Usage {
                prompt_tokens: count("prompt_tokens").ok_or(Garbage("bad usage"))?,
                completion_tokens: count("completion_tokens").ok_or(Garbage("bad usage"))?,
                // Optional: replicas of older versions do not send it.
                cached_tokens: u["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
            };
        }
        let choices = chunk["choices"]
            .as_array()
            .ok_or(Garbage("a chunk without choices"))?;
        for choice in choices {
            let index = match &choice["index"] {
                Value::Null => 0,
                i => i
                    .as_u64()
                    .filter(|&i| i < u64::from(MAX_CHOICES))
                    .ok_or(Garbage("a choice index out of range"))? as usize,
            };
            if partials.len() <= index {
                partials.resize_with(index + 1, Partial::default);
            }
            let p = &mut partials[index];
            let piece = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str());
            p.text.push_str(piece.unwrap_or(""));
            logprobs::merge(&mut p.logprobs, &choice["logprobs"]);
            merge_calls(&mut p.calls, &choice["delta"]["tool_calls"])?;
            match choice["finish_reason"].as_str() {
                Some("stop") => p.finish = Some(FinishReason::Stop),
                // The calls themselves say it (`Choice::finish_reason`).
                Some("tool_calls") if !p.calls.is_empty() => p.finish = Some(FinishReason::Stop),
                Some("length") => p.finish = Some(FinishReason::Length),
                Some(_) => return Err(Garbage("unknown finish reason")),
                None => {}
            }
        }
    }
    Err(Garbage("the stream ended without [DONE]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world\"},\"finish_reason\":null}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_chat_stream_assembles_into_its_answer() {
        assert_eq!(
            assemble(CHAT.as_bytes()),
            Ok(Assembled::Answer {
                choices: vec![Choice {
                    text: "Hello, world".into(),
                    finish: FinishReason::Stop,
                    logprobs: Value::Null,
                    tool_calls: Vec::new(),
                }],
                usage: Usage {
                    prompt_tokens: 7,
                    completion_tokens: 2,
                    cached_tokens: 0,
                },
            })
        );
        assert_eq!(ending(CHAT.as_bytes()), Ending::Done);
    }

    #[test]
    fn a_text_stream_assembles_and_an_error_chunk_is_a_failure() {
        let text = "data: {\"choices\":[{\"text\":\"Once\",\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        assert!(matches!(
            assemble(text.as_bytes()),
            Ok(Assembled::Answer { choices, .. })
                if choices.len() == 1 && choices[0].text == "Once" && choices[0].finish == FinishReason::Length
        ));
        let failed = "data: {\"choices\":[{\"text\":\"On\",\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"decode failed\",\"code\":\"generation_failed\"}}\n\n";
        assert_eq!(
            assemble(failed.as_bytes()),
            Ok(Assembled::Failed("decode failed".into()))
        );
        assert_eq!(ending(failed.as_bytes()), Ending::Error);
    }

    #[test]
    fn interleaved_choices_and_their_logprobs_assemble_by_index() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":1,\"text\":\"B\",\"logprobs\":{\"tokens\":[\"B\"],\"token_logprobs\":[-1.0],\"top_logprobs\":[{}],\"text_offset\":[0]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"text\":\"A\",\"logprobs\":null,\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"text\":\"b\",\"logprobs\":{\"tokens\":[\"b\"],\"token_logprobs\":[-2.0],\"top_logprobs\":[{}],\"text_offset\":[1]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let Ok(Assembled::Answer { choices, .. }) = assemble(body.as_bytes()) else {
            panic!("not assembled");
        };
        assert_eq!(choices.len(), 2);
        assert_eq!(
            (choices[0].text.as_str(), choices[0].finish),
            ("A", FinishReason::Length)
        );
        assert_eq!(
            (choices[1].text.as_str(), choices[1].finish),
            ("Bb", FinishReason::Stop)
        );
        assert!(choices[0].logprobs.is_null());
        assert_eq!(
            choices[1].logprobs["token_logprobs"],
            serde_json::json!([-1.0, -2.0])
        );
        assert_eq!(
            choices[1].logprobs["text_offset"],
            serde_json::json!([0, 1])
        );
        // A choice that never finished, or an index past the limit, is garbage.
        let unfinished = body.replace(
            "data: {\"choices\":[{\"index\":1,\"text\":\"\",\"finish_reason\":\"stop\"}]}\n\n",
            "",
        );
        assert!(assemble(unfinished.as_bytes()).is_err());
        let far = "data: {\"choices\":[{\"index\":4000000000,\"text\":\"x\",\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert!(assemble(far.as_bytes()).is_err());
    }

    #[test]
    fn streamed_tool_call_deltas_assemble_into_calls() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\": \\\"Paris\\\"}\"}},{\"index\":1,\"id\":\"call_2\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let Ok(Assembled::Answer { choices, .. }) = assemble(body.as_bytes()) else {
            panic!("not assembled");
        };
        let calls = &choices[0].tool_calls;
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].id.as_str(),
                calls[0].name.as_str(),
                calls[0].arguments.as_str()
            ),
            ("call_1", "get_weather", r#"{"city": "Paris"}"#)
        );
        assert_eq!(
            (calls[1].name.as_str(), calls[1].arguments.as_str()),
            ("now", "{}")
        );
        assert_eq!(choices[0].text, "");
        // "tool_calls" with no calls, or a call index past the limit, is garbage.
        let no_calls = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        assert!(assemble(no_calls.as_bytes()).is_err());
        let far = body.replace("\"index\":1,", "\"index\":99999,");
        assert!(assemble(far.as_bytes()).is_err());
    }

    #[test]
    fn garbage_and_cut_streams_are_told_apart() {
        for bad in [
            &b"HTTP/1.1 200 OK"[..],
            b"data: not json\n\n",
            b"data: {\"choices\":[{\"text\":\"x\",\"finish_reason\":null}]}\n\n",
            b"data: [DONE]\n\n",
            b"\xff\xfe",
        ] {
            assert!(assemble(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(ending(b"data: {\"choices\":[]}\n\n"), Ending::Cut);
        assert_eq!(ending(b""), Ending::Cut);
        assert!(looks_like_sse(b"data: {}") && looks_like_sse(b":\n\n"));
        assert!(!looks_like_sse(b"<html>") && !looks_like_sse(b"{\"a\":1}"));
    }
}
