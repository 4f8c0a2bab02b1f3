//! Moving one file's bytes from a URL into place: resume from the `.incomplete` file on disk,
//! retry transient errors with backoff (each retry resumes), verify size and sha256, then
//! rename into `blobs/`. One process at a time per blob, by a lock file where
//! `huggingface_hub` keeps its own.
//!
//! Written with reqwest rather than hf-hub because hf-hub (0.4 and 1.0) neither resumes a
//! partial blob nor verifies the sha256, and gives no per-chunk progress we can render our way.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, RANGE};

use super::disk::{blocking, check_space, free_space, lock};
// Where they were before `disk` was split out (examples use them from here).
use super::hasher::BackgroundHasher;

use super::error::{is_disk_full, DownloadError};
use super::hub::{check_status, RetryPolicy};
use super::progress::{ProgressEvent, ProgressSink};
use crate::util::backoff::{Retry, Verdict};

/// How often byte counts are reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Transfer {
    pub client: reqwest::Client,
    pub url: String,
    /// Sent with every request (auth).
    pub headers: HeaderMap,
    /// Name used in messages and progress (the file path in the repo).
    pub file: String,
    /// Index among the model's parts, for progress.
    pub part: usize,
    /// Size the file must have (from the hub); learnt from the response when `None`.
    pub expected_size: Option<u64>,
    /// sha256 values (lowercase hex) the content must match: the LFS etag, the catalog's.
    pub expected_sha256: Vec<String>,
    /// Where bytes accumulate (`blobs/{etag}.incomplete`).
    pub partial: PathBuf,
    /// Where the verified file goes (`blobs/{etag}`).
    pub dest: PathBuf,
    /// Lock file guarding `partial`.
    pub lock: PathBuf,
    pub retry: RetryPolicy,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub size: u64,
    /// sha256 of the content; `None` if another process finished the file while we waited.
    pub sha256: Option<String>,
}

/// Bytes on disk so far and the hash of exactly those bytes.
struct Partial {
    file: File,
    hasher: BackgroundHasher,
    len: u64,
}

impl Partial {
    /// Opens (or creates) the partial file and hashes what is already there.
    fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)?;
        let mut hasher = BackgroundHasher::new()?;
        let mut len = 0u64;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            hasher.update(bytes::Bytes::from(buf));
            len += n as u64;
        }
        Ok(Self { file, hasher, len })
    }

    /// [`Partial::open`] on the blocking pool: a resumed partial file may hold gigabytes.
    async fn open_in_background(path: PathBuf) -> std::io::Result<Self> {
        blocking(move || Self::open(&path)).await
    }

    fn restart(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.hasher.reset();
        self.len = 0;
        Ok(())
    }
}

/// Fetches `t.url` into `t.dest`, resuming and retrying as needed.
pub async fn fetch(t: &Transfer, progress: &dyn ProgressSink) -> Result<Fetched, DownloadError> {
    let _lock = lock(&t.lock).await?;
    if let Ok(meta) = std::fs::metadata(&t.dest) {
        // Another process completed it while we waited for the lock.
        return Ok(Fetched {
            size: meta.len(),
            sha256: None,
        });
    }
    let mut partial = open_partial(t).await?;
    let mut size = t.expected_size;
    progress.event(&ProgressEvent::FileStart {
        part: t.part,
        file: t.file.clone(),
        size: size.unwrap_or(0),
        resumed_from: partial.len,
    });
    if partial.len > 0 {
        tracing::info!(file = %t.file, bytes = partial.len, "resuming partial download");
    }
    let mut retry = Retry::new(t.retry);
    while let Err(e) = transfer_once(t, &mut partial, &mut size, progress).await {
        match retry.failed(e.is_transient()) {
            Verdict::RetryAfter { attempt, delay } => {
                announce_retry(t, attempt, delay, &e, progress);
                tokio::time::sleep(delay).await;
            }
            Verdict::GiveUp { attempts } => return Err(with_attempts(e, attempts)),
        }
    }
    finish(t, partial, progress).await
}

