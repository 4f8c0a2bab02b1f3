//! The model catalog, memory fit and Hugging Face downloads.
//!
//! - [`data`]: the catalog as data (`catalog/models.toml`, embedded; `--catalog FILE`).
//! - [`spec`], [`names`]: what a user may type for a model, and "did you mean".
//! - [`fit`], [`memory`], [`gguf`]: memory a model needs vs the room there is.
//! - [`cache`]: the standard Hugging Face cache layout, shared with Python's `huggingface_hub`.
//! - [`hub`], [`download`], [`progress`]: metadata, resumable verified transfers, progress.
//! - [`resolve`](resolve()) (here): spec in, local GGUF path out, downloading if needed.
//! - [`commands`]: `mesh models …` and `mesh download`.

pub mod cache;
pub mod commands;
pub mod data;
pub mod download;
pub mod error;
pub mod fit;
pub mod gguf;
pub mod hub;
pub mod memory;
pub mod names;
pub mod progress;
pub mod spec;

use std::path::{Path, PathBuf};

use anyhow::Context;

pub use data::{Catalog, CatalogEntry};
pub use error::DownloadError;
pub use fit::{plan_context, FitError, ModelMemory};
pub use memory::available_memory;
pub use progress::ProgressMode;

use cache::HubCache;
use download::Transfer;
use hub::{Hub, RetryPolicy};
use progress::{FileSize, ProgressEvent, ProgressSink};
use spec::{model_id_from_file, parse_spec, split_part_suffix, HubFile, ModelSpec};

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
    /// How to show download progress.
    pub progress: ProgressMode,
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
            progress: ProgressMode::Auto,
            retry: RetryPolicy::default(),
            verify: false,
        }
    }

    /// Applies the command-line flags on top of the environment.
    pub fn with_args(mut self, args: &crate::cli::HubArgs) -> Self {
        if let Some(c) = &args.catalog {
            self.catalog = Some(c.clone());
        }
        if let Some(e) = &args.hf_endpoint {
            self.endpoint = e.clone();
        }
        self.offline |= args.offline;
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
    let sink = progress::sink_for(opts.progress);
    resolve_with(parsed, opts, sink.as_ref()).await
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

/// `x-00001-of-00003.gguf` → all three parts; anything else → itself.
pub fn expand_split(path: &str) -> Vec<String> {
    let (dir, file) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
    let stem = file.strip_suffix(".gguf").unwrap_or(file);
    match split_part_suffix(stem) {
        Some((base, 1, total)) if total > 1 => (1..=total)
            .map(|i| {
                let f = format!("{base}-{i:05}-of-{total:05}.gguf");
                if dir.is_empty() {
                    f
                } else {
                    format!("{dir}/{f}")
                }
            })
            .collect(),
        _ => vec![path.to_string()],
    }
}

/// Downloads (or finds in the cache) every file of a catalog entry. Returns snapshot paths.
pub async fn fetch_entry(
    entry: &CatalogEntry,
    opts: &ResolveOptions,
    sink: &dyn ProgressSink,
) -> Result<Vec<PathBuf>, DownloadError> {
    let file = HubFile {
        repo: entry.repo.clone(),
        revision: entry.revision.clone(),
        path: entry.files[0].clone(),
        endpoint: None,
    };
    fetch_hub_files(&entry.name, &file, &entry.files, Some(entry), opts, sink).await
}

/// Cached snapshot paths of all of `entry`'s files, if every one is in the cache.
pub fn installed_paths(entry: &CatalogEntry, cache_dir: &Path) -> Option<Vec<PathBuf>> {
    let c = HubCache::new(cache_dir.to_path_buf());
    entry
        .files
        .iter()
        .map(|f| c.cached_file(&entry.repo, &entry.revision, f))
        .collect()
}

/// Downloads `files` of `hub_file.repo` at `hub_file.revision` into the cache, or finds them
/// there without a request. `entry` adds the catalog's sha256 and exact size checks.
async fn fetch_hub_files(
    label: &str,
    hub_file: &HubFile,
    files: &[String],
    entry: Option<&CatalogEntry>,
    opts: &ResolveOptions,
    sink: &dyn ProgressSink,
) -> Result<Vec<PathBuf>, DownloadError> {
    let (repo, revision) = (hub_file.repo.as_str(), hub_file.revision.as_str());
    let cache = opts.hub_cache();
    let catalog_sha = entry
        .filter(|e| e.files.len() == 1)
        .and_then(|e| e.sha256.clone());
    let exact_size = entry
        .filter(|e| e.files.len() == 1 && !e.approx_size)
        .map(|e| e.size);

    // 1. Everything cached: no request at all (also how `huggingface_hub`'s files are reused).
    let cached: Option<Vec<PathBuf>> = files
        .iter()
        .map(|f| cache.cached_file(repo, revision, f))
        .collect();
    if let Some(paths) = cached {
        for (part, (file, path)) in files.iter().zip(&paths).enumerate() {
            let size = verify_cached(file, path, exact_size, catalog_sha.as_deref(), opts.verify)?;
            sink.event(&ProgressEvent::Cached {
                part,
                file: file.clone(),
                size,
            });
        }
        sink.event(&ProgressEvent::Done {
            model: label.to_string(),
            path: paths[0].display().to_string(),
        });
        return Ok(paths);
    }
    if opts.offline {
        let missing = files
            .iter()
            .find(|f| cache.cached_file(repo, revision, f).is_none())
            .unwrap_or(&files[0]);
        return Err(DownloadError::OfflineNotCached {
            what: format!("{repo}/{missing}"),
            cache: cache.root().to_path_buf(),
        });
    }

    // 2. Metadata for all parts first: 404/401 and sizes are known before any byte moves.
    let endpoint = hub_file.endpoint.as_deref().unwrap_or(&opts.endpoint);
    let hub = Hub::new(endpoint, opts.token.clone(), opts.retry)?;
    let mut metas = Vec::with_capacity(files.len());
    for f in files {
        metas.push(hub.file_meta(repo, revision, f).await?);
    }
    if let (Some(want), Some(got)) = (exact_size, metas[0].size) {
        if want != got {
            tracing::warn!(file = %files[0], catalog = want, hub = got, "catalog size differs from the hub's");
        }
    }
    let sizes: Vec<FileSize> = files
        .iter()
        .zip(&metas)
        .map(|(f, m)| FileSize {
            file: f.clone(),
            size: m.size.unwrap_or(0),
        })
        .collect();
    sink.event(&ProgressEvent::Start {
        model: label.to_string(),
        total_bytes: sizes.iter().map(|s| s.size).sum(),
        files: sizes,
    });

    // 3. Each part: reuse its blob if present, else transfer, then link the snapshot.
    let mut paths = Vec::with_capacity(files.len());
    for (part, (file, meta)) in files.iter().zip(&metas).enumerate() {
        let dest = cache.blob_path(repo, &meta.etag);
        if dest.exists() {
            sink.event(&ProgressEvent::Cached {
                part,
                file: file.clone(),
                size: meta.size.unwrap_or(0),
            });
        } else {
            let expected_sha256 = meta
                .sha256()
                .map(str::to_string)
                .into_iter()
                .chain(catalog_sha.clone())
                .collect();
            let transfer = Transfer {
                client: hub.http.clone(),
                url: hub.resolve_url(repo, revision, file),
                headers: hub.auth(),
                file: file.clone(),
                part,
                expected_size: meta.size,
                expected_sha256,
                partial: cache.incomplete_path(repo, &meta.etag),
                dest: dest.clone(),
                lock: cache.lock_path(repo, &meta.etag),
                retry: opts.retry,
            };
            download::fetch(&transfer, sink).await?;
        }
        let pointer = cache
            .link_snapshot(repo, &meta.commit, file, &meta.etag)
            .map_err(|e| DownloadError::io(format!("linking {file} into the cache snapshot"), e))?;
        cache
            .write_ref(repo, revision, &meta.commit)
            .map_err(|e| DownloadError::io(format!("writing refs/{revision}"), e))?;
        sink.event(&ProgressEvent::FileDone {
            part,
            file: file.clone(),
            path: pointer.display().to_string(),
        });
        paths.push(pointer);
    }
    sink.event(&ProgressEvent::Done {
        model: label.to_string(),
        path: paths[0].display().to_string(),
    });
    Ok(paths)
}

/// Checks a cached file: its size against the catalog's exact size; with `rehash`, its sha256
/// against the blob name (an LFS sha256) and the catalog. Deletes it on a mismatch.
fn verify_cached(
    file: &str,
    pointer: &Path,
    exact_size: Option<u64>,
    sha: Option<&str>,
    rehash: bool,
) -> Result<u64, DownloadError> {
    let blob =
        std::fs::canonicalize(pointer).map_err(|e| DownloadError::io(pointer.display(), e))?;
    let size = std::fs::metadata(&blob)
        .map_err(|e| DownloadError::io(blob.display(), e))?
        .len();
    let corrupt = |kind, expected: String, actual: String| {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(pointer);
        DownloadError::Corrupt {
            what: file.to_string(),
            kind,
            expected,
            actual,
        }
    };
    if let Some(want) = exact_size.filter(|w| *w != size) {
        return Err(corrupt("size", want.to_string(), size.to_string()));
    }
    if rehash {
        let actual =
            download::sha256_file(&blob).map_err(|e| DownloadError::io(blob.display(), e))?;
        let blob_name = blob
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| data::is_sha256_hex(n));
        for want in blob_name.into_iter().chain(sha) {
            if want != actual {
                return Err(corrupt("sha256", want.to_string(), actual));
            }
        }
    }
    Ok(size)
}

