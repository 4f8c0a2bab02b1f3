//! Reads the metadata header of a GGUF file (never the weights) for what memory fit needs:
//! architecture, training context, and the attention shape that sizes the KV cache.
//!
//! Our own small reader rather than `llama_cpp_2::gguf::GgufContext`: that wrapper exposes only
//! scalar values, while `head_count_kv` is a per-layer array in some models, and a pure Rust
//! reader can bound every length it reads from an untrusted file and be unit-tested on bytes.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::fit::{kv_bytes_per_token, ModelMemory};
use crate::util::model_id::split_part_suffix;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_KV: u64 = 1 << 20;
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 1 << 28;
/// Numeric arrays longer than this are skipped, not kept (per-layer arrays are short).
const KEEP_ARRAY: u64 = 4096;

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file ({reason})")]
    Format { path: String, reason: String },
    #[error("{path}: GGUF header lacks {key}")]
    Missing { path: String, key: String },
}

/// A metadata value we keep: numbers and strings (numeric arrays as their elements).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(u64),
    Nums(Vec<u64>),
    Str(String),
}

/// The metadata key/value pairs of a GGUF header (tokenizer arrays and big arrays skipped).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMeta {
    pub values: HashMap<String, Value>,
}

impl GgufMeta {
    fn num(&self, key: &str) -> Option<u64> {
        match self.values.get(key)? {
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }

    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        match self.values.get("general.architecture")? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Transformer layers (`<arch>.block_count`), what split serving divides.
    pub fn block_count(&self) -> Option<u64> {
        self.num(&format!("{}.block_count", self.architecture()?))
    }

    /// Experts per layer of a mixture of experts (`<arch>.expert_count`); `None` when dense.
    pub fn expert_count(&self) -> Option<u64> {
        self.num(&format!("{}.expert_count", self.architecture()?))
            .filter(|&n| n > 1)
    }

    /// Training context length.
    pub fn context_length(&self) -> Option<u64> {
        self.num(&format!("{}.context_length", self.architecture()?))
    }

    /// f16 KV-cache bytes per token, as llama.cpp lays it out (per-layer KV head counts summed).
    pub fn kv_bytes_per_token(&self) -> Result<u64, String> {
        let arch = self.architecture().ok_or("general.architecture")?;
        let key = |k: &str| format!("{arch}.{k}");
        let layers = self
            .num(&key("block_count"))
            .ok_or_else(|| key("block_count"))?;
        let heads = self
            .num(&key("attention.head_count"))
            .ok_or_else(|| key("attention.head_count"))?;
        let embd = self
            .num(&key("embedding_length"))
            .ok_or_else(|| key("embedding_length"))?;
        let head_dim = embd.checked_div(heads).unwrap_or(0);
        let k_dim = self.num(&key("attention.key_length")).unwrap_or(head_dim);
        let v_dim = self.num(&key("attention.value_length")).unwrap_or(k_dim);
        let dim = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
        Ok(match self.values.get(&key("attention.head_count_kv")) {
            Some(Value::Nums(per_layer)) => per_layer
                .iter()
                .map(|&h| kv_bytes_per_token(1, dim(h), dim(k_dim), dim(v_dim)))
                .sum(),
            Some(Value::Num(h)) => kv_bytes_per_token(dim(layers), dim(*h), dim(k_dim), dim(v_dim)),
            _ => kv_bytes_per_token(dim(layers), dim(heads), dim(k_dim), dim(v_dim)),
        })
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_meta(path: &Path) -> Result<GgufMeta, GgufError> {
    let file = std::fs::File::open(path).map_err(|source| GgufError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_meta(&mut BufReader::with_capacity(1 << 16, file)).map_err(|e| match e {
        ReadError::Io(source) => GgufError::Io {
            path: path.display().to_string(),
            source,
        },
        ReadError::Format(reason) => GgufError::Format {
            path: path.display().to_string(),
            reason,
        },
    })
}

/// Memory needs of the model whose first (or only) GGUF part is `path`: weights are the sizes
/// of all its split parts found beside it.
pub fn model_memory(path: &Path) -> Result<ModelMemory, GgufError> {
    let meta = read_meta(path)?;
    let kv = meta
        .kv_bytes_per_token()
        .map_err(|key| GgufError::Missing {
            path: path.display().to_string(),
            key,
        })?;
    let mut weights = 0u64;
    for part in split_parts(path) {
        let len = std::fs::metadata(&part)
            .map_err(|source| GgufError::Io {
                path: part.display().to_string(),
                source,
            })?
            .len();
        weights = weights.saturating_add(len);
    }
    let train_ctx = meta
        .context_length()
        .unwrap_or(4096)
        .min(u64::from(u32::MAX)) as u32;
    Ok(ModelMemory {
        weights_bytes: weights,
        kv_bytes_per_token: kv,
        train_ctx,
    })
}

/// Bytes of weights one token reads in the model whose first GGUF part is `path`: all of them
/// for a dense model; `None` for a mixture of experts, where the experts a token reads vary.
pub fn dense_bytes_per_token(path: &Path) -> Result<Option<u64>, GgufError> {
    if read_meta(path)?.expert_count().is_some() {
        return Ok(None);
    }
    Ok(Some(model_memory(path)?.weights_bytes))
}

/// `dir/x-00001-of-00003.gguf` → the three part paths; any other path → itself.
pub fn split_parts(first: &Path) -> Vec<PathBuf> {
    let stem = first
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    match split_part_suffix(stem) {
        Some((base, 1, total)) if total > 1 => (1..=total)
            .map(|i| first.with_file_name(format!("{base}-{i:05}-of-{total:05}.gguf")))
            .collect(),
        _ => vec![first.to_path_buf()],
    }
}

enum ReadError {
    Io(std::io::Error),
    Format(String),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadError::Format("truncated header".into())
        } else {
            ReadError::Io(e)
        }
    }
}

fn bad(reason: impl Into<String>) -> ReadError {
    ReadError::Format(reason.into())
}

fn parse_meta(r: &mut impl Read) -> Result<GgufMeta, ReadError> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = read_u32(r)?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!("unsupported version {version}")));
    }
    let _n_tensors = read_u64(r)?;
    let n_kv = read_u64(r)?;
    if n_kv > MAX_KV {
        return Err(bad(format!("{n_kv} metadata entries")));
    }
    let mut meta = GgufMeta::default();
    for _ in 0..n_kv {
        let key = read_string(r)?;
        let ty = read_u32(r)?;
        if let Some(value) = read_value(r, ty)? {
            meta.values.insert(key, value);
        }
    }
    Ok(meta)
}