/// The partial file, its existing bytes hashed; emptied when longer than the file can be.
/// Refuses to start when the disk cannot hold the rest.
async fn open_partial(t: &Transfer) -> Result<Partial, DownloadError> {
    let io = |e| DownloadError::io(t.partial.display(), e);
    if let Some(parent) = t.partial.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent.display(), e))?;
    }
    let mut partial = Partial::open_in_background(t.partial.clone())
        .await
        .map_err(io)?;
    if t.expected_size.is_some_and(|s| partial.len > s) {
        partial.restart().map_err(io)?;
    }
    if let (Some(s), Some(dir)) = (t.expected_size, t.partial.parent()) {
        check_space(&t.file, s.saturating_sub(partial.len), dir)?;
    }
    Ok(partial)
}

/// Try number `attempt` failed; the next one, from where it stopped, follows after `delay`.
fn announce_retry(
    t: &Transfer,
    attempt: u32,
    delay: Duration,
    e: &DownloadError,
    progress: &dyn ProgressSink,
) {
    tracing::warn!(file = %t.file, attempt, error = %e, "download interrupted, resuming after backoff");
    progress.event(&ProgressEvent::Retry {
        part: t.part,
        file: t.file.clone(),
        attempt,
        delay_ms: delay.as_millis() as u64,
        error: e.to_string(),
    });
}

/// A network error that ended the retries says how many tries were made.
fn with_attempts(e: DownloadError, attempts: u32) -> DownloadError {
    match e {
        DownloadError::Network { url, source, .. } => DownloadError::Network {
            url,
            attempts,
            source,
        },
        other => other,
    }
}

/// Verifies the bytes and moves them into place; deletes them on a mismatch.
async fn finish(
    t: &Transfer,
    partial: Partial,
    progress: &dyn ProgressSink,
) -> Result<Fetched, DownloadError> {
    let Partial { file, hasher, len } = partial;
    drop(file);
    // Waits for the hashing thread to catch up with the last chunks.
    let actual = blocking(move || hasher.finalize())
        .await
        .map_err(|e| DownloadError::io(&t.file, e))?;
    if let Some(want) = t
        .expected_sha256
        .iter()
        .find(|want| !want.eq_ignore_ascii_case(&actual))
    {
        let _ = std::fs::remove_file(&t.partial);
        tracing::error!(file = %t.file, expected = %want, %actual, "sha256 mismatch, deleted the download");
        return Err(DownloadError::Corrupt {
            what: t.file.clone(),
            kind: "sha256",
            expected: want.clone(),
            actual,
        });
    }
    std::fs::rename(&t.partial, &t.dest).map_err(|e| DownloadError::io(t.dest.display(), e))?;
    progress.event(&ProgressEvent::Verified {
        part: t.part,
        file: t.file.clone(),
        sha256: actual.clone(),
    });
    Ok(Fetched {
        size: len,
        sha256: Some(actual),
    })
}

/// What a response means for the partial file.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// Its body continues (or, after a restart, replaces) the partial file.
    Body,
    /// Nothing is left to fetch: the partial file already holds every byte.
    Complete,
}

/// One HTTP request, appending to `partial` from its current length.
async fn transfer_once(
    t: &Transfer,
    partial: &mut Partial,
    size: &mut Option<u64>,
    progress: &dyn ProgressSink,
) -> Result<(), DownloadError> {
    let resp = request(t, partial.len).await?;
    if accept(t, &resp, partial, size)? == Reply::Complete {
        return Ok(());
    }
    receive(t, resp, partial, *size, progress).await?;
    check_complete(t, partial.len, *size)
}

fn network(t: &Transfer, source: reqwest::Error) -> DownloadError {
    DownloadError::Network {
        url: t.url.clone(),
        attempts: 1,
        source,
    }
}

