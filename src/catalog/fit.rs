//! Memory fit, as plain arithmetic: what a model needs (weights + f16 KV cache for a context +
//! overhead) against the room there is, and which context size to run with — for one model
//! ([`plan_context`]) or several served side by side ([`plan_contexts`]: the sum must fit).
//! No probing here; [`super::memory`] measures the room.

use super::data::CatalogEntry;

/// Context per sequence when `--ctx` is not given: the training context, at most this.
pub const DEFAULT_MAX_CTX: u32 = 4096;
/// Smallest context worth serving; lowering below this is a refusal instead.
pub const MIN_CTX: u32 = 512;
/// Contexts chosen automatically are multiples of this.
const CTX_STEP: u32 = 256;
/// Bytes of one f16 value in the KV cache.
const F16_BYTES: u64 = 2;

/// What a model needs in memory, apart from the context size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelMemory {
    /// Bytes of weights (sum of the GGUF parts).
    pub weights_bytes: u64,
    /// KV-cache bytes for one token of context (all layers, keys and values).
    pub kv_bytes_per_token: u64,
    /// Training context length in tokens.
    pub train_ctx: u32,
}

impl ModelMemory {
    /// Estimate from catalog data: its KV shape when listed, else a size-based guess.
    pub fn from_entry(entry: &CatalogEntry) -> Self {
        let kv_bytes_per_token = match entry.kv {
            Some(kv) => kv_bytes_per_token(kv.layers, kv.kv_heads, kv.head_dim, kv.head_dim),
            None => guess_kv_bytes_per_token(entry.params),
        };
        Self {
            weights_bytes: entry.size,
            kv_bytes_per_token,
            train_ctx: entry.context,
        }
    }

    /// Bytes needed for `ctx` tokens per sequence × `parallel` sequences.
    pub fn need_bytes(&self, ctx: u32, parallel: u32) -> u64 {
        self.fixed_bytes()
            .saturating_add(self.kv_bytes(ctx, parallel))
    }

    /// Weights plus overhead: what is needed before any context.
    pub fn fixed_bytes(&self) -> u64 {
        self.weights_bytes
            .saturating_add(overhead_bytes(self.weights_bytes))
    }

    /// KV-cache bytes for `ctx` tokens per sequence × `parallel` sequences.
    pub fn kv_bytes(&self, ctx: u32, parallel: u32) -> u64 {
        self.kv_bytes_per_token
            .saturating_mul(u64::from(ctx))
            .saturating_mul(u64::from(parallel.max(1)))
    }

    /// The context `serve` uses by default: the training context, at most [`DEFAULT_MAX_CTX`].
    pub fn default_ctx(&self) -> u32 {
        self.train_ctx.clamp(1, DEFAULT_MAX_CTX)
    }
}

/// f16 K and V for every layer: `layers × (kv_heads × key_dim + kv_heads × value_dim) × 2 bytes`.
pub fn kv_bytes_per_token(layers: u32, kv_heads: u32, key_dim: u32, value_dim: u32) -> u64 {
    let per_layer = u64::from(kv_heads) * (u64::from(key_dim) + u64::from(value_dim));
    u64::from(layers) * per_layer * F16_BYTES
}

/// Guess for models without a known shape: 48 KiB × √(billions of parameters), of the same order
/// as the grouped-query-attention models in the catalog (144 KiB for an 8B model, 256 KiB for
/// 32B). Only used until the GGUF header can be read.
pub fn guess_kv_bytes_per_token(params: u64) -> u64 {
    let billions = (params as f64 / 1e9).max(0.1);
    (48.0 * 1024.0 * billions.sqrt()) as u64
}

/// Compute buffers, graph and runtime: 256 MiB + 2% of the weights.
pub fn overhead_bytes(weights_bytes: u64) -> u64 {
    256 * 1024 * 1024 + weights_bytes / 50
}

/// Why a model does not fit. The message names what is needed and the room there is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    #[error(
        "model does not fit: its weights and buffers need {} but only {} of memory is available",
        human_bytes(*need),
        human_bytes(*room)
    )]
    Weights { need: u64, room: u64 },
    #[error(
        "model does not fit with --ctx {ctx} × {parallel} sequences: needs {} (weights and buffers {} + KV cache {}) but only {} is available{}",
        human_bytes(*need),
        human_bytes(*fixed),
        human_bytes(need.saturating_sub(*fixed)),
        human_bytes(*room),
        match max_ctx { Some(c) => format!("; the most that fits is --ctx {c}"), None => String::new() }
    )]
    Context {
        ctx: u32,
        parallel: u32,
        need: u64,
        fixed: u64,
        room: u64,
        max_ctx: Option<u32>,
    },
    #[error(
        "model {index} of {count} does not fit next to the others, which take {} of the {} available: {cause}",
        human_bytes(*others),
        human_bytes(*room)
    )]
    Together {
        /// 1-based position of the model that does not fit.
        index: usize,
        count: usize,
        /// Bytes the other models take (the ones before at their planned context, the ones
        /// after at their smallest).
        others: u64,
        room: u64,
        cause: Box<FitError>,
    },
}

