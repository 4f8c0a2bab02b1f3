//! Ollama's answers, built from the OpenAI event stream the OpenAI handlers produce: a
//! [`Reader`] turns SSE bytes into text pieces and an ending (pure, incremental, bounded), and
//! [`Reply`] shapes them as Ollama's NDJSON chunks or its whole answer (`done_reason`, token
//! counts, durations in nanoseconds, `created_at` in RFC 3339).

use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::{FinishReason, Usage};

/// Largest single SSE event read back (a text piece is a few bytes; an error a few hundred).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What an OpenAI event stream says, piece by piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// The generation finished (`[DONE]` after a finish reason).
    Done {
        finish: FinishReason,
        usage: Usage,
    },
    /// The generation failed or the stream was malformed; nothing follows.
    Failed(String),
}

/// Reads an OpenAI SSE stream (chat or text chunks, a usage chunk, `[DONE]`) incrementally.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    finish: Option<FinishReason>,
    usage: Usage,
    ended: bool,
}

impl Reader {
    /// Feeds the next bytes; returns the pieces they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.buf.extend_from_slice(bytes);
        while let Some(end) = find(&self.buf, b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            if let Some(p) = self.event(&event) {
                let last = !matches!(p, Piece::Text(_));
                out.push(p);
                if last {
                    self.ended = true;
                    self.buf.clear();
                    return out;
                }
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            self.ended = true;
            out.push(Piece::Failed(format!(
                "an event of the answer is over {MAX_EVENT_BYTES} bytes"
            )));
        }
        out
    }

    /// The stream has ended: a piece saying so unless it ended properly.
    pub fn finish(&mut self) -> Option<Piece> {
        if self.ended {
            return None;
        }
        self.ended = true;
        Some(Piece::Failed("the answer ended early".into()))
    }

    fn event(&mut self, event: &[u8]) -> Option<Piece> {
        let text = String::from_utf8_lossy(event);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            return None; // a comment (keep-alive) or a field we do not use
        }
        let data = data.join("\n");
        if data == "[DONE]" {
            return Some(match self.finish {
                Some(finish) => Piece::Done {
                    finish,
                    usage: self.usage,
                },
                None => Piece::Failed("the answer ended without a finish reason".into()),
            });
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
            return Some(Piece::Failed("a chunk of the answer is not JSON".into()));
        };
        if let Some(error) = chunk.get("error") {
            let message = error["message"].as_str().unwrap_or("generation failed");
            return Some(Piece::Failed(message.to_owned()));
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            let count = |k: &str| u[k].as_u64().and_then(|n| u32::try_from(n).ok());
            self.usage = Usage {
                prompt_tokens: count("prompt_tokens").unwrap_or(0),
                completion_tokens: count("completion_tokens").unwrap_or(0),
                ..Usage::default()
            };
        }
        let choice = chunk["choices"].get(0)?;
        match choice["finish_reason"].as_str() {
            Some("length") => self.finish = Some(FinishReason::Length),
            Some(_) => self.finish = Some(FinishReason::Stop),
            None => {}
        }
        let piece = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str())?;
        (!piece.is_empty()).then(|| Piece::Text(piece.to_owned()))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Which Ollama endpoint answers: `/api/chat` puts text in `message`, `/api/generate` in
/// `response`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Generate,
}

/// How long the answer took, as Ollama reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    pub total: Duration,
    /// Until the first token (Ollama's prompt evaluation).
    pub prompt: Duration,
    /// From the first token to the last.
    pub eval: Duration,
}

/// The Ollama objects of one answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub shape: Shape,
    pub model: String,
}

impl Reply {
    /// A chunk carrying text (`"done": false`).
    pub fn chunk(&self, text: &str, now_ns: u128) -> Value {
        let mut v = json!({"model": self.model, "created_at": rfc3339(now_ns), "done": false});
        self.put_text(&mut v, text);
        v
    }

    /// The last chunk of a stream (empty text) or a whole answer (all of it), with the counts.
    pub fn done(
        &self,
        text: &str,
        reason: &str,
        usage: Usage,
        timing: Timing,
        now_ns: u128,
    ) -> Value {
        let ns = |d: Duration| d.as_nanos() as u64;
        let mut v = json!({
            "model": self.model,
            "created_at": rfc3339(now_ns),
            "done": true,
            "done_reason": reason,
            "total_duration": ns(timing.total),
            "load_duration": 0,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": ns(timing.prompt),
            "eval_count": usage.completion_tokens,
            "eval_duration": ns(timing.eval),
        });
        self.put_text(&mut v, text);
        v
    }

