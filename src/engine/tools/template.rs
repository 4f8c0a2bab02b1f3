//! Rendering a model's own chat template (GGUF `tokenizer.chat_template`, Jinja) with tools.
//!
//! Why minijinja: llama.cpp's C API (`llama_chat_apply_template`, what llama-cpp-2 exposes)
//! does not run Jinja; it matches the template against a list of built-in formats that take
//! role and content only, so tools, tool calls and tool results would be lost. llama-server runs
//! the template with its C++ Jinja engine (minja, in `common`, which llama-cpp-2 does not bind).
//! Templates are written for Python's Jinja2 as Hugging Face runs it (`trim_blocks`,
//! `lstrip_blocks`, `raise_exception`, `tojson`, Python string methods), so the environment
//! here is set up the same way (minijinja-contrib's pycompat gives the string methods). One
//! difference: JSON objects reach the template with their keys sorted (serde_json without
//! `preserve_order`, which this crate does not turn on: other JSON here is signed or compared).

use minijinja::value::{Kwargs, Value as JValue};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;
use serde_json::{json, Value};

use super::{Tools, Turn};

/// The messages in OpenAI's shape, as templates expect them; tool-call arguments as objects
/// (templates write them with `tojson`).
pub fn messages_json(turns: &[Turn]) -> Value {
    turns
        .iter()
        .map(|t| {
            let mut m = json!({"role": t.role, "content": t.content});
            if !t.tool_calls.is_empty() {
                if t.content.is_empty() {
                    m["content"] = Value::Null;
                }
                m["tool_calls"] = t
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let args = serde_json::from_str::<Value>(&c.arguments)
                            .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                        json!({"id": c.id, "type": "function",
                               "function": {"name": c.name, "arguments": args}})
                    })
                    .collect();
            }
            if let Some(id) = &t.tool_call_id {
                m["tool_call_id"] = json!(id);
            }
            if let Some(name) = &t.name {
                m["name"] = json!(name);
            }
            m
        })
        .collect()
}

/// The tools in OpenAI's shape.
pub fn tools_json(tools: &Tools) -> Value {
    tools
        .defs
        .iter()
        .map(|d| {
            json!({"type": "function", "function": {
                "name": d.name, "description": d.description, "parameters": d.parameters,
            }})
        })
        .collect()
}

/// Renders `source` for `turns` and `tools`, ending with the assistant's turn.
pub fn render(
    source: &str,
    turns: &[Turn],
    tools: &Tools,
    bos_token: &str,
    eos_token: &str,
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| {
        strftime(&format, crate::util::time::unix_secs())
    });
    env.add_filter("tojson", tojson);
    let template = env
        .template_from_str(source)
        .map_err(|e| format!("the chat template does not parse: {e:#}"))?;
    let ctx = json!({
        "messages": messages_json(turns),
        "tools": tools_json(tools),
        "add_generation_prompt": true,
        "bos_token": bos_token,
        "eos_token": eos_token,
    });
    template
        .render(ctx)
        .map_err(|e| format!("the chat template failed: {e:#}"))
}

/// Writes JSON as Python's `json.dumps` does by default (`", "` and `": "` separators, no
/// HTML escaping), as Hugging Face's `tojson` does; `indent=N` pretty-prints.
fn tojson(value: JValue, kwargs: Kwargs) -> Result<JValue, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = Vec::new();
    let result = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let f = serde_json::ser::PrettyFormatter::with_indent(&pad);
            v.serialize(&mut serde_json::Serializer::with_formatter(&mut out, f))
        }
        None => v.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PyFormatter,
        )),
    };
    result.map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(JValue::from_safe_string(
        String::from_utf8(out).unwrap_or_default(),
    ))
}

struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// The few `strftime` codes chat templates use (Llama 3.x: `"%d %b %Y"`), in UTC.
fn strftime(format: &str, unix: u64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tools::{ToolCall, ToolChoice, ToolDef};

    /// Qwen 2.5's template (tools part), as shipped in its GGUFs.
    const QWEN25: &str = r#"{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#;

    fn tools() -> Tools {
        Tools {
            defs: vec![ToolDef {
                name: "get_weather".into(),
                description: "Weather of a city".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            }],
            choice: ToolChoice::Auto,
            parallel: true,
        }
    }

    #[test]
    fn qwen_template_renders_tools_calls_and_results() {
        let turns = vec![
            Turn {
                role: "user".into(),
                content: "Weather in Paris?".into(),
                ..Turn::default()
            },
            Turn {
                role: "assistant".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Paris"}"#.into(),
                }],
                ..Turn::default()
            },
            Turn {
                role: "tool".into(),
                content: "sunny, 24 C".into(),
                tool_call_id: Some("call_1".into()),
                ..Turn::default()
            },
        ];
        let text = render(QWEN25, &turns, &tools(), "", "<|im_end|>").unwrap();
        assert!(
            text.starts_with("<|im_start|>system\nYou are Qwen"),
            "{text}"
        );
        // Python's separators; keys sorted (serde_json's maps sort, where Python keeps order).
        assert!(
            text.contains(r#"<tools>
{"function": {"description": "Weather of a city", "name": "get_weather", "parameters": {"properties": {"city": {"type": "string"}}, "type": "object"}}, "type": "function"}
</tools>"#),
            "{text}"
        );
        assert!(
            text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"),
            "{text}"
        );
        assert!(
            text.contains(
                "<|im_start|>user\n<tool_response>\nsunny, 24 C\n</tool_response><|im_end|>"
            ),
            "{text}"
        );
        assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
    }

    #[test]
    fn python_methods_raise_exception_and_dates_work() {
        let t = "{{ bos_token }}{{ messages[0].content.strip().upper() }}{% if messages[0].content.startswith(' a') %}!{% endif %}{{ strftime_now('%d %b %Y')|length }}";
        let turns = vec![Turn {
            role: "user".into(),
            content: " abc ".into(),
            ..Turn::default()
        }];
        assert_eq!(
            render(t, &turns, &tools(), "<s>", "</s>").unwrap(),
            "<s>ABC!11"
        );
        let raising = "{{ raise_exception('Conversation roles must alternate') }}";
        let e = render(raising, &turns, &tools(), "", "").unwrap_err();
        assert!(e.contains("roles must alternate"), "{e}");
        assert!(render("{% if %}", &turns, &tools(), "", "")
            .unwrap_err()
            .contains("does not parse"));
        assert_eq!(
            strftime("%Y-%m-%d %H:%M:%S %B", 1_721_952_000 + 3_723),
            "2024-07-26 01:02:03 July"
        );
    }
}
