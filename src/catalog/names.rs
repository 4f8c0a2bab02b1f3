//! Name matching: "did you mean" suggestions for a name that is not in the catalog. Pure.

/// Up to `max` catalog names close to `query`, best first. A name matches when it contains the
/// query (case-insensitive) or is within a normalised edit distance of it.
pub fn close_matches<'a>(
    query: &str,
    names: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let q = query.to_ascii_lowercase();
    if q.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(f64, &str)> = names
        .into_iter()
        .filter_map(|name| {
            let n = name.to_ascii_lowercase();
            let similarity = strsim::normalized_damerau_levenshtein(&q, &n);
            let contains = n.contains(&q) || q.contains(&n);
            let score = if contains {
                1.0 + similarity
            } else {
                similarity
            };
            (score >= 0.6).then_some((score, name))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(max)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = [
        "Qwen3-8B-Q4_K_M",
        "Qwen3-14B-Q4_K_M",
        "Llama-3.2-1B-Instruct-Q4_K_M",
        "SmolLM2-135M-Instruct-Q4_1",
    ];

    #[test]
    fn typo_finds_the_intended_model_first() {
        let got = close_matches("qwen3-8b-q4_k", NAMES, 3);
        assert_eq!(got.first().map(String::as_str), Some("Qwen3-8B-Q4_K_M"));
    }

    #[test]
    fn substring_finds_all_family_members() {
        let got = close_matches("qwen3", NAMES, 5);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|n| n.starts_with("Qwen3")));
    }

    #[test]
    fn unrelated_query_finds_nothing() {
        assert!(close_matches("zzzzzz", NAMES, 5).is_empty());
        assert!(close_matches("", NAMES, 5).is_empty());
    }
}