    fn put_text(&self, v: &mut Value, text: &str) {
        match self.shape {
            Shape::Chat => v["message"] = json!({"role": "assistant", "content": text}),
            Shape::Generate => v["response"] = json!(text),
        }
    }
}

/// Ollama's `done_reason` for a finish.
pub fn done_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// Ollama's error object (`{"error": "..."}`), also the line a broken stream ends with.
pub fn error(message: &str) -> Value {
    json!({ "error": message })
}

/// A Unix time in nanoseconds as RFC 3339 in UTC (`2026-12-01T13:40:00.123456789Z`).
pub fn rfc3339(unix_ns: u128) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn an_openai_stream_split_anywhere_reads_as_the_same_pieces() {
        let whole = Reader::default().push(CHAT.as_bytes());
        assert_eq!(
            whole,
            vec![
                Piece::Text("Hel".into()),
                Piece::Text("lo".into()),
                Piece::Done {
                    finish: FinishReason::Length,
                    usage: Usage {
                        prompt_tokens: 7,
                        completion_tokens: 2,
                        cached_tokens: 0,
                    }
                }
            ]
        );
        for cut in 1..CHAT.len() {
            let mut r = Reader::default();
            let mut pieces = r.push(&CHAT.as_bytes()[..cut]);
            pieces.extend(r.push(&CHAT.as_bytes()[cut..]));
            assert_eq!(pieces, whole, "cut at {cut}");
            assert_eq!(r.finish(), None);
        }
    }

    #[test]
    fn errors_garbage_cut_and_oversized_streams_end_in_a_failure() {
        let mut r = Reader::default();
        let p = r.push(b"data: {\"choices\":[{\"text\":\"a\",\"finish_reason\":null}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\ndata: [DONE]\n\n");
        assert_eq!(
            p,
            vec![Piece::Text("a".into()), Piece::Failed("boom".into())]
        );
        assert_eq!(r.finish(), None);
        assert!(matches!(
            Reader::default().push(b"data: nope\n\n")[..],
            [Piece::Failed(_)]
        ));
        assert!(matches!(
            Reader::default().push(b"data: [DONE]\n\n")[..],
            [Piece::Failed(_)]
        ));
        let mut cut = Reader::default();
        assert!(cut.push(b"data: {\"choices\":[]}\n\n").is_empty());
        assert!(matches!(cut.finish(), Some(Piece::Failed(_))));
        let mut big = Reader::default();
        let p = big.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(matches!(p[..], [Piece::Failed(_)]));
        assert!(big.push(b"\n\ndata: [DONE]\n\n").is_empty());
    }

    #[test]
    fn replies_have_ollamas_shape() {
        let chat = Reply {
            shape: Shape::Chat,
            model: "m".into(),
        };
        let c = chat.chunk("Hi", 0);
        assert_eq!(c["message"]["content"], "Hi");
        assert_eq!(c["done"], false);
        assert_eq!(c["created_at"], "1970-01-01T00:00:00.000000000Z");
        let timing = Timing {
            total: Duration::from_millis(3),
            prompt: Duration::from_millis(1),
            eval: Duration::from_millis(2),
        };
        let usage = Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            cached_tokens: 0,
        };
        let gen = Reply {
            shape: Shape::Generate,
            model: "m".into(),
        };
        let d = gen.done("Hi", "stop", usage, timing, 0);
        assert_eq!(d["response"], "Hi");
        assert_eq!(
            (d["done"].clone(), d["done_reason"].clone()),
            (json!(true), json!("stop"))
        );
        assert_eq!(
            (d["prompt_eval_count"].as_u64(), d["eval_count"].as_u64()),
            (Some(5), Some(2))
        );
        assert_eq!(d["total_duration"], 3_000_000);
        assert_eq!(d["eval_duration"], 2_000_000);
        assert_eq!(error("x"), json!({"error": "x"}));
    }

    #[test]
    fn rfc3339_dates_are_civil_utc() {
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339(1_796_132_096_500_000_000),
            "2026-12-01T13:34:56.500000000Z"
        );
    }
}
