//! Talking to the hub: the HTTP client, file metadata from `HEAD …/resolve/{rev}/{file}` (as
//! `huggingface_hub.get_hf_file_metadata` reads it), and HTTP status → [`DownloadError`].
//!
//! We speak HTTP with reqwest ourselves instead of through hf-hub's download API: hf-hub 0.4's
//! downloader needs its own reqwest 0.12 and native-tls by default, and hf-hub 1.0 pulls the
//! whole hf-xet stack and truncates `.incomplete` files instead of resuming them; neither checks
//! the sha256 or reports bytes as they arrive. See `download.rs`.

use reqwest::header::{HeaderMap, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, ETAG, LOCATION};
use reqwest::StatusCode;

use super::cache::is_commit_hash;
use super::error::DownloadError;

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
const MAX_RELATIVE_REDIRECTS: usize = 5;

pub use crate::util::backoff::RetryPolicy;
use crate::util::backoff::{Retry, Verdict};

/// What `HEAD …/resolve/{rev}/{file}` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Commit the revision resolved to (`X-Repo-Commit`).
    pub commit: String,
    /// Blob name: `X-Linked-Etag` (LFS sha256) or `ETag`, without quotes or `W/`.
    pub etag: String,
    /// File size: `X-Linked-Size` or `Content-Length`.
    pub size: Option<u64>,
}

impl FileMeta {
    /// The sha256 the content must have, when the etag is an LFS sha256.
    pub fn sha256(&self) -> Option<&str> {
        super::data::is_sha256_hex(&self.etag).then_some(self.etag.as_str())
    }
}

/// HTTP client and settings for one hub.
#[derive(Debug, Clone)]
pub struct Hub {
    pub endpoint: String,
    pub token: Option<String>,
    pub retry: RetryPolicy,
    /// Follows redirects (downloads).
    pub http: reqwest::Client,
    /// Follows none (metadata: the headers are on the first response).
    no_redirect: reqwest::Client,
}

/// A reqwest client for transfers that follows at most `redirects` redirects.
pub fn http_client(redirects: usize) -> Result<reqwest::Client, DownloadError> {
    crate::util::http::client(crate::util::http::ClientOptions::transfer(redirects)).map_err(|e| {
        DownloadError::BadResponse {
            url: String::new(),
            reason: format!("cannot build HTTP client: {e}"),
        }
    })
}