/// The largest context per sequence (multiple of 256) whose KV cache fits next to the weights.
pub fn max_ctx_that_fits(need: &ModelMemory, parallel: u32, available_bytes: u64) -> u32 {
    let spare = available_bytes.saturating_sub(need.fixed_bytes());
    let per_ctx_token = need
        .kv_bytes_per_token
        .saturating_mul(u64::from(parallel.max(1)))
        .max(1);
    let tokens = (spare / per_ctx_token).min(u64::from(u32::MAX)) as u32;
    tokens / CTX_STEP * CTX_STEP
}

/// Picks the context per sequence for `serve`.
///
/// With `requested_ctx` the answer is that context or an error; without it, the default
/// context ([`ModelMemory::default_ctx`]) lowered to what fits, but not below [`MIN_CTX`].
pub fn plan_context(
    need: &ModelMemory,
    requested_ctx: Option<u32>,
    parallel: u32,
    available_bytes: u64,
) -> Result<u32, FitError> {
    let parallel = parallel.max(1);
    let fixed = need.fixed_bytes();
    if fixed > available_bytes {
        return Err(FitError::Weights {
            need: fixed,
            room: available_bytes,
        });
    }
    let max_fit = max_ctx_that_fits(need, parallel, available_bytes);
    let context_error = |ctx: u32| FitError::Context {
        ctx,
        parallel,
        need: need.need_bytes(ctx, parallel),
        fixed,
        room: available_bytes,
        max_ctx: (max_fit >= MIN_CTX).then_some(max_fit),
    };
    match requested_ctx {
        Some(ctx) if need.need_bytes(ctx, parallel) <= available_bytes => Ok(ctx),
        Some(ctx) => Err(context_error(ctx)),
        None => {
            let default = need.default_ctx();
            if need.need_bytes(default, parallel) <= available_bytes {
                Ok(default)
            } else if max_fit >= MIN_CTX.min(default) {
                Ok(max_fit.min(default))
            } else {
                Err(context_error(MIN_CTX.min(default)))
            }
        }
    }
}

/// Contexts for several models served side by side, in order: the sum of their needs must fit
/// in `available_bytes`. Each model is planned as [`plan_context`] plans one, in the room left
/// by the others: those before it at the context they were given, those after it at the least
/// they would run with (`requested_ctx`, else [`MIN_CTX`] or their smaller default). So the
/// first models keep their default context while there is room, and a later model that does
/// not fit is refused naming the room the others take.
pub fn plan_contexts(
    needs: &[ModelMemory],
    requested_ctx: Option<u32>,
    parallel: u32,
    available_bytes: u64,
) -> Result<Vec<u32>, FitError> {
    let parallel = parallel.max(1);
    let least = |m: &ModelMemory| {
        let ctx = requested_ctx.unwrap_or_else(|| MIN_CTX.min(m.default_ctx()));
        m.need_bytes(ctx, parallel)
    };
    let mut planned: Vec<u32> = Vec::with_capacity(needs.len());
    let mut before = 0u64;
    for (i, m) in needs.iter().enumerate() {
        let after = needs[i + 1..]
            .iter()
            .fold(0u64, |sum, later| sum.saturating_add(least(later)));
        let others = before.saturating_add(after);
        let room = available_bytes.saturating_sub(others);
        let ctx = plan_context(m, requested_ctx, parallel, room).map_err(|e| {
            if needs.len() == 1 {
                e
            } else {
                FitError::Together {
                    index: i + 1,
                    count: needs.len(),
                    others,
                    room: available_bytes,
                    cause: Box::new(e),
                }
            }
        })?;
        before = before.saturating_add(m.need_bytes(ctx, parallel));
        planned.push(ctx);
    }
    Ok(planned)
}