/// `GET t.url`, asking for the bytes from `from` on when there are some already.
async fn request(t: &Transfer, from: u64) -> Result<reqwest::Response, DownloadError> {
    let mut req = t
        .client
        .get(&t.url)
        .headers(t.headers.clone())
        .header(ACCEPT_ENCODING, "identity");
    if from > 0 {
        req = req.header(RANGE, format!("bytes={from}-"));
    }
    req.send().await.map_err(|e| network(t, e))
}

/// Checks the status and size headers against what we have and expect; restarts `partial`
/// when the server sends the whole file again.
fn accept(
    t: &Transfer,
    resp: &reqwest::Response,
    partial: &mut Partial,
    size: &mut Option<u64>,
) -> Result<Reply, DownloadError> {
    let io = |e: std::io::Error| DownloadError::io(t.partial.display(), e);
    let status = resp.status().as_u16();
    match status {
        206 => check_range(t, resp.headers(), partial.len, size).map(|()| Reply::Body),
        200 => {
            if partial.len > 0 {
                tracing::info!(file = %t.file, "server ignored the Range header, starting over");
                partial.restart().map_err(io)?;
            }
            let len = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            match len {
                Some(len) => check_total(t, size, len).map(|()| Reply::Body),
                None => Ok(Reply::Body),
            }
        }
        416 if *size == Some(partial.len) => Ok(Reply::Complete),
        416 => {
            partial.restart().map_err(io)?;
            Err(DownloadError::Http {
                status,
                url: t.url.clone(),
            })
        }
        _ => {
            let had_token = t.headers.contains_key("authorization");
            check_status(resp.status(), &t.url, &t.file, had_token)?;
            Err(bad(t, &format!("unexpected HTTP {status}")))
        }
    }
}

/// A 206 must start where we asked and agree on the total size.
fn check_range(
    t: &Transfer,
    headers: &HeaderMap,
    from: u64,
    size: &mut Option<u64>,
) -> Result<(), DownloadError> {
    let range = headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok());
    let (start, total) = range
        .and_then(parse_content_range)
        .ok_or_else(|| bad(t, "206 without a valid Content-Range"))?;
    if start != from {
        return Err(bad(
            t,
            &format!("asked for bytes from {from} but got from {start}"),
        ));
    }
    check_total(t, size, total)
}

/// Streams the body into `partial`, reporting progress every [`PROGRESS_EVERY`] and at the end.
async fn receive(
    t: &Transfer,
    resp: reqwest::Response,
    partial: &mut Partial,
    size: Option<u64>,
    progress: &dyn ProgressSink,
) -> Result<(), DownloadError> {
    let mut stream = resp.bytes_stream();
    let mut last_report = Instant::now();
    while let Some(chunk) = stream.next().await {
        append(t, partial, size, chunk.map_err(|e| network(t, e))?)?;
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            report(t, partial.len, size, progress);
        }
    }
    report(t, partial.len, size, progress);
    Ok(())
}

/// Writes and hashes one chunk; more bytes than the file has deletes the download.
fn append(
    t: &Transfer,
    partial: &mut Partial,
    size: Option<u64>,
    chunk: bytes::Bytes,
) -> Result<(), DownloadError> {
    if let Some(s) = size {
        if partial.len + chunk.len() as u64 > s {
            let _ = std::fs::remove_file(&t.partial);
            return Err(DownloadError::Corrupt {
                what: t.file.clone(),
                kind: "size",
                expected: s.to_string(),
                actual: format!("more than {s}"),
            });
        }
    }
    partial
        .file
        .write_all(&chunk)
        .map_err(|e| write_error(t, e, size.unwrap_or(0).saturating_sub(partial.len)))?;
    partial.len += chunk.len() as u64;
    partial.hasher.update(chunk);
    Ok(())
}

/// A failed write, as [`DownloadError::DiskFull`] when that is why (`need`: bytes still to come).
fn write_error(t: &Transfer, e: std::io::Error, need: u64) -> DownloadError {
    if is_disk_full(&e) {
        let dir = t.partial.parent().unwrap_or(Path::new(".")).to_path_buf();
        DownloadError::DiskFull {
            what: t.file.clone(),
            need,
            free: free_space(&dir).unwrap_or(0),
            dir,
        }
    } else {
        DownloadError::io(t.partial.display(), e)
    }
}

