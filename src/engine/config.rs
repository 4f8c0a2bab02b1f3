//! Engine settings: the flags ([`EngineConfig`]), what is served ([`ModelInfo`]) and the pure
//! rules between them ([`resolve`]: default context, threads, parallelism).
//!
//! Plain data and plain functions: no llama.cpp, no threads, so the defaults are unit-tested.

use std::path::PathBuf;

use super::EngineError;
use crate::util::model_id::model_id_from_file;

/// Context per sequence when neither `--ctx` nor a smaller training context says otherwise.
pub const DEFAULT_CTX: u32 = 4096;
/// The smallest context per sequence the engine accepts.
const MIN_CTX: u32 = 16;

/// How to start the engine (`mesh serve` flags).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// Model id in the API; derived from the file name when absent.
    pub model_name: Option<String>,
    pub parallel: u32,
    /// Context per sequence; default: training context, at most [`DEFAULT_CTX`].
    pub ctx: Option<u32>,
    /// CPU threads; default: physical cores.
    pub threads: Option<u32>,
    /// Requests that may wait for a slot.
    pub queue: usize,
    /// Layers to offload to a GPU back end (ignored on CPU builds).
    pub gpu_layers: u32,
    /// Keep each slot's KV cache after its request and reuse the prefix a later request shares
    /// (system prompt, earlier chat turns). Off: every prompt is decoded whole.
    pub prefix_cache: bool,
    /// llama.cpp RPC servers (`127.0.0.1:PORT`, split serving): their devices take the last
    /// `gpu_layers` layers, the rest stay here. Empty: the model is whole on this machine.
    pub rpc: Vec<String>,
}

impl EngineConfig {
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            model_name: None,
            parallel: 4,
            ctx: None,
            threads: None,
            queue: 64,
            gpu_layers: u32::MAX,
            prefix_cache: true,
            rpc: Vec::new(),
        }
    }
}

/// Where a model's layers run, as far as a decode's speed goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Every layer on the CPU: no GPU back end sees a discrete GPU, or `gpu_layers` is 0.
    Cpu,
    /// Every layer on a discrete GPU.
    Gpu,
    /// More than one device: layers partly offloaded, or split over RPC servers.
    Mixed,
}

/// Where `layers` layers run with `gpu_layers` offloaded, when a discrete GPU is present
/// (`has_gpu`) and RPC servers take part (`rpc`).
pub fn placement(has_gpu: bool, gpu_layers: u32, layers: u32, rpc: bool) -> Placement {
    if rpc {
        Placement::Mixed
    } else if !has_gpu || gpu_layers == 0 {
        Placement::Cpu
    } else if gpu_layers >= layers {
        Placement::Gpu
    } else {
        Placement::Mixed
    }
}

/// What the engine serves, for `/v1/models` and `/api/status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: PathBuf,
    /// Context per sequence.
    pub ctx: u32,
    pub n_ctx_train: u32,
    pub parallel: u32,
    pub threads: u32,
    pub queue_capacity: usize,
    /// Unix time the model was loaded.
    pub created: u64,
    /// An embedding model: its GGUF declares a pooling type (`embed::is_embedding_model`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub embedding: bool,
}