/// `1.5 GiB`, `300.0 MiB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    fn model() -> ModelMemory {
        // Qwen3-8B-like: 5 GB of weights, 36 layers × 8 KV heads × 128 dims.
        ModelMemory {
            weights_bytes: 5_000_000_000,
            kv_bytes_per_token: kv_bytes_per_token(36, 8, 128, 128),
            train_ctx: 40960,
        }
    }

    #[test]
    fn kv_bytes_per_token_matches_llama_cpp_f16_layout() {
        // 36 layers × (8×128 K + 8×128 V) × 2 bytes = 144 KiB.
        assert_eq!(kv_bytes_per_token(36, 8, 128, 128), 147_456);
    }

    #[test]
    fn default_context_is_kept_when_it_fits() {
        assert_eq!(plan_context(&model(), None, 4, 64 * GIB), Ok(4096));
    }

    #[test]
    fn default_context_is_lowered_to_what_fits() {
        let m = model();
        let room = m.fixed_bytes() + m.kv_bytes(1000, 4);
        let ctx = plan_context(&m, None, 4, room).unwrap();
        assert_eq!(ctx, 768, "largest multiple of 256 under 1000");
        assert!(m.need_bytes(ctx, 4) <= room);
    }

    #[test]
    fn requested_context_is_kept_or_refused_with_need_and_room() {
        let m = model();
        assert_eq!(plan_context(&m, Some(8192), 1, 64 * GIB), Ok(8192));
        let err = plan_context(&m, Some(32768), 4, 8 * GIB).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--ctx 32768"), "{msg}");
        assert!(msg.contains(&human_bytes(m.need_bytes(32768, 4))), "{msg}");
        assert!(msg.contains("8.0 GiB"), "{msg}");
        assert!(msg.contains("the most that fits is --ctx"), "{msg}");
    }

    #[test]
    fn weights_that_do_not_fit_are_refused() {
        let err = plan_context(&model(), None, 1, 2 * GIB).unwrap_err();
        assert!(matches!(err, FitError::Weights { room, .. } if room == 2 * GIB));
        assert!(err.to_string().contains("2.0 GiB"));
    }

    #[test]
    fn too_little_room_for_the_minimum_context_is_refused() {
        let m = model();
        let room = m.fixed_bytes() + m.kv_bytes(100, 1);
        assert!(matches!(
            plan_context(&m, None, 1, room),
            Err(FitError::Context { max_ctx: None, .. })
        ));
    }

    #[test]
    fn small_training_context_is_the_default() {
        let m = ModelMemory {
            train_ctx: 2048,
            ..model()
        };
        assert_eq!(plan_context(&m, None, 1, 64 * GIB), Ok(2048));
    }

    #[test]
    fn guess_is_above_known_shapes() {
        assert!(guess_kv_bytes_per_token(8_190_000_000) >= kv_bytes_per_token(36, 8, 128, 128) / 2);
        assert!(guess_kv_bytes_per_token(1_000_000) > 0);
    }

    fn small(weights_bytes: u64) -> ModelMemory {
        ModelMemory {
            weights_bytes,
            kv_bytes_per_token: kv_bytes_per_token(30, 3, 64, 64),
            train_ctx: 8192,
        }
    }

    #[test]
    fn several_models_that_fit_alone_are_refused_when_their_sum_does_not() {
        let (a, b) = (small(3 * GIB), small(3 * GIB));
        let room = a.need_bytes(4096, 4) + GIB;
        assert_eq!(plan_context(&a, None, 4, room), Ok(4096));
        assert_eq!(plan_context(&b, None, 4, room), Ok(4096));
        let err = plan_contexts(&[a, b], None, 4, room).unwrap_err();
        assert!(
            matches!(
                err,
                FitError::Together {
                    index: 1,
                    count: 2,
                    ..
                }
            ),
            "{err}"
        );
        // The first model is refused: the room left after the second's smallest need.
        let msg = err.to_string();
        assert!(
            msg.contains("model 1 of 2 does not fit next to the others"),
            "{msg}"
        );
        assert!(
            msg.contains(&human_bytes(b.need_bytes(MIN_CTX, 4))),
            "{msg}"
        );
        assert!(msg.contains(&human_bytes(room)), "{msg}");
    }

    #[test]
    fn several_models_that_fit_together_share_the_room() {
        let (a, b) = (small(GIB), small(2 * GIB));
        // Room for both at the default context.
        let room = a.need_bytes(4096, 4) + b.need_bytes(4096, 4);
        assert_eq!(plan_contexts(&[a, b], None, 4, room), Ok(vec![4096, 4096]));
        // Less room: the first keeps what leaves the second its minimum, and the sum fits.
        let room = a.need_bytes(4096, 4) + b.need_bytes(MIN_CTX, 4) - 1;
        let ctxs = plan_contexts(&[a, b], None, 4, room).unwrap();
        assert!(ctxs[0] < 4096 && ctxs[1] >= MIN_CTX, "{ctxs:?}");
        assert!(a.need_bytes(ctxs[0], 4) + b.need_bytes(ctxs[1], 4) <= room);
        // An explicit --ctx holds for every model, or the plan is refused.
        let room = a.need_bytes(2048, 1) + b.need_bytes(2048, 1);
        assert_eq!(
            plan_contexts(&[a, b], Some(2048), 1, room),
            Ok(vec![2048, 2048])
        );
        assert!(plan_contexts(&[a, b], Some(2048), 1, room - 1).is_err());
    }

    #[test]
    fn one_model_plans_as_plan_context_does() {
        let m = model();
        for room in [2 * GIB, 6 * GIB, 64 * GIB] {
            assert_eq!(
                plan_contexts(&[m], None, 4, room),
                plan_context(&m, None, 4, room).map(|c| vec![c])
            );
        }
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}
