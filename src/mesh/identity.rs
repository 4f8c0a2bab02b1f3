//! The node's identity: an iroh secret key kept in `<mesh home>/secret.key` (hex, mode 0600, in
//! a directory of mode 0700). The node id is the matching public key (iroh's endpoint id).
//! `--ephemeral` nodes make a fresh key and write nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use iroh::SecretKey;

/// File name of the key inside the mesh home directory.
pub const KEY_FILE: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a key file (64 hex characters expected); move it away to make a new one"
    )]
    Malformed { path: PathBuf },
}

/// Loads the key in `dir`, or creates one there. `dir` is created with mode 0700.
pub fn load_or_create(dir: &Path) -> Result<SecretKey, IdentityError> {
    load_or_create_secret(dir, KEY_FILE, "node key").map(|b| SecretKey::from_bytes(&b))
}

/// Loads 32 secret bytes kept as hex in `dir/file` (mode 0600), or makes random ones there.
/// Also holds the Nostr key (`discovery`).
pub fn load_or_create_secret(
    dir: &Path,
    file: &str,
    what: &str,
) -> Result<[u8; 32], IdentityError> {
    create_private_dir(dir)?;
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path);
            parse_key(&text).ok_or(IdentityError::Malformed { path })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            write_private(&path, &data_encoding::HEXLOWER.encode(&bytes))?;
            tracing::info!(path = %path.display(), "created a new {what}");
            Ok(bytes)
        }
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// A throwaway key for `--ephemeral` nodes.
pub fn ephemeral() -> SecretKey {
    SecretKey::generate()
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .ok()?;
    bytes.try_into().ok()
}

fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    let err = |source| IdentityError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(err)
}

fn write_private(path: &Path, text: &str) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "key file is readable by others; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mesh-identity-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn key_is_created_once_then_reloaded() {
        let dir = temp_dir("reload").join("home");
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
            assert_eq!(mode(&dir), 0o700);
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_garbage_key_file_is_a_clear_error() {
        let dir = temp_dir("garbage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KEY_FILE), "not a key").unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(matches!(err, IdentityError::Malformed { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
