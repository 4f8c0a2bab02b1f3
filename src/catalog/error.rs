//! Errors of the download path, each worded so the user knows what to do next.

use std::path::PathBuf;

use super::fit::human_bytes;

/// Why a model could not be found, fetched or verified.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("unknown model {name:?}{}; run `mesh models` to list the catalog", suggest(.suggestions))]
    UnknownModel {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("not found (HTTP 404): {what} at {url}; check the repo, revision and file name")]
    NotFound { what: String, url: String },
    #[error(
        "access denied (HTTP {status}) to {what}: {}",
        if *.had_token {
            "your token does not grant access; accept the model's terms on the hub with the account of that token"
        } else {
            "the repo is gated or private; accept its terms on the hub and set HF_TOKEN to an access token"
        }
    )]
    Unauthorized {
        status: u16,
        what: String,
        had_token: bool,
    },
    #[error("offline (HF_HUB_OFFLINE=1) and {what} is not in the cache at {}", .cache.display())]
    OfflineNotCached { what: String, cache: PathBuf },
    #[error("disk full: {what} needs {} more but {} has {} free", human_bytes(*.need), .dir.display(), human_bytes(*.free))]
    DiskFull {
        what: String,
        need: u64,
        free: u64,
        dir: PathBuf,
    },
    #[error("{what} is corrupt: expected {kind} {expected}, got {actual}; the bad download was deleted, run the command again")]
    Corrupt {
        what: String,
        kind: &'static str,
        expected: String,
        actual: String,
    },
    #[error("HTTP {status} from {url}")]
    Http { status: u16, url: String },
    #[error("the server sent an invalid response for {url}: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("connection to {url} closed after {got} of {want} bytes")]
    Truncated { url: String, got: u64, want: u64 },
    #[error("network error fetching {url} (gave up after {attempts} attempts): {source}")]
    Network {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn suggest(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(", "))
    }
}

impl DownloadError {
    pub(crate) fn io(what: impl std::fmt::Display, source: std::io::Error) -> Self {
        DownloadError::Io {
            what: what.to_string(),
            source,
        }
    }

    /// Worth retrying after a pause (network blips, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Network { .. } | DownloadError::Truncated { .. } => true,
            DownloadError::Http { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }
}

/// `true` for write errors that mean the disk is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) // ENOSPC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = DownloadError::UnknownModel {
            name: "qwen3-8".into(),
            suggestions: vec!["Qwen3-8B-Q4_K_M".into()],
        };
        assert!(e.to_string().contains("did you mean Qwen3-8B-Q4_K_M?"));
        let gated = DownloadError::Unauthorized {
            status: 401,
            what: "org/m".into(),
            had_token: false,
        };
        assert!(gated.to_string().contains("set HF_TOKEN"));
        let full = DownloadError::DiskFull {
            what: "m.gguf".into(),
            need: 2048,
            free: 1024,
            dir: "/d".into(),
        };
        assert!(full.to_string().contains("2.0 KiB more"), "{full}");
        assert!(DownloadError::Http {
            status: 503,
            url: "u".into()
        }
        .is_transient());
        assert!(!DownloadError::Http {
            status: 404,
            url: "u".into()
        }
        .is_transient());
    }
}