/// The settings the engine runs with, from the flags, the model's training context, the
/// machine's physical cores and the load time.
pub(super) fn resolve(
    cfg: &EngineConfig,
    n_ctx_train: u32,
    physical_cores: usize,
    created: u64,
) -> Result<ModelInfo, EngineError> {
    let ctx = cfg
        .ctx
        .unwrap_or_else(|| DEFAULT_CTX.min(n_ctx_train.max(256)));
    if ctx < MIN_CTX {
        return Err(EngineError::Context(format!(
            "context of {ctx} tokens is too small"
        )));
    }
    let threads = cfg
        .threads
        .unwrap_or_else(|| u32::try_from(physical_cores.max(1)).unwrap_or(u32::MAX));
    Ok(ModelInfo {
        name: cfg
            .model_name
            .clone()
            .unwrap_or_else(|| model_id_from_file(&cfg.model_path.to_string_lossy())),
        path: cfg.model_path.clone(),
        ctx,
        n_ctx_train,
        parallel: cfg.parallel.max(1),
        threads,
        queue_capacity: cfg.queue,
        created,
        embedding: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EngineConfig {
        EngineConfig::new("/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }

    #[test]
    fn default_context_is_the_training_context_capped_at_default_ctx() {
        assert_eq!(resolve(&cfg(), 2048, 4, 0).unwrap().ctx, 2048);
        assert_eq!(resolve(&cfg(), 8192, 4, 0).unwrap().ctx, DEFAULT_CTX);
        assert_eq!(resolve(&cfg(), DEFAULT_CTX, 4, 0).unwrap().ctx, DEFAULT_CTX);
    }

    #[test]
    fn default_context_is_at_least_256_even_for_a_tiny_training_context() {
        assert_eq!(resolve(&cfg(), 0, 4, 0).unwrap().ctx, 256);
        assert_eq!(resolve(&cfg(), 100, 4, 0).unwrap().ctx, 256);
        assert_eq!(resolve(&cfg(), 300, 4, 0).unwrap().ctx, 300);
    }

    #[test]
    fn an_explicit_context_wins_over_the_training_context() {
        let c = EngineConfig {
            ctx: Some(100_000),
            ..cfg()
        };
        let info = resolve(&c, 2048, 4, 0).unwrap();
        assert_eq!(info.ctx, 100_000);
        assert_eq!(info.n_ctx_train, 2048);
    }

    #[test]
    fn a_context_under_16_tokens_is_refused() {
        let c = EngineConfig {
            ctx: Some(15),
            ..cfg()
        };
        let err = resolve(&c, 2048, 4, 0).unwrap_err();
        assert!(
            matches!(err, EngineError::Context(ref m) if m.contains("15 tokens")),
            "{err}"
        );
        let c = EngineConfig {
            ctx: Some(16),
            ..cfg()
        };
        assert_eq!(resolve(&c, 2048, 4, 0).unwrap().ctx, 16);
    }

    #[test]
    fn threads_default_to_physical_cores_and_at_least_one() {
        assert_eq!(resolve(&cfg(), 2048, 6, 0).unwrap().threads, 6);
        assert_eq!(resolve(&cfg(), 2048, 0, 0).unwrap().threads, 1);
        let c = EngineConfig {
            threads: Some(3),
            ..cfg()
        };
        assert_eq!(resolve(&c, 2048, 6, 0).unwrap().threads, 3);
    }

    #[test]
    fn a_model_is_on_one_device_only_when_every_layer_is() {
        assert_eq!(placement(false, u32::MAX, 30, false), Placement::Cpu);
        assert_eq!(placement(true, 0, 30, false), Placement::Cpu);
        assert_eq!(placement(true, u32::MAX, 30, false), Placement::Gpu);
        assert_eq!(placement(true, 30, 30, false), Placement::Gpu);
        assert_eq!(placement(true, 29, 30, false), Placement::Mixed);
        assert_eq!(placement(false, 10, 30, true), Placement::Mixed);
    }

    #[test]
    fn parallel_is_at_least_one() {
        let c = EngineConfig {
            parallel: 0,
            ..cfg()
        };
        assert_eq!(resolve(&c, 2048, 4, 0).unwrap().parallel, 1);
        let c = EngineConfig {
            parallel: 8,
            ..cfg()
        };
        assert_eq!(resolve(&c, 2048, 4, 0).unwrap().parallel, 8);
    }

    #[test]
    fn the_name_comes_from_the_flag_or_else_the_file_name() {
        let info = resolve(&cfg(), 2048, 4, 1234).unwrap();
        assert_eq!(
            info.name,
            model_id_from_file("/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert_eq!(info.path, cfg().model_path);
        assert_eq!(info.created, 1234);
        assert_eq!(info.queue_capacity, 64);
        let c = EngineConfig {
            model_name: Some("my-model".into()),
            ..cfg()
        };
        assert_eq!(resolve(&c, 2048, 4, 0).unwrap().name, "my-model");
    }
}
