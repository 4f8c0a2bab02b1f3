//! The standard Hugging Face cache on disk, laid out exactly as Python's `huggingface_hub` does
//! so that either tool reuses the other's files:
//!
//! ```text
//! $HF_HUB_CACHE | $HF_HOME/hub | ~/.cache/huggingface/hub
//!   models--org--name/
//!     blobs/{etag}                 file content, named by its LFS sha256 (or git etag)
//!     blobs/{etag}.incomplete      a partial download, resumed from its length
//!     snapshots/{commit}/{path}    symlink to ../../blobs/{etag} (one more ../ per subfolder)
//!     refs/{revision}              the commit hash a branch or tag pointed to
//!   .locks/models--org--name/{etag}.lock
//! ```
//!
//! Folder names and ref reading/writing come from `hf_hub::{Cache, Repo}`; hf-hub has no
//! public blob/pointer helpers, so the linking lives here.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

/// Where the hub cache is, from the environment: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (Python's order).
pub fn hub_cache_dir(
    env: impl Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Option<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(dir) = set("HF_HUB_CACHE") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = set("HF_HOME") {
        return Some(PathBuf::from(dir).join("hub"));
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("huggingface").join("hub"));
    }
    home.map(|h| h.join(".cache").join("huggingface").join("hub"))
}

/// A 40-hex-digit git commit id.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hub cache rooted at one directory.
#[derive(Debug, Clone)]
pub struct HubCache {
    cache: Cache,
}

impl HubCache {
    pub fn new(root: PathBuf) -> Self {
        Self {
            cache: Cache::new(root),
        }
    }

    pub fn root(&self) -> &Path {
        self.cache.path()
    }

    /// `token` file beside the hub folder (written by `huggingface-cli login`).
    pub fn token(&self) -> Option<String> {
        self.cache.token()
    }

    /// `root/models--org--name`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root()
            .join(Repo::model(repo.to_string()).folder_name())
    }

    pub fn blob_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    pub fn incomplete_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo)
            .join("blobs")
            .join(format!("{etag}.incomplete"))
    }

    pub fn snapshot_path(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        let mut p = self.repo_dir(repo).join("snapshots").join(commit);
        p.extend(file.split('/'));
        p
    }

    /// `root/.locks/models--org--name/{etag}.lock`, where `huggingface_hub` keeps its locks.
    pub fn lock_path(&self, repo: &str, etag: &str) -> PathBuf {
        self.root()
            .join(".locks")
            .join(Repo::model(repo.to_string()).folder_name())
            .join(format!("{etag}.lock"))
    }

    /// The commit a revision points to: itself if it is a commit hash, else `refs/{revision}`.
    pub fn commit_for(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// The snapshot path of `file` at `revision` if it is cached and its blob exists.
    pub fn cached_file(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = self.commit_for(repo, revision)?;
        let path = self.snapshot_path(repo, &commit, file);
        // `exists` follows the symlink: a dangling pointer (blob deleted) is not a hit.
        path.exists().then_some(path)
    }

    /// Records that `revision` points at `commit` (`refs/{revision}`), as hf-hub does.
    pub fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let repo = Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            revision.to_string(),
        );
        self.cache.repo(repo).create_ref(commit)
    }

    /// Points `snapshots/{commit}/{file}` at `blobs/{etag}` with a relative symlink, replacing
    /// any previous pointer. Returns the pointer path.
    pub fn link_snapshot(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        etag: &str,
    ) -> std::io::Result<PathBuf> {
        let pointer = self.snapshot_path(repo, commit, file);
        let parent = pointer
            .parent()
            .ok_or_else(|| std::io::Error::other("pointer has no parent"))?;
        std::fs::create_dir_all(parent)?;
        let depth = file.split('/').count() + 1; // snapshots/{commit}/ + subfolders of file
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let tmp = parent.join(format!(
            ".{}.tmp-link",
            pointer.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, &tmp)?;
        #[cfg(not(unix))]
        std::fs::copy(self.blob_path(repo, etag), &tmp)?;
        std::fs::rename(&tmp, &pointer)?;
        Ok(pointer)
    }

    /// Deletes `file` from every snapshot of `repo`, and the blobs it pointed to unless another
    /// pointer still uses them. Returns the bytes freed.
    pub fn remove_file(&self, repo: &str, file: &str) -> std::io::Result<u64> {
        let snapshots = self.repo_dir(repo).join("snapshots");
        let mut blobs = Vec::new();
        for entry in read_dir_or_empty(&snapshots)? {
            let mut pointer = entry.path();
            pointer.extend(file.split('/'));
            if let Ok(blob) = std::fs::canonicalize(&pointer) {
                blobs.push(blob);
            }
            if pointer.symlink_metadata().is_ok() {
                std::fs::remove_file(&pointer)?;
            }
        }
        let still_used = self.blobs_in_use(repo)?;
        let mut freed = 0;
        blobs.sort();
        blobs.dedup();
        for blob in blobs {
            if !still_used.contains(&blob) {
                freed += std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&blob)?;
            }
        }
        Ok(freed)
    }

    /// Canonical blob paths that some snapshot pointer of `repo` resolves to.
    fn blobs_in_use(&self, repo: &str) -> std::io::Result<Vec<PathBuf>> {
        let mut used = Vec::new();
        let mut stack = vec![self.repo_dir(repo).join("snapshots")];
        while let Some(dir) = stack.pop() {
            for entry in read_dir_or_empty(&dir)? {
                let path = entry.path();
                let meta = path.symlink_metadata()?;
                if meta.is_dir() {
                    stack.push(path);
                } else if let Ok(blob) = std::fs::canonicalize(&path) {
                    used.push(blob);
                }
            }
        }
        Ok(used)
    }
}

