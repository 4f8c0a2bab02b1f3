//! Getting a model's files onto disk: all parts of a hub repo file set into the Hugging Face
//! cache (or found there without a request), or a plain URL beside it. Checks cached files,
//! expands split GGUF names, and drives [`super::download`] for each missing part.

use std::path::{Path, PathBuf};

use super::cache::HubCache;
use super::data::{self, CatalogEntry};
use super::download::{self, Transfer};
use super::error::DownloadError;
use super::hub::{self, Hub};
use super::progress::{FileSize, ProgressEvent, ProgressSink};
use super::spec::HubFile;
use super::ResolveOptions;
use crate::util::model_id::split_part_suffix;

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
pub(crate) async fn fetch_hub_files(
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
pub(crate) async fn fetch_url(
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
}
