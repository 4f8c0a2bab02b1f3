//! Where `mesh` keeps its files: `~/.mesh/` (mode 0700), or `$MESH_HOME` when set.

use std::path::PathBuf;

/// The environment variable that overrides `~/.mesh`.
pub const MESH_HOME_ENV: &str = "MESH_HOME";

/// `$MESH_HOME`, else `$HOME/.mesh`, else `./.mesh` (no home directory at all).
pub fn mesh_home() -> PathBuf {
    if let Some(dir) = std::env::var_os(MESH_HOME_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".mesh"))
        .unwrap_or_else(|| PathBuf::from(".mesh"))
}
