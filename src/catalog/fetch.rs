//! Getting a model's files onto disk: all parts of a hub repo file set into the Hugging Face
//! cache (or found there without a request), or a plain URL beside it. Checks cached files,
//! expands split GGUF names, and drives [`super::download`] for each missing part.

use std::path::{Path, PathBuf};

use super::cache::HubCache;
use super::data::{self, CatalogEntry};
use super::disk;
use super::download::{self, Transfer};
use super::error::DownloadError;
use super::hub::{self, FileMeta, Hub};
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
    let job = HubFetch {
        repo: &hub_file.repo,
        revision: &hub_file.revision,
        files,
        cache: opts.hub_cache(),
        checks: CatalogChecks::of(entry),
        opts,
        sink,
    };
    // 1. Everything cached: no request at all (also how `huggingface_hub`'s files are reused).
    let paths = match job.cached().await? {
        Some(paths) => paths,
        None if opts.offline => return Err(job.not_cached()),
        None => {
            let endpoint = hub_file.endpoint.as_deref().unwrap_or(&opts.endpoint);
            job.download(&Hub::new(endpoint, opts.token.clone(), opts.retry)?, label)
                .await?
        }
    };
    sink.event(&ProgressEvent::Done {
        model: label.to_string(),
        path: paths[0].display().to_string(),
    });
    Ok(paths)
}

/// What the catalog adds to the hub's checks (single-file entries only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CatalogChecks {
    /// sha256 the file must have.
    sha256: Option<String>,
    /// Exact size of the file, unless the catalog marks its size approximate.
    size: Option<u64>,
}

impl CatalogChecks {
    fn of(entry: Option<&CatalogEntry>) -> Self {
        let single = entry.filter(|e| e.files.len() == 1);
        Self {
            sha256: single.and_then(|e| e.sha256.clone()),
            size: single.filter(|e| !e.approx_size).map(|e| e.size),
        }
    }
}

/// One call of [`fetch_hub_files`]: which files, where they go, what they must match.
struct HubFetch<'a> {
    repo: &'a str,
    revision: &'a str,
    files: &'a [String],
    cache: HubCache,
    checks: CatalogChecks,
    opts: &'a ResolveOptions,
    sink: &'a dyn ProgressSink,
}

