//! The loaded GGUF model: loading, chat template, tokenization and detokenization.
//! `LlamaModel` is `Send + Sync`, so HTTP handlers tokenize here while the scheduler decodes.

use std::path::Path;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use super::tools::{self, Rendered, ToolPrompt, Tools, Turn};
use super::EngineError;

/// A chat message as the template sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// ChatML, used when a model ships no template of its own.
const FALLBACK_TEMPLATE: &str = "chatml";

pub struct Model {
    pub(super) inner: LlamaModel,
    template: LlamaChatTemplate,
    /// The GGUF's own template text (Jinja), for requests with tools (`tools::template`).
    jinja: Option<String>,
    /// Every end-of-generation token of the vocabulary.
    pub(super) eog_tokens: Vec<i32>,
}

impl Model {
    /// Loads `path`, `gpu_layers` of its layers on `devices` (backend device indices; empty:
    /// llama.cpp's default, the GPUs if any).
    pub fn load(
        backend: &LlamaBackend,
        path: &Path,
        gpu_layers: u32,
        devices: &[usize],
    ) -> Result<Self, EngineError> {
        if !path.is_file() {
            return Err(EngineError::Load(format!(
                "no such model file: {}",
                path.display()
            )));
        }
        let mut params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        if !devices.is_empty() {
            params = params
                .with_devices(devices)
                .map_err(|e| EngineError::Load(format!("devices {devices:?}: {e}")))?;
        }
        let inner = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let (template, jinja) = match inner.chat_template(None) {
            Ok(t) => {
                let jinja = t.to_string().ok();
                (t, jinja)
            }
            Err(_) => {
                tracing::warn!("model has no chat template; using {FALLBACK_TEMPLATE}");
                let t = LlamaChatTemplate::new(FALLBACK_TEMPLATE).expect("constant has no NUL");
                (t, None)
            }
        };
        let eog_tokens = (0..inner.n_vocab())
            .filter(|&t| inner.vocab().is_eog(LlamaToken(t)))
            .collect();
        Ok(Self {
            inner,
            template,
            jinja,
            eog_tokens,
        })
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }

    /// Renders messages with the model's own chat template, ending with the assistant's turn.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::BadInput(format!("message text: {e}")))?;
        self.inner
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| EngineError::BadInput(format!("chat template failed: {e}")))
    }

    /// A request with tools: rendered by the GGUF's Jinja template when its tool format is one
    /// we parse, else with the generic format through the usual template (`tools::plan`).
    pub fn tool_prompt(&self, turns: &[Turn], tools: &Tools) -> Result<ToolPrompt, EngineError> {
        let vocab = self.inner.vocab();
        // llama.cpp throws (aborts) on an id outside the vocabulary: a model without BOS has -1.
        let text_of = |t: LlamaToken| {
            (0..self.inner.n_vocab())
                .contains(&t.0)
                .then(|| vocab.text(t))
                .flatten()
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (bos, eos) = (text_of(vocab.bos()), text_of(vocab.eos()));
        let (rendered, grammar, format) =
            tools::plan(turns, tools, self.jinja.as_deref(), &bos, &eos)
                .map_err(EngineError::BadInput)?;
        let text = match rendered {
            // The template writes the BOS itself; `tokenize` adds it too when the model wants it.
            Rendered::Jinja(t) if !bos.is_empty() && vocab.should_add_bos() => {
                t.strip_prefix(bos.as_str()).map(str::to_owned).unwrap_or(t)
            }
            Rendered::Jinja(t) => t,
            Rendered::Plain(messages) => self.apply_chat_template(&messages)?,
        };
        Ok(ToolPrompt {
            tokens: self.tokenize(&text),
            grammar,
            format,
        })
    }

    /// Tokenizes text as llama-server does: the model's BOS if it wants one, special tokens parsed.
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        self.inner
            .vocab()
            .tokenize(text.as_bytes(), true, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The bytes a generated token stands for (special tokens render as nothing).
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        self.inner
            .vocab()
            .token_to_piece(LlamaToken(token), false, None)
    }

    pub fn is_end_of_generation(&self, token: i32) -> bool {
        self.inner.vocab().is_eog(LlamaToken(token))
    }
}