impl Hub {
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        retry: RetryPolicy,
    ) -> Result<Self, DownloadError> {
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.trim().is_empty()),
            retry,
            http: http_client(10)?,
            no_redirect: http_client(0)?,
        })
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{file}`, path segments percent-encoded.
    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        let enc = |s: &str| percent_encode_segment(s);
        let file: Vec<String> = file.split('/').map(enc).collect();
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo,
            enc(revision),
            file.join("/")
        )
    }

    /// Auth header for requests to this hub.
    pub fn auth(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(value) = self
            .token
            .as_ref()
            .and_then(|t| format!("Bearer {}", t.trim()).parse().ok())
        {
            h.insert(AUTHORIZATION, value);
        }
        h
    }

    /// Metadata of one file, retrying transient failures.
    pub async fn file_meta(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<FileMeta, DownloadError> {
        let url = self.resolve_url(repo, revision, file);
        let what = format!("{repo}/{file}@{revision}");
        let mut retry = Retry::new(self.retry);
        loop {
            let e = match self.head_once(&url, &what).await {
                Err(e) => e,
                done => return done,
            };
            match retry.failed(e.is_transient()) {
                Verdict::RetryAfter { attempt, delay } => {
                    tracing::warn!(%url, attempt, error = %e, "HEAD failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                Verdict::GiveUp { .. } => return Err(e),
            }
        }
    }

    async fn head_once(&self, url: &str, what: &str) -> Result<FileMeta, DownloadError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_RELATIVE_REDIRECTS {
            let resp = self
                .no_redirect
                .head(&url)
                .headers(self.auth())
                .header(ACCEPT_ENCODING, "identity")
                .send()
                .await
                .map_err(|source| DownloadError::Network {
                    url: url.clone(),
                    attempts: 1,
                    source,
                })?;
            check_status(resp.status(), &url, what, self.token.is_some())?;
            // A redirect on the hub itself (relative, or same origin) is a renamed repo: follow
            // it. One to another host is the CDN, and the metadata is already on this response
            // (huggingface_hub decides the same way).
            if resp.status().is_redirection() {
                let next = header(resp.headers(), LOCATION.as_str()).and_then(|l| self.same_hub(l));
                if let Some(next) = next {
                    url = next;
                    continue;
                }
            }
            return parse_meta(resp.headers(), &url);
        }
        Err(DownloadError::BadResponse {
            url,
            reason: "too many redirects".into(),
        })
    }
}

impl Hub {
    /// The absolute URL for `location` if it stays on this hub's host, else `None`.
    fn same_hub(&self, location: &str) -> Option<String> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Some(format!("{}{}", origin(&self.endpoint), location));
        }
        (origin(location) == origin(&self.endpoint)).then(|| location.to_string())
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

/// Maps an HTTP status to the error it means (Ok for 2xx and 3xx).
pub fn check_status(
    status: StatusCode,
    url: &str,
    what: &str,
    had_token: bool,
) -> Result<(), DownloadError> {
    match status.as_u16() {
        200..=399 => Ok(()),
        404 => Err(DownloadError::NotFound {
            what: what.to_string(),
            url: url.to_string(),
        }),
        401 | 403 => Err(DownloadError::Unauthorized {
            status: status.as_u16(),
            what: what.to_string(),
            had_token,
        }),
        s => Err(DownloadError::Http {
            status: s,
            url: url.to_string(),
        }),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Reads and validates the metadata headers.
pub fn parse_meta(headers: &HeaderMap, url: &str) -> Result<FileMeta, DownloadError> {
    let bad = |reason: &str| DownloadError::BadResponse {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let commit =
        header(headers, "x-repo-commit").ok_or_else(|| bad("missing X-Repo-Commit header"))?;
    if !is_commit_hash(commit) {
        return Err(bad("X-Repo-Commit is not a commit hash"));
    }
    let raw_etag = header(headers, "x-linked-etag")
        .or_else(|| header(headers, ETAG.as_str()))
        .ok_or_else(|| bad("missing ETag header"))?;
    let etag = normalize_etag(raw_etag).ok_or_else(|| bad("ETag is not a safe blob name"))?;
    let size = match header(headers, "x-linked-size")
        .or_else(|| header(headers, CONTENT_LENGTH.as_str()))
    {
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| bad("size header is not a number"))?,
        ),
        None => None,
    };
    Ok(FileMeta {
        commit: commit.to_ascii_lowercase(),
        etag,
        size,
    })
}

/// `W/"abc"` → `abc`; `None` unless the rest is 1-128 characters of `[A-Za-z0-9_-]`, which
/// makes it safe as a file name in `blobs/`.
pub fn normalize_etag(raw: &str) -> Option<String> {
    let e = raw
        .trim()
        .strip_prefix("W/")
        .unwrap_or(raw.trim())
        .trim_matches('"');
    let ok = !e.is_empty()
        && e.len() <= 128
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| e.to_string())
}

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters kept).
pub fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn lfs_headers_win_over_plain_ones() {
        let sha = "b".repeat(64);
        let h = headers(&[
            ("x-repo-commit", &"a".repeat(40)),
            ("etag", "\"git-etag\""),
            ("x-linked-etag", &format!("\"{sha}\"")),
            ("x-linked-size", "123"),
            ("content-length", "9"),
        ]);
        let meta = parse_meta(&h, "u").unwrap();
        assert_eq!(meta.etag, sha);
        assert_eq!(meta.size, Some(123));
        assert_eq!(meta.sha256(), Some(sha.as_str()));
    }

    #[test]
    fn plain_etag_and_content_length_for_small_files() {
        let h = headers(&[
            ("x-repo-commit", &"A".repeat(40)),
            ("etag", "W/\"abc-1\""),
            ("content-length", "9"),
        ]);
        let meta = parse_meta(&h, "u").unwrap();
        assert_eq!(
            (meta.etag.as_str(), meta.size, meta.sha256()),
            ("abc-1", Some(9), None)
        );
        assert_eq!(meta.commit, "a".repeat(40));
    }

    #[test]
    fn rejects_missing_commit_and_unsafe_etags() {
        assert!(parse_meta(&headers(&[("etag", "\"x\"")]), "u").is_err());
        let h = headers(&[("x-repo-commit", &"a".repeat(40)), ("etag", "\"../../x\"")]);
        assert!(parse_meta(&h, "u").is_err());
        let h = headers(&[
            ("x-repo-commit", &"a".repeat(40)),
            ("etag", "\"x\""),
            ("x-linked-size", "-1"),
        ]);
        assert!(parse_meta(&h, "u").is_err());
    }

    #[test]
    fn statuses_map_to_actionable_errors() {
        assert!(check_status(StatusCode::FOUND, "u", "w", false).is_ok());
        assert!(matches!(
            check_status(StatusCode::NOT_FOUND, "u", "w", false),
            Err(DownloadError::NotFound { .. })
        ));
        assert!(matches!(
            check_status(StatusCode::FORBIDDEN, "u", "w", true),
            Err(DownloadError::Unauthorized {
                had_token: true,
                ..
            })
        ));
        assert!(check_status(StatusCode::BAD_GATEWAY, "u", "w", false)
            .unwrap_err()
            .is_transient());
    }

    #[test]
    fn urls_are_encoded_per_segment() {
        let hub = Hub::new("http://127.0.0.1:1/", None, RetryPolicy::default()).unwrap();
        assert_eq!(
            hub.resolve_url("org/m", "refs/pr/1", "Q4 K/m.gguf"),
            "http://127.0.0.1:1/org/m/resolve/refs%2Fpr%2F1/Q4%20K/m.gguf"
        );
    }

    #[test]
    fn only_redirects_on_the_hub_are_followed() {
        let hub = Hub::new("https://hub.example:8443/", None, RetryPolicy::default()).unwrap();
        assert_eq!(
            hub.same_hub("/a/b"),
            Some("https://hub.example:8443/a/b".into())
        );
        assert_eq!(
            hub.same_hub("https://hub.example:8443/x"),
            Some("https://hub.example:8443/x".into())
        );
        assert_eq!(hub.same_hub("https://cdn.example/x"), None);
        assert_eq!(hub.same_hub("//cdn.example/x"), None);
        assert_eq!(origin("http://h:1"), "http://h:1");
    }
}
