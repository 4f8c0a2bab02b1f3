//! The model catalog, memory fit and Hugging Face downloads.
//!
//! - [`data`]: the catalog as data (`catalog/models.toml`, embedded; `--catalog FILE`).
//! - [`spec`], [`names`]: what a user may type for a model, and "did you mean".
//! - [`fit`], [`memory`], [`gguf`]: memory a model needs vs the room there is.
//! - [`cache`]: the standard Hugging Face cache layout, shared with Python's `huggingface_hub`.
//! - [`hub`], [`download`], [`progress`]: metadata, resumable verified transfers, progress.
//! - [`hasher`]: sha256 on its own thread, overlapping the transfer.
//! - [`disk`]: the lock file, free space, whole-file sha256, blocking file work off the workers.
//! - [`fetch`]: a model's file set into the cache (or found there), part by part.
//! - [`resolve`](resolve()) (here): spec in, local GGUF path out, downloading if needed.
//! - [`listing`]: catalog rows with installed / fits, as `mesh models` and `--auto` see them.
//! - [`speed`], [`bandwidth`]: expected decode tok/s (pure), from the machine's measured
//!   memory bandwidth (cached in `~/.mesh/machine.json`).
//!
//! A domain module: it imports only `util` (no engine, mesh, HTTP, clap or printing);
//! `cmd::models` and `cmd::progress` are its command side.

pub mod bandwidth;
pub mod cache;
pub mod data;
pub mod disk;
pub mod download;
pub mod elect;
pub mod error;
pub mod fetch;
pub mod fit;
pub mod gguf;
pub mod hasher;
pub mod hub;
pub mod listing;
pub mod memory;
pub mod names;
pub mod progress;
pub mod spec;
pub mod speed;
pub mod split;

use std::path::PathBuf;

use anyhow::Context;

pub use data::{Catalog, CatalogEntry};
pub use error::DownloadError;
pub use fit::{plan_context, plan_contexts, FitError, ModelMemory};
pub use memory::available_memory;
pub use progress::Progress;

pub use fetch::{expand_split, fetch_entry, installed_paths};

use crate::util::model_id::model_id_from_file;
use cache::HubCache;
use fetch::{fetch_hub_files, fetch_url};
use hub::RetryPolicy;
use progress::ProgressSink;
use spec::{parse_spec, ModelSpec};

