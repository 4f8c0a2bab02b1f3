//! The generic tool-call format, for models whose template has no tools (or whose format we
//! cannot parse) and for `tool_choice` `required` / a named function: the tools are described
//! in the system prompt, and a grammar (from a JSON schema, through `engine::grammar`) makes the
//! model answer with one of, as llama.cpp's generic format does:
//!
//! ```text
//! {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}
//! {"tool_calls": [{"name": .., "arguments": {..}}, ..]}     (parallel_tool_calls)
//! {"response": "It is sunny in Paris."}                      (tool_choice auto only)
//! ```
//!
//! The history is rewritten for templates that know no tools: an assistant's tool calls become
//! its JSON answer above, and tool results become a user message
//! `{"tool_response": {"id": .., "name": .., "content": ..}}` (consecutive results in one).

use serde_json::{json, Value};

use super::{ToolCall, ToolChoice, Tools, Turn};
use crate::engine::{grammar, ChatMessage};

/// The JSON schema a generic answer must match.
pub fn schema(tools: &Tools) -> Value {
    let offered: Vec<Value> = tools
        .defs
        .iter()
        .filter(|d| match &tools.choice {
            ToolChoice::Named(n) => &d.name == n,
            _ => true,
        })
        .map(|d| {
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "const": d.name},
                    "arguments": d.parameters,
                },
                "required": ["name", "arguments"],
            })
        })
        .collect();
    let one = if offered.len() == 1 {
        offered[0].clone()
    } else {
        json!({"anyOf": offered})
    };
    let calls = if tools.parallel {
        json!({
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": one, "minItems": 1}},
            "required": ["tool_calls"],
        })
    } else {
        json!({
            "type": "object",
            "properties": {"tool_call": one},
            "required": ["tool_call"],
        })
    };
    match tools.choice {
        ToolChoice::Auto => json!({"anyOf": [calls, {
            "type": "object",
            "properties": {"response": {"type": "string"}},
            "required": ["response"],
        }]}),
        _ => calls,
    }
}

/// The grammar of [`schema`], or why it cannot be built (too large, a schema llama.cpp's
/// converter refuses).
pub fn grammar(tools: &Tools) -> Result<String, String> {
    grammar::from_json_schema(&schema(tools))
}

/// The system prompt text describing the tools and the answer format.
pub fn system_text(tools: &Tools) -> String {
    let list: Vec<Value> = tools
        .defs
        .iter()
        .map(|d| json!({"name": d.name, "description": d.description, "parameters": d.parameters}))
        .collect();
    let list = serde_json::to_string_pretty(&list).unwrap_or_default();
    let call = if tools.parallel {
        r#"{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}"#
    } else {
        r#"{"tool_call": {"name": "<tool name>", "arguments": {<arguments>}}}"#
    };
    let rule = match &tools.choice {
        ToolChoice::Named(n) => format!("You must call the tool `{n}`, answering with:\n{call}"),
        ToolChoice::Required => format!("You must call a tool, answering with:\n{call}"),
        _ => format!(
            "Answer in JSON: to call tools, with\n{call}\nor, to reply to the user, with\n{{\"response\": \"<your reply>\"}}"
        ),
    };
    format!("You can call the following tools:\n{list}\n\n{rule}")
}

/// How an assistant's tool calls read in the generic format.
pub fn calls_text(calls: &[ToolCall], parallel: bool) -> String {
    let one = |c: &ToolCall| {
        let args = serde_json::from_str::<Value>(&c.arguments)
            .unwrap_or_else(|_| Value::String(c.arguments.clone()));
        json!({"name": c.name, "arguments": args})
    };
    if parallel || calls.len() > 1 {
        json!({"tool_calls": calls.iter().map(one).collect::<Vec<_>>()}).to_string()
    } else {
        calls
            .first()
            .map_or_else(String::new, |c| json!({"tool_call": one(c)}).to_string())
    }
}