fn read_dir_or_empty(dir: &Path) -> std::io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_follows_pythons_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let home = Some(PathBuf::from("/home/u"));
        assert_eq!(
            hub_cache_dir(env(&[]), home.clone()),
            Some("/home/u/.cache/huggingface/hub".into())
        );
        assert_eq!(
            hub_cache_dir(env(&[("HF_HOME", "/hf")]), home.clone()),
            Some("/hf/hub".into())
        );
        assert_eq!(
            hub_cache_dir(
                env(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]),
                home.clone()
            ),
            Some("/c".into())
        );
        assert_eq!(
            hub_cache_dir(env(&[("XDG_CACHE_HOME", "/x")]), home),
            Some("/x/huggingface/hub".into())
        );
        assert_eq!(hub_cache_dir(env(&[]), None), None);
    }

    #[test]
    fn paths_match_huggingface_hub_layout() {
        let c = HubCache::new("/c".into());
        assert_eq!(
            c.repo_dir("org/m-GGUF"),
            Path::new("/c/models--org--m-GGUF")
        );
        assert_eq!(
            c.blob_path("org/m", "abc"),
            Path::new("/c/models--org--m/blobs/abc")
        );
        assert_eq!(
            c.incomplete_path("org/m", "abc"),
            Path::new("/c/models--org--m/blobs/abc.incomplete")
        );
        assert_eq!(
            c.snapshot_path("org/m", "c0", "d/f.gguf"),
            Path::new("/c/models--org--m/snapshots/c0/d/f.gguf")
        );
        assert_eq!(
            c.lock_path("org/m", "abc"),
            Path::new("/c/.locks/models--org--m/abc.lock")
        );
    }

    #[test]
    fn link_ref_lookup_and_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = HubCache::new(dir.path().to_path_buf());
        let commit = "a".repeat(40);
        let blob = c.blob_path("org/m", "e1");
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, b"hello").unwrap();
        assert_eq!(c.cached_file("org/m", "main", "sub/f.gguf"), None);
        let pointer = c
            .link_snapshot("org/m", &commit, "sub/f.gguf", "e1")
            .unwrap();
        c.write_ref("org/m", "main", &commit).unwrap();
        assert_eq!(
            std::fs::read_link(&pointer).unwrap(),
            Path::new("../../../blobs/e1")
        );
        assert_eq!(
            c.cached_file("org/m", "main", "sub/f.gguf"),
            Some(pointer.clone())
        );
        assert_eq!(std::fs::read(&pointer).unwrap(), b"hello");
        assert_eq!(c.remove_file("org/m", "sub/f.gguf").unwrap(), 5);
        assert!(!blob.exists());
        assert_eq!(c.cached_file("org/m", "main", "sub/f.gguf"), None);
    }
}
