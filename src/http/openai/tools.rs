//! Function calling in OpenAI's request and response shapes: `tools`, `tool_choice`,
//! `parallel_tool_calls` and the history's `tool_calls` read and checked (a 400 names the
//! problem); tool calls written as a message's `tool_calls` and as streamed deltas. Pure. How
//! tools reach the model and come back out is `engine::tools`.

use serde_json::{json, Value};

use crate::engine::grammar;
use crate::engine::tools::{new_call_id, ToolCall, ToolChoice, ToolDef, Tools, Turn};
use crate::http::error::ApiError;

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;
/// Longest function name (OpenAI's limit).
pub const MAX_NAME_BYTES: usize = 64;
/// Most tool calls one assistant message of the history may hold.
pub const MAX_HISTORY_CALLS: usize = 128;

fn bad(message: String) -> ApiError {
    ApiError::bad_request(message)
}

/// A function name as OpenAI allows it: 1-64 of `a-z A-Z 0-9 _ -` (also `.` and `:`, which
/// MCP tool names use).
fn check_name(at: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "{at}: function name {name:?} must be 1 to {MAX_NAME_BYTES} letters, digits, '_', '-', '.' or ':'"
        )))
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls` of a chat request.
pub fn tools(
    tools: Option<Vec<Value>>,
    choice: Option<Value>,
    parallel: Option<bool>,
) -> Result<Tools, ApiError> {
    let list = tools.unwrap_or_default();
    if list.len() > MAX_TOOLS {
        return Err(bad(format!(
            "'tools' holds {} tools, more than {MAX_TOOLS}",
            list.len()
        )));
    }
    let mut defs: Vec<ToolDef> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if t["type"] != "function" {
            return Err(bad(format!("{at}.type must be \"function\"")));
        }
        let f = t
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| bad(format!("{at}.function must be an object")))?;
        let name = f["name"]
            .as_str()
            .ok_or_else(|| bad(format!("{at}.function.name is required")))?;
        check_name(&format!("{at}.function.name"), name)?;
        if defs.iter().any(|d| d.name == name) {
            return Err(bad(format!("{at}: a second function named '{name}'")));
        }
        let description = match &f["description"] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            _ => return Err(bad(format!("{at}.function.description must be a string"))),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(bad(format!(
                    "{at}.function.parameters must be a JSON schema object"
                )))
            }
        };
        // The schema must be one llama.cpp's converter takes: the generic format enforces it.
        grammar::from_json_schema(&parameters)
            .map_err(|e| bad(format!("{at}.function.parameters ('{name}'): {e}")))?;
        defs.push(ToolDef {
            name: name.to_owned(),
            description,
            parameters,
        });
    }
    let choice = match &choice {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(format!(
                    "'tool_choice' must be \"auto\", \"none\", \"required\" or a function, got {other:?}"
                )))
            }
        },
        Some(v @ Value::Object(_)) => {
            let name = v["function"]["name"]
                .as_str()
                .filter(|_| v["type"] == "function")
                .ok_or_else(|| {
                    bad("'tool_choice' as an object must be {\"type\": \"function\", \"function\": {\"name\": ...}}".into())
                })?;
            if !defs.iter().any(|d| d.name == name) {
                return Err(bad(format!(
                    "'tool_choice' names function '{name}', which is not in 'tools'"
                )));
            }
            ToolChoice::Named(name.to_owned())
        }
        Some(_) => {
            return Err(bad(
                "'tool_choice' must be a string or an object".into(),
            ))
        }
    };
    if defs.is_empty() && choice == ToolChoice::Required {
        return Err(bad(
            "'tool_choice' is \"required\" but 'tools' is empty".into()
        ));
    }
    Ok(Tools {
        defs,
        choice,
        parallel: parallel.unwrap_or(true),
    })
}

/// An assistant message's `tool_calls` in the history (message `i`).
pub fn history_calls(i: usize, calls: Vec<Value>) -> Result<Vec<ToolCall>, ApiError> {
    if calls.len() > MAX_HISTORY_CALLS {
        return Err(bad(format!(
            "messages[{i}].tool_calls holds more than {MAX_HISTORY_CALLS} calls"
        )));
    }
    calls
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("messages[{i}].tool_calls[{j}]");
            let f = &c["function"];
            let name = f["name"]
                .as_str()
                .ok_or_else(|| bad(format!("{at}.function.name is required")))?;
            let arguments = match &f["arguments"] {
                Value::String(s) => s.clone(),
                Value::Null => "{}".to_owned(),
                v @ Value::Object(_) => v.to_string(),
                _ => {
                    return Err(bad(format!(
                        "{at}.function.arguments must be a JSON string"
                    )))
                }
            };
            let id = c["id"].as_str().map_or_else(new_call_id, str::to_owned);
            Ok(ToolCall {
                id,
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

/// Whether a request goes the tools way: tools offered, or a history with tool calls or
/// results (which a plain template would drop or garble).
pub fn in_play(tools: &Tools, turns: &[Turn]) -> bool {
    !tools.defs.is_empty()
        || turns
            .iter()
            .any(|t| t.role == "tool" || !t.tool_calls.is_empty())
}

/// A message's `tool_calls` (`index` set: the shape of a streamed delta).
pub fn calls_json(calls: &[ToolCall], with_index: bool) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let mut v = json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": c.arguments}});
            if with_index {
                v["index"] = json!(index);
            }
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "d",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}})
    }

    #[test]
    fn tools_and_every_tool_choice_are_read() {
        let t = tools(Some(vec![weather()]), None, None).unwrap();
        assert_eq!(t.defs[0].name, "get_weather");
        assert_eq!((t.choice.clone(), t.parallel), (ToolChoice::Auto, true));
        for (choice, want) in [
            (json!("none"), ToolChoice::None),
            (json!("required"), ToolChoice::Required),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                ToolChoice::Named("get_weather".into()),
            ),
        ] {
            let t = tools(Some(vec![weather()]), Some(choice), Some(false)).unwrap();
            assert_eq!(t.choice, want);
            assert!(!t.parallel);
        }
        // No parameters: an empty object.
        let bare = json!({"type": "function", "function": {"name": "now"}});
        assert_eq!(
            tools(Some(vec![bare]), None, None).unwrap().defs[0].parameters["type"],
            "object"
        );
    }

    #[test]
    fn invalid_tools_are_400_naming_the_problem() {
        let cases = [
            (vec![json!({"type": "retrieval"})], None, "tools[0].type"),
            (vec![json!({"type": "function"})], None, "tools[0].function"),
            (
                vec![json!({"type": "function", "function": {"name": "has space"}})],
                None,
                "has space",
            ),
            (
                vec![json!({"type": "function", "function": {"name": "f",
                       "parameters": {"type": "object", "properties": {"a": {"type": "strnig"}}}}})],
                None,
                "strnig",
            ),
            (
                vec![json!({"type": "function", "function": {"name": "f", "parameters": "x"}})],
                None,
                "parameters",
            ),
            (vec![weather(), weather()], None, "second function"),
            (
                vec![weather()],
                Some(json!({"type": "function", "function": {"name": "get_time"}})),
                "get_time",
            ),
            (vec![weather()], Some(json!("sometimes")), "sometimes"),
            (vec![], Some(json!("required")), "required"),
        ];
        for (list, choice, needle) in cases {
            let e = tools(Some(list.clone()), choice, None).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(needle), "{list:?}: {}", e.message);
        }
        let many = vec![weather(); MAX_TOOLS + 1];
        assert!(tools(Some(many), None, None).is_err());
    }

    #[test]
    fn history_calls_keep_ids_and_arguments_text() {
        let calls = history_calls(
            1,
            vec![json!({"id": "call_9", "type": "function",
                        "function": {"name": "f", "arguments": "{\"a\":1}"}})],
        )
        .unwrap();
        assert_eq!(
            calls,
            [ToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: r#"{"a":1}"#.into()
            }]
        );
        let e = history_calls(3, vec![json!({"function": {}})]).unwrap_err();
        assert!(
            e.message.contains("messages[3].tool_calls[0]"),
            "{}",
            e.message
        );
        let v = calls_json(&calls, true);
        assert_eq!(v[0]["index"], 0);
        assert_eq!(v[0]["function"]["arguments"], r#"{"a":1}"#);
    }
}
