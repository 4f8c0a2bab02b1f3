//! Reading tool calls out of a model's whole output, one plain function per format. Output that
//! does not hold a well-formed call in the expected format is text (never an error: the model
//! answered, just not with a call).

use serde_json::{Map, Value};

use super::{new_call_id, Format, Reply, ToolCall};

const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const LLAMA_PYTHON_TAG: &str = "<|python_tag|>";
const MISTRAL_CALLS: &str = "[TOOL_CALLS]";

/// The reply `text` holds, read in `format`.
pub fn parse(format: Format, text: &str) -> Reply {
    let calls = match format {
        Format::Text => None,
        Format::Hermes => return hermes(text),
        Format::Llama3 => llama3(text),
        Format::Mistral => mistral(text),
        Format::Generic => return generic(text),
    };
    match calls {
        Some(calls) if !calls.is_empty() => Reply {
            content: None,
            calls,
        },
        _ => text_reply(text),
    }
}

fn text_reply(text: &str) -> Reply {
    Reply {
        content: Some(text.to_owned()),
        calls: Vec::new(),
    }
}

/// `{"name": "f", <args_key>: {..}}` (arguments as an object or as JSON text) as a call.
fn call(v: &Value, args_keys: &[&str]) -> Option<ToolCall> {
    let o = v.as_object()?;
    let name = o.get("name")?.as_str()?.to_owned();
    let args = args_keys.iter().find_map(|k| o.get(*k));
    let arguments = match args {
        None => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v @ Value::Object(_)) => v.to_string(),
        Some(_) => return None,
    };
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map_or_else(new_call_id, str::to_owned);
    Some(ToolCall {
        id,
        name,
        arguments,
    })
}

/// Qwen 2.5 / Hermes: each call in `<tool_call>…</tool_call>`; the text around them is content.
/// A last call whose closing tag never came (the model stopped on its end token) still counts.
fn hermes(text: &str) -> Reply {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(HERMES_OPEN) {
        let body_and_more = &rest[at + HERMES_OPEN.len()..];
        let (body, after) = match body_and_more.find(HERMES_CLOSE) {
            Some(end) => (
                &body_and_more[..end],
                &body_and_more[end + HERMES_CLOSE.len()..],
            ),
            None => (body_and_more, ""),
        };
        match serde_json::from_str::<Value>(body.trim())
            .ok()
            .and_then(|v| call(&v, &["arguments", "parameters"]))
        {
            Some(c) => {
                content.push_str(&rest[..at]);
                calls.push(c);
            }
            // Not a call after all: keep it as text.
            None => content.push_str(&rest[..at + HERMES_OPEN.len() + body.len()]),
        }
        rest = after;
    }
    content.push_str(rest);
    if calls.is_empty() {
        return text_reply(text);
    }
    let content = content.trim();
    Reply {
        content: (!content.is_empty()).then(|| content.to_owned()),
        calls,
    }
}

/// Consecutive JSON values separated by whitespace, `;` or `,`; `None` when anything else is
/// in between.
fn json_values(text: &str) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    let mut rest = text.trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',');
    while !rest.is_empty() {
        let mut de = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let v = de.next()?.ok()?;
        out.push(v);
        rest = rest[de.byte_offset()..]
            .trim_start_matches(|c: char| c.is_whitespace() || c == ';' || c == ',');
    }
    Some(out)
}

/// Llama 3.x: the whole answer is `{"name": .., "parameters": {..}}` (several separated by `;`),
/// after `<|python_tag|>` when the template's special token shows.
fn llama3(text: &str) -> Option<Vec<ToolCall>> {
    let body = text.trim_start();
    let body = body.strip_prefix(LLAMA_PYTHON_TAG).unwrap_or(body);
    if !body.trim_start().starts_with('{') {
        return None;
    }
    json_values(body)?
        .iter()
        .map(|v| call(v, &["parameters", "arguments"]))
        .collect()
}

/// Mistral: `[TOOL_CALLS]` (a control token: absent from the text when rendered without
/// special tokens) then a JSON array of `{"name": .., "arguments": {..}}`.
fn mistral(text: &str) -> Option<Vec<ToolCall>> {
    let body = text.trim_start();
    let tagged = body.strip_prefix(MISTRAL_CALLS);
    let body = tagged.unwrap_or(body).trim();
    if !body.starts_with("[{") {
        return None;
    }
    let values = json_values(body)?;
    let mut calls = Vec::new();
    for v in &values {
        for item in v.as_array()? {
            calls.push(call(item, &["arguments", "parameters"])?);
        }
    }
    Some(calls)
}

