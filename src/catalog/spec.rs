//! What a user may name a model with (`mesh download X`, `mesh serve --model X`), parsed into
//! one of: a local file, a catalog name, a file in a hub repo, or a plain URL. Pure.

use std::path::{Path, PathBuf};

use super::data::{is_valid_repo_id, is_valid_repo_path, is_valid_revision};

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// An existing file on disk, used as is.
    Local(PathBuf),
    /// A name to look up in the catalog.
    Catalog(String),
    /// One file in a hub repo: `org/repo/path/in/repo.gguf` (optionally `org/repo@rev/...`), or a
    /// hub URL `https://host/org/repo/resolve/rev/path` (then `endpoint` is that URL's base).
    Hub(HubFile),
    /// Any other http(s) URL: downloaded as is, outside the hub cache layout.
    Url(String),
}

/// A file in a hub repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub repo: String,
    pub revision: String,
    pub path: String,
    /// Hub base URL taken from a full URL spec; `None` means the configured endpoint.
    pub endpoint: Option<String>,
}

/// Why a spec could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("model file not found: {0}")]
    MissingFile(String),
    #[error("not a valid hub file reference {0:?}: expected org/repo/path/to/file.gguf")]
    BadHubRef(String),
    #[error("not a valid URL {0:?}: expected http:// or https://")]
    BadUrl(String),
}

/// Parses `spec`. `exists` tells whether a local path exists (injected for tests).
pub fn parse_spec(spec: &str, exists: impl Fn(&Path) -> bool) -> Result<ModelSpec, SpecError> {
    let spec = spec.trim();
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return parse_url(spec);
    }
    if exists(Path::new(spec)) {
        return Ok(ModelSpec::Local(PathBuf::from(spec)));
    }
    let looks_like_path = spec.starts_with('/')
        || spec.starts_with("./")
        || spec.starts_with("../")
        || spec.starts_with('~');
    let is_gguf = spec.to_ascii_lowercase().ends_with(".gguf");
    if looks_like_path || (is_gguf && spec.matches('/').count() < 2) {
        return Err(SpecError::MissingFile(spec.to_string()));
    }
    if spec.contains('/') {
        return parse_hub_ref(spec).ok_or_else(|| SpecError::BadHubRef(spec.to_string()));
    }
    Ok(ModelSpec::Catalog(spec.to_string()))
}

/// `org/repo[@rev]/path...`
fn parse_hub_ref(spec: &str) -> Option<ModelSpec> {
    let mut parts = spec.splitn(3, '/');
    let (org, repo_rev, path) = (parts.next()?, parts.next()?, parts.next()?);
    let (repo, revision) = match repo_rev.split_once('@') {
        Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
        Some(_) => return None,
        None => (repo_rev, "main".to_string()),
    };
    let repo = format!("{org}/{repo}");
    valid_hub_file(repo, revision, path.to_string(), None)
}

fn valid_hub_file(
    repo: String,
    revision: String,
    path: String,
    endpoint: Option<String>,
) -> Option<ModelSpec> {
    let ok = is_valid_repo_id(&repo) && is_valid_repo_path(&path) && is_valid_revision(&revision);
    ok.then_some(ModelSpec::Hub(HubFile {
        repo,
        revision,
        path,
        endpoint,
    }))
}

/// Hub URLs (`…/org/repo/resolve/rev/path`) become [`ModelSpec::Hub`] so they land in the cache.
fn parse_url(spec: &str) -> Result<ModelSpec, SpecError> {
    let bad = || SpecError::BadUrl(spec.to_string());
    let (scheme, rest) = spec.split_once("://").ok_or_else(bad)?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (host, path) = rest.split_once('/').ok_or_else(bad)?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() >= 5 && segs[2] == "resolve" {
        let repo = format!("{}/{}", segs[0], segs[1]);
        let file = segs[4..].join("/");
        let endpoint = format!("{scheme}://{host}");
        if let Some(hub) = valid_hub_file(repo, segs[3].to_string(), file, Some(endpoint)) {
            return Ok(hub);
        }
    }
    let name = segs.last().copied().unwrap_or_default();
    if name.is_empty() || !is_valid_repo_path(name) {
        return Err(bad());
    }
    Ok(ModelSpec::Url(spec.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ModelSpec, SpecError> {
        parse_spec(s, |p| p == Path::new("/models/here.gguf"))
    }

    #[test]
    fn existing_file_is_local() {
        assert_eq!(
            parse("/models/here.gguf"),
            Ok(ModelSpec::Local("/models/here.gguf".into()))
        );
        assert_eq!(
            parse("/models/gone.gguf"),
            Err(SpecError::MissingFile("/models/gone.gguf".into()))
        );
        assert_eq!(
            parse("gone.gguf"),
            Err(SpecError::MissingFile("gone.gguf".into()))
        );
    }

    #[test]
    fn bare_word_is_a_catalog_name() {
        assert_eq!(
            parse("Qwen3-8B-Q4_K_M"),
            Ok(ModelSpec::Catalog("Qwen3-8B-Q4_K_M".into()))
        );
    }

    #[test]
    fn hub_refs_with_and_without_revision() {
        let want = HubFile {
            repo: "unsloth/Qwen3-8B-GGUF".into(),
            revision: "main".into(),
            path: "Qwen3-8B-Q4_K_M.gguf".into(),
            endpoint: None,
        };
        assert_eq!(
            parse("unsloth/Qwen3-8B-GGUF/Qwen3-8B-Q4_K_M.gguf"),
            Ok(ModelSpec::Hub(want.clone()))
        );
        let rev = parse("unsloth/Qwen3-8B-GGUF@v1/Qwen3-8B-Q4_K_M.gguf").unwrap();
        assert_eq!(
            rev,
            ModelSpec::Hub(HubFile {
                revision: "v1".into(),
                ..want
            })
        );
        assert!(matches!(
            parse("org/repo/../x.gguf"),
            Err(SpecError::BadHubRef(_))
        ));
        assert!(matches!(
            parse("org/repo@/x.gguf"),
            Err(SpecError::BadHubRef(_))
        ));
    }

    #[test]
    fn hub_urls_become_hub_files_other_urls_stay_urls() {
        let got =
            parse("https://huggingface.co/org/repo/resolve/main/dir/m.gguf?download=true").unwrap();
        assert_eq!(
            got,
            ModelSpec::Hub(HubFile {
                repo: "org/repo".into(),
                revision: "main".into(),
                path: "dir/m.gguf".into(),
                endpoint: Some("https://huggingface.co".into()),
            })
        );
        assert_eq!(
            parse("http://127.0.0.1:9/files/m.gguf"),
            Ok(ModelSpec::Url("http://127.0.0.1:9/files/m.gguf".into()))
        );
        assert!(matches!(parse("http://host/"), Err(SpecError::BadUrl(_))));
        assert!(matches!(parse("https://"), Err(SpecError::BadUrl(_))));
    }
}