/// Where and how to find and fetch models.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Catalog file replacing the embedded one.
    pub catalog: Option<PathBuf>,
    /// Hub base URL (`HF_ENDPOINT`, `--hf-endpoint`).
    pub endpoint: String,
    /// Access token for gated/private repos (`HF_TOKEN`, else the `token` file of `HF_HOME`).
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The hub cache root (`…/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Where download progress goes (quiet unless the caller gives a sink).
    pub progress: Progress,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// Re-hash files already in the cache before using them.
    pub verify: bool,
}

impl Default for ResolveOptions {
    /// Same as [`ResolveOptions::from_env`].
    fn default() -> Self {
        Self::from_env()
    }
}

impl ResolveOptions {
    /// Settings from `HF_ENDPOINT`, `HF_TOKEN` (or the cached token file), `HF_HUB_OFFLINE`,
    /// `HF_HUB_CACHE`/`HF_HOME`/`XDG_CACHE_HOME`, as the Python tools read them.
    pub fn from_env() -> Self {
        let env = |k: &str| std::env::var(k).ok();
        let cache_dir = cache::hub_cache_dir(env, std::env::home_dir())
            .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"));
        let token = env("HF_TOKEN")
            .filter(|t| !t.trim().is_empty())
            .or_else(|| HubCache::new(cache_dir.clone()).token());
        Self {
            catalog: None,
            endpoint: env("HF_ENDPOINT")
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| hub::DEFAULT_ENDPOINT.to_string()),
            token,
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v)),
            cache_dir,
            progress: Progress::quiet(),
            retry: RetryPolicy::default(),
            verify: false,
        }
    }

    /// Applies what the user asked for (command-line flags) on top of the environment.
    pub fn with_overrides(
        mut self,
        catalog: Option<&std::path::Path>,
        endpoint: Option<&str>,
        offline: bool,
    ) -> Self {
        if let Some(c) = catalog {
            self.catalog = Some(c.to_path_buf());
        }
        if let Some(e) = endpoint {
            self.endpoint = e.to_owned();
        }
        self.offline |= offline;
        self
    }

    /// The catalog these options point to.
    pub fn load_catalog(&self) -> anyhow::Result<Catalog> {
        Catalog::load(self.catalog.as_deref()).context("loading the model catalog")
    }

    fn hub_cache(&self) -> HubCache {
        HubCache::new(self.cache_dir.clone())
    }
}

/// `1`, `true`, `yes`, `on` (any case), as `huggingface_hub` reads boolean variables.
pub fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// A model ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// The GGUF file (first part of a split model; llama.cpp loads the rest from its folder).
    pub path: PathBuf,
    /// Catalog-style id, e.g. `SmolLM2-135M-Instruct-Q4_1`.
    pub name: String,
    /// The catalog entry, when the model is in the catalog.
    pub entry: Option<CatalogEntry>,
}

impl ResolvedModel {
    /// What the model needs in memory: read from its GGUF header (exact attention shape, all
    /// split parts summed), else estimated from the catalog entry. Feed it to [`plan_context`]
    /// with [`available_memory`].
    pub fn memory(&self) -> Result<ModelMemory, gguf::GgufError> {
        match gguf::model_memory(&self.path) {
            Ok(m) => Ok(m),
            Err(e) => match &self.entry {
                Some(entry) => {
                    tracing::warn!(error = %e, "cannot read the GGUF header; using catalog estimates");
                    Ok(ModelMemory::from_entry(entry))
                }
                None => Err(e),
            },
        }
    }
}

/// Turns `spec` (a local .gguf path, a catalog name, `org/repo/file.gguf`, or a URL) into a
/// local file, downloading into the Hugging Face cache if needed.
pub async fn resolve(spec: &str, opts: &ResolveOptions) -> anyhow::Result<ResolvedModel> {
    let parsed = parse_spec(spec, |p| p.is_file())?;
    resolve_with(parsed, opts, opts.progress.sink()).await
}

/// [`resolve`] with a parsed spec and a given progress sink.
pub async fn resolve_with(
    spec: ModelSpec,
    opts: &ResolveOptions,
    sink: &dyn ProgressSink,
) -> anyhow::Result<ResolvedModel> {
    match spec {
        ModelSpec::Local(path) => {
            let name = model_id_from_file(&path.to_string_lossy());
            Ok(ResolvedModel {
                path,
                name,
                entry: None,
            })
        }
        ModelSpec::Catalog(name) => {
            let catalog = opts.load_catalog()?;
            let entry = catalog
                .get(&name)
                .cloned()
                .ok_or_else(|| DownloadError::UnknownModel {
                    suggestions: names::close_matches(
                        &name,
                        catalog.models.iter().map(|m| m.name.as_str()),
                        3,
                    ),
                    name,
                })?;
            let paths = fetch_entry(&entry, opts, sink).await?;
            Ok(ResolvedModel {
                path: first(paths)?,
                name: entry.name.clone(),
                entry: Some(entry),
            })
        }
        ModelSpec::Hub(file) => {
            let entry = opts.load_catalog().ok().and_then(|c| {
                c.models.into_iter().find(|m| {
                    m.repo.eq_ignore_ascii_case(&file.repo) && m.files.first() == Some(&file.path)
                })
            });
            let name = entry
                .as_ref()
                .map_or_else(|| model_id_from_file(&file.path), |e| e.name.clone());
            let files = expand_split(&file.path);
            let paths = fetch_hub_files(&name, &file, &files, None, opts, sink).await?;
            Ok(ResolvedModel {
                path: first(paths)?,
                name,
                entry,
            })
        }
        ModelSpec::Url(url) => {
            let path = fetch_url(&url, opts, sink).await?;
            let name = model_id_from_file(&path.to_string_lossy());
            Ok(ResolvedModel {
                path,
                name,
                entry: None,
            })
        }
    }
}

fn first(paths: Vec<PathBuf>) -> anyhow::Result<PathBuf> {
    paths.into_iter().next().context("model has no files")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthy_values_like_huggingface_hub() {
        for v in ["1", "true", "YES", "On"] {
            assert!(is_truthy(v), "{v}");
        }
        for v in ["0", "", "false", "no"] {
            assert!(!is_truthy(v), "{v}");
        }
    }
}
