//! Tools (function calling): how a request's `tools` reach the model and how its tool calls come
//! back out. Pure data and plain functions; the engine and the HTTP layer call them.
//!
//! Two ways, chosen per request by [`format_for`]:
//! - **native**: the model's own Jinja chat template knows tools and its family is one we can
//!   parse (Qwen 2.5 / Hermes `<tool_call>`, Llama 3.x JSON, Mistral `[TOOL_CALLS]`): the template
//!   renders the tools (`template`), the model answers in its trained format, `parse` reads it;
//! - **generic** (every other model, and `tool_choice` `required` or a named function on any
//!   model): the tools are described in the system prompt and a grammar makes the model answer
//!   `{"tool_call": {"name": .., "arguments": {..}}}` or `{"response": ".."}`, as llama.cpp's
//!   generic format does (`generic`). With `required` or a named function only tool calls are
//!   allowed, so the choice is enforced, not hoped for.

pub mod generic;
pub mod parse;
pub mod template;

use serde_json::Value;

use super::ChatMessage;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// A JSON schema of the arguments object.
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    Named(String),
}

/// A request's tools: what may be called, and whether and how.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tools {
    pub defs: Vec<ToolDef>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (OpenAI's default: true).
    pub parallel: bool,
}

impl Tools {
    /// The model may (or must) call a tool in this request.
    pub fn active(&self) -> bool {
        !self.defs.is_empty() && self.choice != ToolChoice::None
    }
}

/// A tool call, asked for by the model or echoed back in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON text (OpenAI's shape).
    pub arguments: String,
}

/// A chat message with what tools add: an assistant's `tool_calls`, a tool result's id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Turn {
    pub role: String,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    /// On `role: tool`: the call this result answers.
    pub tool_call_id: Option<String>,
    /// On `role: tool`: the function's name, when the client gives it.
    pub name: Option<String>,
}

/// How tool calls are written in the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Qwen 2.5, Hermes 2/3: `<tool_call>{"name": .., "arguments": ..}</tool_call>`.
    Hermes,
    /// Llama 3.x: `{"name": .., "parameters": ..}`, maybe after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": .., "arguments": ..}]`.
    Mistral,
    /// Grammar-enforced JSON (`generic`).
    Generic,
    /// No tools in play: the output is text.
    Text,
}

/// What the model answered: text, tool calls, or both (text around native calls).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// A tool request ready to generate: the prompt's tokens, the grammar the output must match
/// (generic format), and the format to parse the output with.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolPrompt {
    pub tokens: Vec<i32>,
    pub grammar: Option<String>,
    pub format: Format,
}

/// A prompt before tokenizing: rendered by the model's Jinja template already, or plain
/// messages for the engine's usual (llama.cpp) template.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    Jinja(String),
    Plain(Vec<ChatMessage>),
}

/// Decides how a request with tools (or a history with tool calls) is prompted on a model whose
/// raw Jinja template is `jinja` (none: a stand-in, or a model without one): the rendered
/// prompt, the grammar, the output format. A native template that fails to render falls back
/// to the generic format (logged). Errors: the generic grammar cannot be built.
pub fn plan(
    turns: &[Turn],
    tools: &Tools,
    jinja: Option<&str>,
    bos_token: &str,
    eos_token: &str,
) -> Result<(Rendered, Option<String>, Format), String> {
    let mut format = format_for(tools, jinja.and_then(native_format));
    if let (Some(source), Format::Hermes | Format::Llama3 | Format::Mistral) = (jinja, format) {
        match template::render(source, turns, tools, bos_token, eos_token) {
            Ok(text) => return Ok((Rendered::Jinja(text), None, format)),
            Err(e) => {
                tracing::warn!("{e}; using the generic tool-call format");
                format = Format::Generic;
            }
        }
    }
    let grammar = match format {
        Format::Generic => Some(generic::grammar(tools)?),
        _ => None,
    };
    let messages = generic::messages(turns, tools, format == Format::Generic);
    Ok((Rendered::Plain(messages), grammar, format))
}

/// The native format of a chat template, read from its text; `None` when the template does not
/// render tools or writes calls in a format we cannot parse.
pub fn native_format(template: &str) -> Option<Format> {
    if !template.contains("tools") {
        return None;
    }
    if template.contains("<tool_call>") {
        Some(Format::Hermes)
    } else if template.contains("[TOOL_CALLS]") {
        Some(Format::Mistral)
    } else if template.contains("<|python_tag|>")
        || (template.contains("<|start_header_id|>") && template.contains("\"parameters\""))
    {
        Some(Format::Llama3)
    } else {
        None
    }
}

/// The format a request uses on a model whose template has `native` format: native only when
/// the model may choose (`auto`); `required` and named choices need the generic grammar.
pub fn format_for(tools: &Tools, native: Option<Format>) -> Format {
    if !tools.active() {
        return Format::Text;
    }
    match (&tools.choice, native) {
        (ToolChoice::Auto, Some(f)) => f,
        _ => Format::Generic,
    }
}

/// A fresh call id in OpenAI's style.
pub fn new_call_id() -> String {
    format!("call_{:024x}", rand::random::<u128>() >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            defs: vec![ToolDef {
                name: "f".into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
            }],
            choice,
            parallel: true,
        }
    }

    #[test]
    fn template_families_are_recognised_by_their_tool_markers() {
        let qwen = "{%- if tools %}<tools>{{ tool | tojson }}</tools> <tool_call>{% endif %}";
        assert_eq!(native_format(qwen), Some(Format::Hermes));
        let mistral = "{%- if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]";
        assert_eq!(native_format(mistral), Some(Format::Mistral));
        let llama = "{%- if tools %}<|start_header_id|>ipython{% endif %}<|python_tag|>";
        assert_eq!(native_format(llama), Some(Format::Llama3));
        // The test model's template (ChatML, no tools) and an unknown tool format: generic.
        assert_eq!(native_format("<|im_start|>{{ message.content }}"), None);
        assert_eq!(native_format("{% if tools %}<functions>{% endif %}"), None);
    }

    #[test]
    fn only_auto_uses_the_native_format() {
        let native = Some(Format::Hermes);
        assert_eq!(format_for(&tools(ToolChoice::Auto), native), Format::Hermes);
        assert_eq!(format_for(&tools(ToolChoice::Auto), None), Format::Generic);
        assert_eq!(
            format_for(&tools(ToolChoice::Required), native),
            Format::Generic
        );
        assert_eq!(
            format_for(&tools(ToolChoice::Named("f".into())), native),
            Format::Generic
        );
        assert_eq!(format_for(&tools(ToolChoice::None), native), Format::Text);
        assert_eq!(format_for(&Tools::default(), native), Format::Text);
        assert!(new_call_id().starts_with("call_") && new_call_id() != new_call_id());
    }
}