/// The history as plain messages for a template without tools; `describe` puts the tools'
/// description in the system prompt (the generic format), otherwise (tool_choice `none`, or
/// only a history with tools) only the history is rewritten.
pub fn messages(turns: &[Turn], tools: &Tools, describe: bool) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(turns.len() + 1);
    for t in turns {
        if t.role == "tool" {
            let mut response = json!({"content": t.content});
            if let Some(id) = &t.tool_call_id {
                response["id"] = json!(id);
            }
            if let Some(name) = &t.name {
                response["name"] = json!(name);
            }
            let result = json!({ "tool_response": response }).to_string();
            match out.last_mut() {
                // Results of parallel calls: one user message.
                Some(prev)
                    if prev.role == "user" && prev.content.starts_with("{\"tool_response\"") =>
                {
                    prev.content.push('\n');
                    prev.content.push_str(&result);
                }
                _ => out.push(ChatMessage {
                    role: "user".into(),
                    content: result,
                }),
            }
            continue;
        }
        let mut content = t.content.clone();
        if !t.tool_calls.is_empty() {
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&calls_text(&t.tool_calls, tools.parallel));
        }
        out.push(ChatMessage {
            role: t.role.clone(),
            content,
        });
    }
    if describe {
        let text = system_text(tools);
        match out.first_mut() {
            Some(first) if first.role == "system" => {
                first.content = format!("{}\n\n{text}", first.content);
            }
            _ => out.insert(
                0,
                ChatMessage {
                    role: "system".into(),
                    content: text,
                },
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tools::{parse, Format, ToolDef};

    fn tools(choice: ToolChoice, parallel: bool) -> Tools {
        let def = |name: &str| ToolDef {
            name: name.into(),
            description: format!("{name} things"),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        };
        Tools {
            defs: vec![def("get_weather"), def("get_time")],
            choice,
            parallel,
        }
    }

    #[test]
    fn auto_allows_a_response_and_required_does_not() {
        let auto = schema(&tools(ToolChoice::Auto, false));
        assert_eq!(auto["anyOf"][1]["required"], json!(["response"]));
        let required = schema(&tools(ToolChoice::Required, false));
        assert!(
            required.to_string().contains("tool_call")
                && !required.to_string().contains("response")
        );
        let named = schema(&tools(ToolChoice::Named("get_time".into()), true));
        let s = named.to_string();
        assert!(s.contains("get_time") && !s.contains("get_weather"), "{s}");
        assert!(s.contains("tool_calls") && s.contains("minItems"), "{s}");
        for t in [
            tools(ToolChoice::Auto, true),
            tools(ToolChoice::Required, false),
        ] {
            let g = grammar(&t).unwrap();
            assert!(g.contains("root ::="), "{g}");
        }
    }

    #[test]
    fn history_with_calls_and_results_becomes_plain_messages() {
        let t = tools(ToolChoice::Auto, false);
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        };
        let turns = vec![
            Turn {
                role: "user".into(),
                content: "Weather in Paris and Rome?".into(),
                ..Turn::default()
            },
            Turn {
                role: "assistant".into(),
                tool_calls: vec![
                    call.clone(),
                    ToolCall {
                        id: "call_2".into(),
                        ..call.clone()
                    },
                ],
                ..Turn::default()
            },
            Turn {
                role: "tool".into(),
                content: "sunny".into(),
                tool_call_id: Some("call_1".into()),
                ..Turn::default()
            },
            Turn {
                role: "tool".into(),
                content: "rainy".into(),
                tool_call_id: Some("call_2".into()),
                ..Turn::default()
            },
        ];
        let m = messages(&turns, &t, true);
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert!(m[0].content.contains("get_weather") && m[0].content.contains("\"response\""));
        // The assistant's calls read back as the calls they were.
        let back = parse::parse(Format::Generic, &m[2].content);
        assert_eq!(back.calls.len(), 2);
        assert_eq!(back.calls[0].arguments, r#"{"city":"Paris"}"#);
        assert!(m[3].content.contains("sunny") && m[3].content.contains("rainy"));
        assert!(m[3].content.contains("call_2"));
        // An existing system prompt is kept, the description added to it; none when not asked.
        let sys = vec![Turn {
            role: "system".into(),
            content: "Be brief.".into(),
            ..Turn::default()
        }];
        let m = messages(&sys, &t, true);
        assert_eq!(m.len(), 1);
        assert!(m[0].content.starts_with("Be brief.\n\nYou can call"));
        assert_eq!(messages(&sys, &t, false)[0].content, "Be brief.");
    }
}