impl HubFetch<'_> {
    /// The snapshot paths if every file is cached, each checked and reported as cached.
    async fn cached(&self) -> Result<Option<Vec<PathBuf>>, DownloadError> {
        let cached: Option<Vec<PathBuf>> = self
            .files
            .iter()
            .map(|f| self.cache.cached_file(self.repo, self.revision, f))
            .collect();
        let Some(paths) = cached else {
            return Ok(None);
        };
        for (part, (file, path)) in self.files.iter().zip(&paths).enumerate() {
            let size = verify_cached(file, path, &self.checks, self.opts.verify).await?;
            self.sink.event(&ProgressEvent::Cached {
                part,
                file: file.clone(),
                size,
            });
        }
        Ok(Some(paths))
    }

    /// Offline, and a file is missing from the cache.
    fn not_cached(&self) -> DownloadError {
        let missing = self
            .files
            .iter()
            .find(|f| {
                self.cache
                    .cached_file(self.repo, self.revision, f)
                    .is_none()
            })
            .unwrap_or(&self.files[0]);
        DownloadError::OfflineNotCached {
            what: format!("{}/{missing}", self.repo),
            cache: self.cache.root().to_path_buf(),
        }
    }

    /// 2. Metadata for all parts first: 404/401 and sizes are known before any byte moves.
    /// 3. Then each part in turn. Returns the snapshot paths.
    async fn download(&self, hub: &Hub, label: &str) -> Result<Vec<PathBuf>, DownloadError> {
        let mut metas = Vec::with_capacity(self.files.len());
        for f in self.files {
            metas.push(hub.file_meta(self.repo, self.revision, f).await?);
        }
        if let (Some(want), Some(got)) = (self.checks.size, metas[0].size) {
            if want != got {
                tracing::warn!(file = %self.files[0], catalog = want, hub = got, "catalog size differs from the hub's");
            }
        }
        self.announce(label, &metas);
        let mut paths = Vec::with_capacity(self.files.len());
        for (part, (file, meta)) in self.files.iter().zip(&metas).enumerate() {
            paths.push(self.fetch_part(hub, part, file, meta).await?);
        }
        Ok(paths)
    }

    /// The `Start` event: every part with its size, and the total.
    fn announce(&self, label: &str, metas: &[FileMeta]) {
        let sizes: Vec<FileSize> = self
            .files
            .iter()
            .zip(metas)
            .map(|(f, m)| FileSize {
                file: f.clone(),
                size: m.size.unwrap_or(0),
            })
            .collect();
        self.sink.event(&ProgressEvent::Start {
            model: label.to_string(),
            total_bytes: sizes.iter().map(|s| s.size).sum(),
            files: sizes,
        });
    }

    /// One part: reuse its blob if present, else transfer it; then link the snapshot to it.
    async fn fetch_part(
        &self,
        hub: &Hub,
        part: usize,
        file: &str,
        meta: &FileMeta,
    ) -> Result<PathBuf, DownloadError> {
        let (repo, revision) = (self.repo, self.revision);
        let dest = self.cache.blob_path(repo, &meta.etag);
        if dest.exists() {
            self.sink.event(&ProgressEvent::Cached {
                part,
                file: file.to_string(),
                size: meta.size.unwrap_or(0),
            });
        } else {
            download::fetch(&self.transfer(hub, part, file, meta, dest), self.sink).await?;
        }
        let pointer = self
            .cache
            .link_snapshot(repo, &meta.commit, file, &meta.etag)
            .map_err(|e| DownloadError::io(format!("linking {file} into the cache snapshot"), e))?;
        self.cache
            .write_ref(repo, revision, &meta.commit)
            .map_err(|e| DownloadError::io(format!("writing refs/{revision}"), e))?;
        self.sink.event(&ProgressEvent::FileDone {
            part,
            file: file.to_string(),
            path: pointer.display().to_string(),
        });
        Ok(pointer)
    }

    /// The transfer of one part into `dest`, checked against the hub's and the catalog's sha256.
    fn transfer(
        &self,
        hub: &Hub,
        part: usize,
        file: &str,
        meta: &FileMeta,
        dest: PathBuf,
    ) -> Transfer {
        let expected_sha256 = meta
            .sha256()
            .map(str::to_string)
            .into_iter()
            .chain(self.checks.sha256.clone())
            .collect();
        Transfer {
            client: hub.http.clone(),
            url: hub.resolve_url(self.repo, self.revision, file),
            headers: hub.auth(),
            file: file.to_string(),
            part,
            expected_size: meta.size,
            expected_sha256,
            partial: self.cache.incomplete_path(self.repo, &meta.etag),
            dest,
            lock: self.cache.lock_path(self.repo, &meta.etag),
            retry: self.opts.retry,
        }
    }
}

/// Checks a cached file: its size against the catalog's exact size; with `rehash`, its sha256
/// against the blob name (an LFS sha256) and the catalog (hashed off the async workers).
/// Deletes it on a mismatch.
async fn verify_cached(
    file: &str,
    pointer: &Path,
    checks: &CatalogChecks,
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
    if let Some(want) = checks.size.filter(|w| *w != size) {
        return Err(corrupt("size", want.to_string(), size.to_string()));
    }
    if rehash {
        let actual = disk::sha256_file_in_background(blob.clone())
            .await
            .map_err(|e| DownloadError::io(blob.display(), e))?;
        let blob_name = blob
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| data::is_sha256_hex(n));
        for want in blob_name.into_iter().chain(checks.sha256.as_deref()) {
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
    let key = disk::hex(&sha2::Sha256::digest(url.as_bytes()))[..16].to_string();
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