/// The generic format: `{"tool_call": {..}}`, `{"tool_calls": [..]}` or `{"response": ".."}`.
fn generic(text: &str) -> Reply {
    let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text.trim()) else {
        return text_reply(text);
    };
    let one = |v: &Value| call(v, &["arguments"]);
    let calls: Option<Vec<ToolCall>> = match (o.get("tool_call"), o.get("tool_calls")) {
        (Some(c), _) => one(c).map(|c| vec![c]),
        (None, Some(Value::Array(cs))) => cs.iter().map(one).collect(),
        _ => None,
    };
    if let Some(calls) = calls.filter(|c| !c.is_empty()) {
        return Reply {
            content: None,
            calls,
        };
    }
    match response_text(&o) {
        Some(r) => Reply {
            content: Some(r),
            calls: Vec::new(),
        },
        None => text_reply(text),
    }
}

fn response_text(o: &Map<String, Value>) -> Option<String> {
    match o.get("response")? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(r: &Reply) -> Vec<(&str, &str)> {
        r.calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect()
    }

    #[test]
    fn hermes_calls_are_read_with_the_text_around_them() {
        let r = parse(
            Format::Hermes,
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>",
        );
        assert_eq!(
            calls(&r),
            [("get_weather", r#"{"city":"Paris"}"#), ("get_time", "{}")]
        );
        assert_eq!(r.content.as_deref(), Some("Let me check."));
        assert!(r.calls[0].id.starts_with("call_"));
        // Stopped on the end token before the closing tag.
        let r = parse(
            Format::Hermes,
            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}",
        );
        assert_eq!(calls(&r), [("f", r#"{"x":1}"#)]);
        assert_eq!(r.content, None);
    }

    #[test]
    fn hermes_text_without_a_well_formed_call_stays_text() {
        for text in [
            "The answer is 4.",
            "<tool_call>not json</tool_call> done",
            "<tool_call>{\"arguments\": {}}</tool_call>",
        ] {
            let r = parse(Format::Hermes, text);
            assert!(r.calls.is_empty(), "{text}");
            assert_eq!(r.content.as_deref(), Some(text));
        }
    }

    #[test]
    fn llama3_json_calls_with_or_without_the_python_tag() {
        let r = parse(
            Format::Llama3,
            r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
        );
        assert_eq!(calls(&r), [("get_weather", r#"{"city":"Paris"}"#)]);
        let r = parse(
            Format::Llama3,
            r#"<|python_tag|>{"name": "a", "parameters": {}}; {"name": "b", "arguments": "{\"k\":2}"}"#,
        );
        assert_eq!(calls(&r), [("a", "{}"), ("b", r#"{"k":2}"#)]);
        for text in [
            "Paris is sunny.",
            r#"{"city": "Paris"}"#,
            r#"{"name": "a", "parameters": {}} and then some"#,
        ] {
            let r = parse(Format::Llama3, text);
            assert!(r.calls.is_empty(), "{text}");
            assert_eq!(r.content.as_deref(), Some(text));
        }
    }

    #[test]
    fn mistral_call_lists_with_or_without_the_control_token() {
        let r = parse(
            Format::Mistral,
            r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "abc123def"}]"#,
        );
        assert_eq!(calls(&r), [("get_weather", r#"{"city":"Paris"}"#)]);
        assert_eq!(r.calls[0].id, "abc123def");
        let r = parse(
            Format::Mistral,
            r#" [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"n": 1}}]"#,
        );
        assert_eq!(calls(&r), [("a", "{}"), ("b", r#"{"n":1}"#)]);
        for text in ["Sure, here you go.", "[1, 2, 3]", r#"[{"name": 5}]"#] {
            let r = parse(Format::Mistral, text);
            assert!(r.calls.is_empty(), "{text}");
        }
    }

    #[test]
    fn generic_tool_calls_and_responses() {
        let r = parse(
            Format::Generic,
            r#"{"tool_call": {"name": "f", "arguments": {"q": "x"}}}"#,
        );
        assert_eq!(calls(&r), [("f", r#"{"q":"x"}"#)]);
        let r = parse(
            Format::Generic,
            r#"{"tool_calls": [{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"a": [1]}}]}"#,
        );
        assert_eq!(calls(&r), [("f", "{}"), ("g", r#"{"a":[1]}"#)]);
        let r = parse(Format::Generic, r#"{"response": "It is sunny."}"#);
        assert_eq!(r.content.as_deref(), Some("It is sunny."));
        assert!(r.calls.is_empty());
        // Cut off by max_tokens: the raw text comes back as content.
        let r = parse(Format::Generic, r#"{"tool_call": {"name": "f", "argu"#);
        assert_eq!(
            r.content.as_deref(),
            Some(r#"{"tool_call": {"name": "f", "argu"#)
        );
        assert_eq!(parse(Format::Text, "hi").content.as_deref(), Some("hi"));
    }
}
