//! Prefix reuse: which free slot a new request takes, and how much of the KV cache that slot's
//! sequence already holds for it.
//!
//! A slot keeps the KV cells of its last request after the request ends, with the tokens they
//! stand for ([`Kept`]). A new request takes the free slot whose kept tokens share the longest
//! prefix with its prompt (a system prompt, or the earlier turns of a chat); the scheduler then
//! removes only the cells after that prefix and decodes the rest of the prompt. Pure functions
//! over plain data; `scheduler` executes the choice against llama.cpp and falls back to a full
//! recompute where the model's memory cannot drop a sequence's tail (recurrent or sliding-window
//! models).
//!
//! Imports nothing (no llama.cpp, no channels).

/// A shared prefix shorter than this does not decide which slot a request takes: every chat
/// prompt starts with the same few template tokens, and winning a slot on them would evict a
/// conversation worth keeping. (The tokens the chosen slot does share are reused all the same.)
pub(super) const MIN_PREFIX_MATCH: usize = 16;

/// What a sequence's KV cells hold: `tokens[i]` at position `i`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Kept {
    pub tokens: Vec<i32>,
    /// When the slot was last taken (a counter of admissions): the least recently used free
    /// slot is the one given up first.
    pub last_used: u64,
}

/// Length of the longest common prefix of `a` and `b`.
pub(super) fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Prompt tokens whose KV cells can be kept from `kept`: the common prefix, but never the whole
/// prompt, since the last prompt token must be decoded to get the logits of the first new token.
pub(super) fn reusable(kept: &[i32], prompt: &[i32]) -> usize {
    common_prefix(kept, prompt).min(prompt.len().saturating_sub(1))
}

/// The slots a request of `choices` choices takes among `free` (slot index, what it keeps), in
/// choice order, or `None` when fewer than `choices` are free. The first choice decodes the
/// prompt: it takes the slot sharing the longest prefix (at least [`MIN_PREFIX_MATCH`] tokens)
/// with `prompt`, else the least recently used one; the other choices (which copy the first
/// one's cells) take the least recently used of the rest, so the caches of recent requests last.
pub(super) fn choose(
    free: &[(usize, &Kept)],
    prompt: &[i32],
    choices: usize,
) -> Option<Vec<usize>> {
    if choices == 0 || free.len() < choices {
        return None;
    }
    let mut by_age: Vec<(usize, &Kept)> = free.to_vec();
    by_age.sort_by_key(|(slot, k)| (k.last_used, *slot));
    let best = by_age
        .iter()
        .map(|&(slot, k)| {
            let n = reusable(&k.tokens, prompt);
            (if n >= MIN_PREFIX_MATCH { n } else { 0 }, slot)
        })
        // The longest shared prefix; among equals the first in `by_age` (least recently used).
        .fold(None::<(usize, usize)>, |acc, cur| match acc {
            Some(a) if a.0 >= cur.0 => Some(a),
            _ => Some(cur),
        })
        .map(|(_, slot)| slot)?;
    let mut chosen = vec![best];
    chosen.extend(
        by_age
            .iter()
            .map(|&(slot, _)| slot)
            .filter(|&s| s != best)
            .take(choices - 1),
    );
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(tokens: &[i32], last_used: u64) -> Kept {
        Kept {
            tokens: tokens.to_vec(),
            last_used,
        }
    }

    fn seq(from: i32, n: i32) -> Vec<i32> {
        (from..from + n).collect()
    }

    #[test]
    fn the_common_prefix_stops_at_the_first_difference() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[9, 2], &[1, 2]), 0);
    }

    #[test]
    fn at_least_the_last_prompt_token_is_decoded() {
        // The same prompt again: everything but its last token is reused.
        assert_eq!(reusable(&[1, 2, 3], &[1, 2, 3]), 2);
        // A prompt the cache extends (a shorter earlier turn): all but the last token.
        assert_eq!(reusable(&[1, 2, 3, 4, 5], &[1, 2, 3]), 2);
        // A second turn: the whole first turn is reused.
        assert_eq!(reusable(&[1, 2, 3], &[1, 2, 3, 7, 8]), 3);
        assert_eq!(reusable(&[1], &[1]), 0);
        assert_eq!(reusable(&[], &[]), 0);
    }

    #[test]
    fn a_request_takes_the_slot_holding_its_longest_prefix() {
        let turn1 = seq(0, 40);
        let mut turn2 = turn1.clone();
        turn2.extend([500, 501]);
        let other = seq(1000, 40);
        let (a, b, c) = (kept(&other, 9), kept(&turn1, 1), kept(&[], 0));
        let free = [(0, &a), (1, &b), (2, &c)];
        assert_eq!(choose(&free, &turn2, 1), Some(vec![1]));
        // A longer match beats a shorter one.
        let longer = kept(&turn2[..41], 5);
        let free = [(0, &b), (3, &longer)];
        assert_eq!(choose(&free, &turn2, 1), Some(vec![3]));
    }

    #[test]
    fn without_a_real_match_the_least_recently_used_slot_is_given_up() {
        // Both share only a short template prefix with the prompt: the older slot goes.
        let mut x = vec![1, 2, 3];
        x.extend(seq(100, 30));
        let mut y = vec![1, 2, 3];
        y.extend(seq(200, 30));
        let mut prompt = vec![1, 2, 3];
        prompt.extend(seq(300, 30));
        let (recent, old) = (kept(&x, 7), kept(&y, 2));
        assert_eq!(
            choose(&[(0, &recent), (1, &old)], &prompt, 1),
            Some(vec![1])
        );
        // Equal ages: the lower slot, so the choice is stable.
        let (p, q) = (kept(&[], 0), kept(&[], 0));
        assert_eq!(choose(&[(3, &p), (1, &q)], &prompt, 1), Some(vec![1]));
    }

    #[test]
    fn extra_choices_take_the_least_recently_used_other_slots() {
        let prompt = seq(0, 50);
        let (hit, old, older, newest) = (
            kept(&prompt, 9),
            kept(&[7], 3),
            kept(&[8], 1),
            kept(&[9], 8),
        );
        let free = [(0, &newest), (1, &hit), (2, &old), (3, &older)];
        assert_eq!(choose(&free, &prompt, 3), Some(vec![1, 3, 2]));
        assert_eq!(choose(&free, &prompt, 4), Some(vec![1, 3, 2, 0]));
        assert_eq!(choose(&free, &prompt, 5), None);
        assert_eq!(choose(&free, &prompt, 0), None);
        assert_eq!(choose(&[], &prompt, 1), None);
    }
}
