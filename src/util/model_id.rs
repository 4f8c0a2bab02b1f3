//! A model's id in the API, derived from its file name (`Model.Q4_1.gguf` → `Model-Q4_1`), and
//! the split-part suffix of multi-file GGUFs. Shared by the catalog (naming downloads) and the
//! engine (naming a local file), so both name a model the same way.

/// The catalog-style id for a file name: `dir/Model.Q4_1.gguf` → `Model-Q4_1` (a dot before the
/// quantization becomes a dash; other dots, as in `Qwen2.5`, stay); split parts lose their
/// `-0000k-of-0000n` suffix.
pub fn model_id_from_file(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file
        .strip_suffix(".gguf")
        .or_else(|| file.strip_suffix(".GGUF"))
        .unwrap_or(file);
    let mut stem = match split_part_suffix(stem) {
        Some((base, _, _)) => base,
        None => stem,
    }
    .to_owned();
    if let Some(dot) = stem.rfind('.') {
        let quant = &stem[dot + 1..];
        let looks_like_quant = ["Q", "q", "IQ", "iq", "F", "f", "BF", "bf"]
            .iter()
            .any(|p| {
                quant.starts_with(p) && quant[p.len()..].starts_with(|c: char| c.is_ascii_digit())
            });
        if looks_like_quant {
            stem.replace_range(dot..=dot, "-");
        }
    }
    stem
}

/// `name-00001-of-00004` → (`name`, 1, 4).
pub fn split_part_suffix(stem: &str) -> Option<(&str, u32, u32)> {
    let (head, total) = stem.rsplit_once("-of-")?;
    let (base, index) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(index) || !digits(total) {
        return None;
    }
    Some((base, index.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_from_file_names() {
        assert_eq!(
            model_id_from_file("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct-Q4_1"
        );
        assert_eq!(
            model_id_from_file("Q4_K_M/MiniMax-M2.5-Q4_K_M-00001-of-00004.gguf"),
            "MiniMax-M2.5-Q4_K_M"
        );
        assert_eq!(
            model_id_from_file("qwen2.5-3b-instruct-q4_k_m.gguf"),
            "qwen2.5-3b-instruct-q4_k_m"
        );
        assert_eq!(model_id_from_file("/m/model.bf16.gguf"), "model-bf16");
        assert_eq!(model_id_from_file("weird"), "weird");
        assert_eq!(split_part_suffix("x-00002-of-00004"), Some(("x", 2, 4)));
        assert_eq!(split_part_suffix("x-2-of-4"), None);
    }
}
