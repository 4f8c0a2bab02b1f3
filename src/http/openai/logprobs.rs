//! Log-probabilities in OpenAI's two shapes: chat's `{"content": [{token, logprob, bytes,
//! top_logprobs}]}` and the legacy completions' `{tokens, token_logprobs, top_logprobs,
//! text_offset}` (`text_offset`: byte offset of each token in the choice's generated text).
//! Pure: engine values in, JSON out; pieces of one choice (stream chunks) merge into one.

use serde_json::{json, Map, Value};

use crate::engine::TokenLogprob;

/// A log-probability as JSON: llama.cpp reports -inf for impossible tokens; JSON has no
/// infinity, so it becomes the most negative finite number (as llama-server does).
fn number(lp: f32) -> Value {
    json!(if lp.is_finite() { lp } else { f32::MIN })
}

fn token_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The logprobs of `tokens` in chat's shape (`chat`) or the legacy one; `offset` is the byte
/// offset of the first token in the choice's text, advanced past them (legacy shape only).
pub fn render(chat: bool, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
    if chat {
        let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let top: Vec<Value> = t
                        .top
                        .iter()
                        .map(|a| json!({"token": token_text(&a.bytes), "logprob": number(a.logprob), "bytes": a.bytes}))
                        .collect();
                    json!({"token": token_text(&t.bytes), "logprob": number(t.logprob), "bytes": t.bytes, "top_logprobs": top})
                })
                .collect();
        json!({ "content": content })
    } else {
        let mut text_offset = Vec::with_capacity(tokens.len());
        for t in tokens {
            text_offset.push(*offset);
            *offset += t.bytes.len();
        }
        let top: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let mut m = Map::new();
                for a in &t.top {
                    m.insert(token_text(&a.bytes), number(a.logprob));
                }
                Value::Object(m)
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|t| token_text(&t.bytes)).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| number(t.logprob)).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": text_offset,
        })
    }
}

/// Appends one chunk's logprobs to a choice's: every list extends (either shape); `null`
/// pieces change nothing.
pub fn merge(acc: &mut Value, piece: &Value) {
    let Some(piece) = piece.as_object() else {
        return;
    };
    if !acc.is_object() {
        *acc = Value::Object(Map::new());
    }
    let acc = acc.as_object_mut().expect("just made an object");
    for (k, v) in piece {
        match (acc.get_mut(k), v) {
            (Some(Value::Array(a)), Value::Array(b)) => a.extend(b.iter().cloned()),
            (None, v) => {
                acc.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TopLogprob;

    fn tok(text: &str, lp: f32) -> TokenLogprob {
        TokenLogprob {
            bytes: text.as_bytes().to_vec(),
            logprob: lp,
            top: vec![
                TopLogprob {
                    bytes: text.as_bytes().to_vec(),
                    logprob: lp,
                },
                TopLogprob {
                    bytes: b"x".to_vec(),
                    logprob: f32::NEG_INFINITY,
                },
            ],
        }
    }

    #[test]
    fn chat_shape_has_token_logprob_bytes_and_alternatives() {
        let v = render(true, &[tok("Hi", -0.5)], &mut 0);
        let c = &v["content"][0];
        assert_eq!(c["token"], "Hi");
        assert_eq!(c["logprob"], -0.5);
        assert_eq!(c["bytes"], json!([72, 105]));
        assert_eq!(c["top_logprobs"][0]["token"], "Hi");
        assert!(c["top_logprobs"][1]["logprob"].as_f64().unwrap() < -1e30);
    }

    #[test]
    fn legacy_shape_offsets_continue_across_chunks_and_pieces_merge() {
        let mut offset = 0;
        let mut acc = Value::Null;
        merge(&mut acc, &render(false, &[tok("Once", -1.0)], &mut offset));
        merge(&mut acc, &Value::Null);
        let more = [tok(" upon", -2.0), tok(" a", -0.25)];
        merge(&mut acc, &render(false, &more, &mut offset));
        assert_eq!(acc["tokens"], json!(["Once", " upon", " a"]));
        assert_eq!(acc["token_logprobs"], json!([-1.0, -2.0, -0.25]));
        assert_eq!(acc["text_offset"], json!([0, 4, 9]));
        assert_eq!(acc["top_logprobs"][1][" upon"], -2.0);
        let mut chat = Value::Null;
        merge(&mut chat, &render(true, &[tok("a", -1.0)], &mut 0));
        merge(&mut chat, &render(true, &[tok("b", -1.0)], &mut 0));
        assert_eq!(chat["content"].as_array().unwrap().len(), 2);
    }
}
