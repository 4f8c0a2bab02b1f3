//! Log-probabilities of generated tokens: log-softmax over one position's raw logits (the
//! model's own distribution, before temperature, penalties or grammar: what OpenAI and
//! llama-server report) and the most likely alternatives. Pure: logits in, numbers out.

/// The chosen token's log-probability and the `top` most likely tokens (id, log-probability),
/// most likely first (ties: lower id first). Non-finite logits count as impossible.
pub(super) fn compute(logits: &[f32], chosen: i32, top: usize) -> (f32, Vec<(i32, f32)>) {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return (f32::NEG_INFINITY, Vec::new());
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| f64::from(l - max).exp())
        .sum();
    let log_z = max + sum.ln() as f32;
    let lp = |l: f32| {
        if l.is_finite() {
            l - log_z
        } else {
            f32::NEG_INFINITY
        }
    };
    let chosen_lp = usize::try_from(chosen)
        .ok()
        .and_then(|i| logits.get(i))
        .map_or(f32::NEG_INFINITY, |&l| lp(l));
    let top = top.min(logits.len());
    let mut ids: Vec<i32> = (0..logits.len() as i32).collect();
    let order = |a: &i32, b: &i32| {
        let (la, lb) = (logits[*a as usize], logits[*b as usize]);
        let key = |l: f32| if l.is_finite() { l } else { f32::NEG_INFINITY };
        key(lb).total_cmp(&key(la)).then(a.cmp(b))
    };
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, order);
    }
    ids.truncate(top);
    ids.sort_by(order);
    let tops = ids
        .into_iter()
        .map(|i| (i, lp(logits[i as usize])))
        .collect();
    (chosen_lp.min(0.0), tops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_sum_to_one_and_are_at_most_one() {
        let logits = [1.0f32, 2.0, 3.0, -1.0, 0.5];
        let (_, top) = compute(&logits, 0, logits.len());
        let sum: f32 = top.iter().map(|(_, lp)| lp.exp()).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        assert!(top.iter().all(|(_, lp)| *lp <= 0.0));
    }

    #[test]
    fn top_alternatives_are_sorted_and_the_chosen_one_matches_its_entry() {
        let logits = [0.1f32, 5.0, -2.0, 5.0, 3.0, f32::NEG_INFINITY];
        let (chosen, top) = compute(&logits, 4, 3);
        assert_eq!(
            top.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(chosen, top[2].1);
        // Greedy: the chosen token is the top-1.
        let (greedy, top) = compute(&logits, 1, 1);
        assert_eq!(greedy, top[0].1);
    }

    #[test]
    fn huge_logits_do_not_overflow_and_impossible_tokens_are_minus_infinity() {
        let logits = [1000.0f32, 999.0, f32::NEG_INFINITY, f32::NAN];
        let (chosen, top) = compute(&logits, 0, 4);
        assert!(chosen.is_finite() && chosen < 0.0);
        assert_eq!(top[3].1, f32::NEG_INFINITY);
        assert_eq!(compute(&logits, 2, 0), (f32::NEG_INFINITY, vec![]));
        assert_eq!(compute(&logits, 99, 0).0, f32::NEG_INFINITY);
        assert_eq!(compute(&[], 0, 5), (f32::NEG_INFINITY, vec![]));
    }
}
