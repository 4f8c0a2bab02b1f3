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
use sha2::{Digest, Sha256};

use super::hasher::BackgroundHasher;

use super::error::{is_disk_full, DownloadError};
use super::hub::{check_status, RetryPolicy};
use super::progress::{ProgressEvent, ProgressSink};

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
    if let Some(parent) = t.partial.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent.display(), e))?;
    }
    let mut partial =
        Partial::open(&t.partial).map_err(|e| DownloadError::io(t.partial.display(), e))?;
    let mut size = t.expected_size;
    if size.is_some_and(|s| partial.len > s) {
        partial
            .restart()
            .map_err(|e| DownloadError::io(t.partial.display(), e))?;
    }
    if let (Some(s), Some(dir)) = (size, t.partial.parent()) {
        check_space(&t.file, s.saturating_sub(partial.len), dir)?;
    }
    progress.event(&ProgressEvent::FileStart {
        part: t.part,
        file: t.file.clone(),
        size: size.unwrap_or(0),
        resumed_from: partial.len,
    });
    if partial.len > 0 {
        tracing::info!(file = %t.file, bytes = partial.len, "resuming partial download");
    }

    let mut attempt = 1;
    loop {
        match transfer_once(t, &mut partial, &mut size, progress).await {
            Ok(()) => break,
            Err(e) if e.is_transient() && attempt < t.retry.max_attempts => {
                let delay = t.retry.delay(attempt);
                tracing::warn!(file = %t.file, attempt, error = %e, "download interrupted, resuming after backoff");
                progress.event(&ProgressEvent::Retry {
                    part: t.part,
                    file: t.file.clone(),
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: e.to_string(),
                });
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e @ DownloadError::Network { .. }) => {
                return Err(match e {
                    DownloadError::Network { url, source, .. } => DownloadError::Network {
                        url,
                        attempts: attempt,
                        source,
                    },
                    other => other,
                })
            }
            Err(e) => return Err(e),
        }
    }
    finish(t, partial, progress)
}

/// Verifies the bytes and moves them into place; deletes them on a mismatch.
fn finish(
    t: &Transfer,
    partial: Partial,
    progress: &dyn ProgressSink,
) -> Result<Fetched, DownloadError> {
    let Partial { file, hasher, len } = partial;
    drop(file);
    let actual = hasher
        .finalize()
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

/// One HTTP request, appending to `partial` from its current length.
async fn transfer_once(
    t: &Transfer,
    partial: &mut Partial,
    size: &mut Option<u64>,
    progress: &dyn ProgressSink,
) -> Result<(), DownloadError> {
    let network = |source| DownloadError::Network {
        url: t.url.clone(),
        attempts: 1,
        source,
    };
    let io = |e: std::io::Error| DownloadError::io(t.partial.display(), e);
    let mut req = t
        .client
        .get(&t.url)
        .headers(t.headers.clone())
        .header(ACCEPT_ENCODING, "identity");
    if partial.len > 0 {
        req = req.header(RANGE, format!("bytes={}-", partial.len));
    }
    let resp = req.send().await.map_err(network)?;
    let status = resp.status().as_u16();
    match status {
        206 => {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok());
            let (start, total) = range
                .and_then(parse_content_range)
                .ok_or_else(|| bad(t, "206 without a valid Content-Range"))?;
            if start != partial.len {
                return Err(bad(
                    t,
                    &format!("asked for bytes from {} but got from {start}", partial.len),
                ));
            }
            check_total(t, size, total)?;
        }
        200 => {
            if partial.len > 0 {
                tracing::info!(file = %t.file, "server ignored the Range header, starting over");
                partial.restart().map_err(io)?;
            }
            let len = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            if let Some(len) = len {
                check_total(t, size, len)?;
            }
        }
        416 if *size == Some(partial.len) => return Ok(()),
        416 => {
            partial.restart().map_err(io)?;
            return Err(DownloadError::Http {
                status,
                url: t.url.clone(),
            });
        }
        _ => {
            check_status(
                resp.status(),
                &t.url,
                &t.file,
                t.headers.contains_key("authorization"),
            )?;
            return Err(bad(t, &format!("unexpected HTTP {status}")));
        }
    }

    let mut stream = resp.bytes_stream();
    let mut last_report = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(network)?;
        if let Some(s) = *size {
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
        partial.file.write_all(&chunk).map_err(|e| {
            if is_disk_full(&e) {
                let dir = t.partial.parent().unwrap_or(Path::new(".")).to_path_buf();
                DownloadError::DiskFull {
                    what: t.file.clone(),
                    need: size.unwrap_or(0).saturating_sub(partial.len),
                    free: free_space(&dir).unwrap_or(0),
                    dir,
                }
            } else {
                io(e)
            }
        })?;
        partial.len += chunk.len() as u64;
        partial.hasher.update(chunk);
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            report(t, partial.len, *size, progress);
        }
    }
    report(t, partial.len, *size, progress);
    match *size {
        Some(s) if partial.len < s => Err(DownloadError::Truncated {
            url: t.url.clone(),
            got: partial.len,
            want: s,
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

/// Refuses to start when the disk cannot hold the rest of the file.
fn check_space(file: &str, need: u64, dir: &Path) -> Result<(), DownloadError> {
    match free_space(dir) {
        Some(free) if free < need => Err(DownloadError::DiskFull {
            what: file.to_string(),
            need,
            free,
            dir: dir.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Bytes available to unprivileged users on the file system holding `dir`.
#[cfg(unix)]
pub fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized, writable struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
    (rc == 0).then(|| (st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// Takes the exclusive lock on `path` (waiting for another process if needed).
async fn lock(path: &Path) -> Result<File, DownloadError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent.display(), e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| DownloadError::io(path.display(), e))?;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                if !waited {
                    tracing::info!(lock = %path.display(), "another download of this file is running; waiting");
                    waited = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(DownloadError::io(path.display(), e))
            }
        }
    }
}

/// sha256 of a whole file (for `--verify` of cached files).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn sha256_of_known_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn space_check_refuses_impossible_downloads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_space("f", 1, dir.path()).is_ok());
        assert!(matches!(
            check_space("f", u64::MAX, dir.path()),
            Err(DownloadError::DiskFull { .. })
        ));
    }
}