/// The body ended: short of the expected size is a truncation (transient: resume).
fn check_complete(t: &Transfer, got: u64, size: Option<u64>) -> Result<(), DownloadError> {
    match size {
        Some(want) if got < want => Err(DownloadError::Truncated {
            url: t.url.clone(),
            got,
            want,
        }),
        _ => Ok(()),
    }
}

fn report(t: &Transfer, bytes: u64, size: Option<u64>, progress: &dyn ProgressSink) {
    progress.event(&ProgressEvent::Progress {
        part: t.part,
        file: t.file.clone(),
        bytes,
        size: size.unwrap_or(0),
    });
}

fn bad(t: &Transfer, reason: &str) -> DownloadError {
    DownloadError::BadResponse {
        url: t.url.clone(),
        reason: reason.to_string(),
    }
}

/// The server's idea of the total size must agree with the hub's.
fn check_total(t: &Transfer, size: &mut Option<u64>, total: u64) -> Result<(), DownloadError> {
    match *size {
        Some(s) if s != total => Err(bad(
            t,
            &format!("server says {total} bytes, the hub said {s}"),
        )),
        Some(_) => Ok(()),
        None => {
            *size = Some(total);
            Ok(())
        }
    }
}

/// `bytes 100-199/200` → (100, 200).
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (
        start.parse().ok()?,
        end.parse::<u64>().ok()?,
        total.parse().ok()?,
    );
    (start <= end && end < total).then_some((start, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::disk::{sha256_file, sha256_file_in_background};

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, 1)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn partial_hash_covers_bytes_already_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incomplete");
        std::fs::write(&path, b"hello ").unwrap();
        let mut p = Partial::open(&path).unwrap();
        assert_eq!(p.len, 6);
        p.file.write_all(b"world").unwrap();
        p.hasher.update(bytes::Bytes::from_static(b"world"));
        assert_eq!(p.hasher.finalize().unwrap(), sha256_file(&path).unwrap());
    }

    #[tokio::test]
    async fn resuming_and_verifying_hash_off_the_async_workers_like_the_sync_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incomplete");
        std::fs::write(&path, b"hello ").unwrap();
        let p = Partial::open_in_background(path.clone()).await.unwrap();
        assert_eq!(p.len, 6);
        assert_eq!(p.hasher.finalize().unwrap(), sha256_file(&path).unwrap());
        assert_eq!(
            sha256_file_in_background(path.clone()).await.unwrap(),
            sha256_file(&path).unwrap()
        );
        assert!(sha256_file_in_background(dir.path().join("missing"))
            .await
            .is_err());
    }

    #[test]
    fn short_bodies_are_truncations_and_full_ones_complete() {
        let t = Transfer {
            client: crate::catalog::hub::http_client(0).unwrap(),
            url: "http://127.0.0.1:1/f".into(),
            headers: HeaderMap::new(),
            file: "f".into(),
            part: 0,
            expected_size: None,
            expected_sha256: Vec::new(),
            partial: "/nonexistent/f.incomplete".into(),
            dest: "/nonexistent/f".into(),
            lock: "/nonexistent/f.lock".into(),
            retry: RetryPolicy::default(),
        };
        let short = check_complete(&t, 5, Some(10)).unwrap_err();
        assert!(short.is_transient(), "{short}");
        assert!(matches!(
            short,
            DownloadError::Truncated {
                got: 5,
                want: 10,
                ..
            }
        ));
        assert!(check_complete(&t, 10, Some(10)).is_ok());
        assert!(check_complete(&t, 5, None).is_ok());
        let mut size = None;
        check_total(&t, &mut size, 10).unwrap();
        assert_eq!(size, Some(10), "the first total learnt is kept");
        assert!(check_total(&t, &mut size, 11).is_err());
    }
}