/// Byte width of fixed-size GGUF types.
fn scalar_width(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

fn read_scalar(r: &mut impl Read, ty: u32) -> Result<Option<u64>, ReadError> {
    Ok(match ty {
        0 | 7 => Some(u64::from(read_n::<1>(r)?[0])),
        1 => Some(i8::from_le_bytes(read_n::<1>(r)?).max(0) as u64),
        2 => Some(u64::from(u16::from_le_bytes(read_n::<2>(r)?))),
        3 => Some(i16::from_le_bytes(read_n::<2>(r)?).max(0) as u64),
        4 => Some(u64::from(read_u32(r)?)),
        5 => Some(i32::from_le_bytes(read_n::<4>(r)?).max(0) as u64),
        10 => Some(read_u64(r)?),
        11 => Some(i64::from_le_bytes(read_n::<8>(r)?).max(0) as u64),
        6 | 12 => {
            skip(r, scalar_width(ty).unwrap_or(0))?;
            None
        }
        _ => return Err(bad(format!("unknown value type {ty}"))),
    })
}

fn read_value(r: &mut impl Read, ty: u32) -> Result<Option<Value>, ReadError> {
    match ty {
        8 => Ok(Some(Value::Str(read_string(r)?))),
        9 => {
            let elem = read_u32(r)?;
            let count = read_u64(r)?;
            if count > MAX_ARRAY {
                return Err(bad(format!("array of {count} elements")));
            }
            if elem == 8 {
                for _ in 0..count {
                    let len = read_u64(r)?;
                    if len > MAX_STRING {
                        return Err(bad("string too long"));
                    }
                    skip(r, len)?;
                }
                return Ok(None);
            }
            let width = scalar_width(elem)
                .ok_or_else(|| bad(format!("unsupported array element type {elem}")))?;
            if count > KEEP_ARRAY || elem == 6 || elem == 12 {
                skip(r, width * count)?;
                return Ok(None);
            }
            let mut nums = Vec::with_capacity(count as usize);
            for _ in 0..count {
                nums.push(read_scalar(r, elem)?.unwrap_or(0));
            }
            Ok(Some(Value::Nums(nums)))
        }
        _ => Ok(read_scalar(r, ty)?.map(Value::Num)),
    }
}

fn read_n<const N: usize>(r: &mut impl Read) -> Result<[u8; N], ReadError> {
    let mut buf = [0u8; N];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_u32(r: &mut impl Read) -> Result<u32, ReadError> {
    Ok(u32::from_le_bytes(read_n::<4>(r)?))
}

fn read_u64(r: &mut impl Read) -> Result<u64, ReadError> {
    Ok(u64::from_le_bytes(read_n::<8>(r)?))
}

fn read_string(r: &mut impl Read) -> Result<String, ReadError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(bad("string too long"));
    }
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(bad("truncated header"));
    }
    String::from_utf8(buf).map_err(|_| bad("string is not UTF-8"))
}

