//! Download files on disk: the lock file, free space, whole-file sha256, and running blocking
//! file work off the async workers. Imports only [`super::error`].

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::DownloadError;

/// Runs blocking file work (reading, hashing) on tokio's blocking pool, off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Refuses to start when the disk cannot hold the rest of the file.
pub fn check_space(file: &str, need: u64, dir: &Path) -> Result<(), DownloadError> {
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
pub async fn lock(path: &Path) -> Result<File, DownloadError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DownloadError::io(parent.display(), e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| DownloadError::io(path.display(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!(lock = %path.display(), "another download of this file is running; waiting");
            // The kernel wakes a blocking lock when the other process lets go: wait for that on
            // the blocking pool instead of polling. Dropped early, the thread still takes the
            // lock and releases it at once by dropping the file.
            blocking(move || file.lock().map(|()| file))
                .await
                .map_err(|e| DownloadError::io(path.display(), e))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(DownloadError::io(path.display(), e)),
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

/// [`sha256_file`] on the blocking pool, for async callers: the file may be gigabytes.
pub async fn sha256_file_in_background(path: PathBuf) -> std::io::Result<String> {
    blocking(move || sha256_file(&path)).await
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
    use std::time::Duration;

    #[tokio::test]
    async fn a_held_lock_is_waited_for_and_taken_when_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = lock(&path).await.unwrap();
        let waiting = tokio::spawn({
            let path = path.clone();
            async move { lock(&path).await.map(|_| ()) }
        });
        // While the first holder keeps it, the second waits (a 300 ms look is enough to see
        // it has not been handed a lock it should not have).
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "took a lock someone else holds");
        drop(held);
        let taken = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(matches!(taken, Ok(Ok(Ok(())))), "{taken:?}");
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
