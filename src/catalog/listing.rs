//! The catalog as `mesh models` and `mesh --auto` see it: each entry with whether it is in the
//! Hugging Face cache, whether it fits this machine's memory and, given the machine's figures,
//! how fast it would decode here. Pure apart from looking at the cache.

use serde::Serialize;

use super::data::CatalogEntry;
use super::fit::{plan_context, ModelMemory};
use super::speed::{estimate_entry, Machine, Speed};
use super::{installed_paths, ResolveOptions};

/// One row of `mesh models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    #[serde(flatten)]
    pub entry: CatalogEntry,
    /// All files are in the Hugging Face cache.
    pub installed: bool,
    /// Fits in this machine's memory at `ctx`, with as many sequences as asked (`mesh models`:
    /// one; `--auto`: `--parallel`).
    pub fits: bool,
    /// Context used for the fit check.
    pub ctx: u32,
    /// Estimated bytes needed at `ctx` for those sequences.
    pub need_bytes: u64,
    /// Expected decode speed here (when the machine's figures were given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
}

/// Builds the rows: installed from the cache, fit against `available` bytes (one sequence at
/// the default context).
pub fn rows(entries: &[CatalogEntry], opts: &ResolveOptions, available: u64) -> Vec<ModelRow> {
    rows_on(entries, opts, available, None, Sizing::default())
}

/// The context and sequences a model is fitted with: what `mesh serve` would load it with
/// (`--ctx`, `--parallel`), so that a model called fitting also loads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    /// The context asked for; `None`: the model's default, lowered to what fits.
    pub ctx: Option<u32>,
    pub parallel: u32,
}

impl Default for Sizing {
    fn default() -> Self {
        Self {
            ctx: None,
            parallel: 1,
        }
    }
}

/// [`rows`] with each model's decode speed on `machine`.
pub fn rows_on(
    entries: &[CatalogEntry],
    opts: &ResolveOptions,
    available: u64,
    machine: Option<&Machine>,
    sizing: Sizing,
) -> Vec<ModelRow> {
    entries
        .iter()
        .map(|e| {
            let need = ModelMemory::from_entry(e);
            let planned = plan_context(&need, sizing.ctx, sizing.parallel, available);
            let ctx = planned.clone().unwrap_or_else(|_| need.default_ctx());
            ModelRow {
                entry: e.clone(),
                installed: installed_paths(e, &opts.cache_dir).is_some(),
                fits: planned.is_ok(),
                ctx,
                need_bytes: need.need_bytes(ctx, sizing.parallel.max(1)),
                speed: machine.map(|m| estimate_entry(e, m)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_mark_fit_and_installed() {
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ResolveOptions {
            cache_dir: dir.path().to_path_buf(),
            ..ResolveOptions::from_env()
        };
        let rows = rows(&catalog.models, &opts, 4 * 1024 * 1024 * 1024);
        let smol = rows
            .iter()
            .find(|r| r.entry.name.starts_with("SmolLM2"))
            .unwrap();
        assert!(smol.fits && !smol.installed);
        let big = rows
            .iter()
            .find(|r| r.entry.name.starts_with("MiniMax"))
            .unwrap();
        assert!(!big.fits);
    }

    #[test]
    fn the_fit_is_checked_at_the_context_and_sequences_the_model_would_be_served_with() {
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let smol: Vec<CatalogEntry> = catalog
            .models
            .iter()
            .filter(|e| e.name.starts_with("SmolLM2"))
            .cloned()
            .collect();
        let need = ModelMemory::from_entry(&smol[0]);
        let ctx = need.default_ctx();
        let room = need.need_bytes(ctx, 1);
        let opts = ResolveOptions::from_env();
        let one = &rows_on(&smol, &opts, room, None, Sizing::default())[0];
        assert!(one.fits && one.ctx == ctx && one.need_bytes == room);
        let four = Sizing {
            ctx: Some(ctx),
            parallel: 4,
        };
        let served = &rows_on(&smol, &opts, room, None, four)[0];
        assert!(
            !served.fits,
            "four sequences at {ctx} do not fit in one's room"
        );
        assert_eq!(served.need_bytes, need.need_bytes(ctx, 4));
        let small = Sizing {
            ctx: Some(512),
            parallel: 4,
        };
        assert!(rows_on(&smol, &opts, room, None, small)[0].fits);
    }
}