fn skip(r: &mut impl Read, n: u64) -> Result<(), ReadError> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied != n {
        return Err(bad("truncated header"));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a GGUF v3 header with the given key/values (no tensors).
    pub(crate) fn header(kvs: &[(&str, Value)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64 + 1).to_le_bytes());
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u64).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        // A tokenizer-like string array that must be skipped.
        string(&mut b, "tokenizer.ggml.tokens");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        string(&mut b, "<s>");
        string(&mut b, "</s>");
        for (k, v) in kvs {
            string(&mut b, k);
            match v {
                Value::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut b, s);
                }
                Value::Num(n) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&(*n as u32).to_le_bytes());
                }
                Value::Nums(ns) => {
                    b.extend_from_slice(&9u32.to_le_bytes());
                    b.extend_from_slice(&5u32.to_le_bytes());
                    b.extend_from_slice(&(ns.len() as u64).to_le_bytes());
                    for n in ns {
                        b.extend_from_slice(&(*n as i32).to_le_bytes());
                    }
                }
            }
        }
        b
    }

    fn llama_like(kv: Value) -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", Value::Str("llama".into())),
            ("llama.context_length", Value::Num(8192)),
            ("llama.block_count", Value::Num(4)),
            ("llama.embedding_length", Value::Num(512)),
            ("llama.attention.head_count", Value::Num(8)),
            ("llama.attention.head_count_kv", kv),
        ]
    }

    #[test]
    fn reads_shape_and_computes_kv_bytes() {
        let bytes = header(&llama_like(Value::Num(2)));
        let meta = parse_meta(&mut bytes.as_slice()).ok().unwrap();
        assert_eq!(meta.architecture(), Some("llama"));
        assert_eq!(meta.context_length(), Some(8192));
        // 4 layers × 2 kv heads × (64 + 64) dims × 2 bytes.
        assert_eq!(meta.kv_bytes_per_token(), Ok(4 * 2 * 128 * 2));
        assert!(!meta.values.contains_key("tokenizer.ggml.tokens"));
    }

    #[test]
    fn per_layer_kv_heads_are_summed() {
        let bytes = header(&llama_like(Value::Nums(vec![2, 0, 2, 4])));
        let meta = parse_meta(&mut bytes.as_slice()).ok().unwrap();
        assert_eq!(meta.kv_bytes_per_token(), Ok(8 * 128 * 2));
    }

    #[test]
    fn rejects_bad_magic_truncation_and_huge_lengths() {
        let mut bytes = header(&llama_like(Value::Num(2)));
        assert!(matches!(
            parse_meta(&mut &bytes[..bytes.len() - 3]),
            Err(ReadError::Format(_))
        ));
        bytes[0] = b'X';
        assert!(matches!(
            parse_meta(&mut bytes.as_slice()),
            Err(ReadError::Format(_))
        ));
        let mut huge = header(&[]);
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse_meta(&mut huge.as_slice()),
            Err(ReadError::Format(_))
        ));
    }

    #[test]
    fn a_token_reads_every_weight_of_a_dense_model_and_no_known_share_of_a_mixture() {
        let dir = tempfile::tempdir().unwrap();
        let dense = dir.path().join("dense.gguf");
        std::fs::write(&dense, header(&llama_like(Value::Num(2)))).unwrap();
        let len = std::fs::metadata(&dense).unwrap().len();
        assert_eq!(dense_bytes_per_token(&dense).unwrap(), Some(len));
        let mut kvs = llama_like(Value::Num(2));
        kvs.push(("llama.expert_count", Value::Num(8)));
        let moe = dir.path().join("moe.gguf");
        std::fs::write(&moe, header(&kvs)).unwrap();
        assert_eq!(dense_bytes_per_token(&moe).unwrap(), None);
        // One "expert" is a dense model.
        kvs.pop();
        kvs.push(("llama.expert_count", Value::Num(1)));
        std::fs::write(&moe, header(&kvs)).unwrap();
        assert!(dense_bytes_per_token(&moe).unwrap().is_some());
    }

    #[test]
    fn split_part_paths() {
        let parts = split_parts(Path::new("/m/x-00001-of-00003.gguf"));
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], Path::new("/m/x-00003-of-00003.gguf"));
        assert_eq!(
            split_parts(Path::new("/m/y.gguf")),
            vec![PathBuf::from("/m/y.gguf")]
        );
    }

    /// The real test model: `MESH_TEST_MODEL`, else `$MESH_TEST_CACHE` or `~/.cache/mesh-test`
    /// (where scripts/fetch-test-model.sh puts it, as the test command always does).
    fn test_model() -> PathBuf {
        let path = std::env::var_os("MESH_TEST_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("MESH_TEST_CACHE")
                    .map(PathBuf::from)
                    .or_else(|| std::env::home_dir().map(|h| h.join(".cache/mesh-test")))
                    .expect("neither MESH_TEST_MODEL, MESH_TEST_CACHE nor a home directory")
                    .join("SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        assert!(
            path.is_file(),
            "test model missing at {}: run scripts/fetch-test-model.sh",
            path.display()
        );
        path
    }

    #[test]
    fn smollm2_header_matches_the_model_and_its_catalog_entry() {
        let path = test_model();
        let meta = read_meta(&path).unwrap();
        // SmolLM2-135M: a llama of 30 layers, 576 wide, 9 query heads sharing 3 KV heads
        // (head size 64), trained on 8192 tokens of context.
        assert_eq!(meta.architecture(), Some("llama"));
        assert_eq!(meta.num("llama.block_count"), Some(30));
        assert_eq!(meta.num("llama.embedding_length"), Some(576));
        assert_eq!(meta.num("llama.attention.head_count"), Some(9));
        assert_eq!(
            meta.values.get("llama.attention.head_count_kv"),
            Some(&Value::Num(3))
        );
        assert_eq!(meta.context_length(), Some(8192));
        // K and V, 3 heads × 64 each, f16, 30 layers.
        assert_eq!(meta.kv_bytes_per_token(), Ok(30 * 3 * (64 + 64) * 2));

        let m = model_memory(&path).unwrap();
        let catalog = crate::catalog::data::Catalog::embedded().unwrap();
        let entry = catalog.get("SmolLM2-135M-Instruct-Q4_1").unwrap();
        assert_eq!(entry.files, ["SmolLM2-135M-Instruct.Q4_1.gguf"]);
        assert_eq!(m, ModelMemory::from_entry(entry));
        assert_eq!(m.weights_bytes, 98_362_432);
        assert_eq!(m.train_ctx, 8192);
    }
}