/// Downloads a plain URL to `{cache_dir}/../mesh/url/{hash}/{file name}` (outside the hub
/// layout, which is keyed by repo and commit).
async fn fetch_url(
    url: &str,
    opts: &ResolveOptions,
    sink: &dyn ProgressSink,
) -> Result<PathBuf, DownloadError> {
    use sha2::Digest;
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| data::is_valid_repo_path(n))
        .unwrap_or("model.gguf")
        .to_string();
    let key = download::hex(&sha2::Sha256::digest(url.as_bytes()))[..16].to_string();
    let base = opts.cache_dir.parent().unwrap_or(&opts.cache_dir);
    let dir = base.join("mesh").join("url").join(key);
    let dest = dir.join(&name);
    if dest.is_file() {
        sink.event(&ProgressEvent::Cached {
            part: 0,
            file: name.clone(),
            size: 0,
        });
        return Ok(dest);
    }
    if opts.offline {
        return Err(DownloadError::OfflineNotCached {
            what: url.to_string(),
            cache: dir,
        });
    }
    sink.event(&ProgressEvent::Start {
        model: name.clone(),
        files: vec![FileSize {
            file: name.clone(),
            size: 0,
        }],
        total_bytes: 0,
    });
    let transfer = Transfer {
        client: hub::http_client(10)?,
        url: url.to_string(),
        headers: Default::default(),
        file: name.clone(),
        part: 0,
        expected_size: None,
        expected_sha256: Vec::new(),
        partial: dir.join(format!("{name}.incomplete")),
        dest: dest.clone(),
        lock: dir.join(format!("{name}.lock")),
        retry: opts.retry,
    };
    download::fetch(&transfer, sink).await?;
    sink.event(&ProgressEvent::Done {
        model: name,
        path: dest.display().to_string(),
    });
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_first_part_expands_to_all_parts() {
        assert_eq!(
            expand_split("Q4/m-00001-of-00003.gguf"),
            vec![
                "Q4/m-00001-of-00003.gguf",
                "Q4/m-00002-of-00003.gguf",
                "Q4/m-00003-of-00003.gguf"
            ]
        );
        assert_eq!(
            expand_split("m-00002-of-00003.gguf"),
            vec!["m-00002-of-00003.gguf"]
        );
        assert_eq!(expand_split("m.gguf"), vec!["m.gguf"]);
    }

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
