//! Batch planning: which tokens of which sequences go into the next decode step.
//!
//! A pure function over plain data ([`plan`]), so the batching policy is unit-tested in
//! microseconds; `scheduler` only executes the [`Plan`] against llama.cpp. The policy (see
//! docs/DESIGN.md "The scheduler"): first one token for every generating sequence, so decoding
//! never stalls behind a long prompt; then prompt tokens of admitted sequences, in slot order,
//! until the batch holds `n_batch` tokens, so long prompts are prefilled in chunks across steps;
//! logits only for generating tokens and for the last prompt token.
//!
//! Imports nothing (no llama.cpp, no channels).

use std::ops::Range;

/// What one slot has to decode, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotView {
    /// Free, or nothing to decode this step.
    Idle,
    /// Its prompt is decoded; `token` (the last sampled one) goes in at position `pos`.
    Generating { token: i32, pos: i32 },
    /// `done` of its `len` prompt tokens are decoded; the next one goes in at position `pos`.
    Prefilling { done: usize, len: usize, pos: i32 },
}

/// The tokens of one [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tokens {
    /// The sequence's last sampled token.
    Sampled(i32),
    /// These indices of the sequence's prompt.
    Prompt(Range<usize>),
}

/// Consecutive tokens of one sequence in the batch, at positions `pos`, `pos + 1`, ….
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// Sequence id = slot index.
    pub seq: usize,
    pub tokens: Tokens,
    /// Position of the first token in the sequence's KV cache.
    pub pos: i32,
    /// Whether the entry's last token produces logits (to sample the sequence's next token).
    pub logits: bool,
}

impl Entry {
    pub fn len(&self) -> usize {
        match &self.tokens {
            Tokens::Sampled(_) => 1,
            Tokens::Prompt(r) => r.len(),
        }
    }
}

/// One decode step: entries in batch order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    pub entries: Vec<Entry>,
}

impl Plan {
    /// Tokens in the batch.
    pub fn n_tokens(&self) -> usize {
        self.entries.iter().map(Entry::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the step decodes prompt tokens (for the stats' prefill accounting).
    pub fn prefills(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e.tokens, Tokens::Prompt(_)))
    }
}

/// Plans the next decode step over `slots` (index = sequence id), at most `n_batch` tokens.
pub(super) fn plan(slots: &[SlotView], n_batch: usize) -> Plan {
    let mut entries = Vec::new();
    let mut n = 0usize;
    // Generating sequences first: one token each, in slot order.
    for (seq, slot) in slots.iter().enumerate() {
        if let SlotView::Generating { token, pos } = *slot {
            if n == n_batch {
                break;
            }
            entries.push(Entry {
                seq,
                tokens: Tokens::Sampled(token),
                pos,
                logits: true,
            });
            n += 1;
        }
    }
    // Then prompt chunks, in slot order, as far as the batch has room.
    for (seq, slot) in slots.iter().enumerate() {
        if let SlotView::Prefilling { done, len, pos } = *slot {
            let take = len.saturating_sub(done).min(n_batch - n);
            if take == 0 {
                continue;
            }
            let end = done + take;
            entries.push(Entry {
                seq,
                tokens: Tokens::Prompt(done..end),
                pos,
                logits: end == len,
            });
            n += take;
        }
    }
    Plan { entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(token: i32, pos: i32) -> SlotView {
        SlotView::Generating { token, pos }
    }

    fn prefill(done: usize, len: usize) -> SlotView {
        SlotView::Prefilling {
            done,
            len,
            pos: done as i32,
        }
    }

    fn entry(seq: usize, tokens: Tokens, pos: i32, logits: bool) -> Entry {
        Entry {
            seq,
            tokens,
            pos,
            logits,
        }
    }

    /// Applies a plan to the views the way the scheduler does (without sampling).
    fn advance(slots: &mut [SlotView], plan: &Plan) {
        for e in &plan.entries {
            slots[e.seq] = match (slots[e.seq], &e.tokens) {
                (SlotView::Prefilling { len, pos, .. }, Tokens::Prompt(r)) if r.end < len => {
                    SlotView::Prefilling {
                        done: r.end,
                        len,
                        pos: pos + r.len() as i32,
                    }
                }
                // Prompt finished or token decoded: a new token is sampled from the logits.
                _ => gen(99, e.pos + e.len() as i32),
            };
        }
    }

    #[test]
    fn nothing_to_do_plans_an_empty_batch() {
        assert!(plan(&[], 512).is_empty());
        let p = plan(&[SlotView::Idle, SlotView::Idle], 512);
        assert!(p.is_empty());
        assert_eq!(p.n_tokens(), 0);
        assert!(!p.prefills());
    }

    #[test]
    fn generating_tokens_come_before_prompt_tokens() {
        let p = plan(&[prefill(0, 3), gen(7, 10), SlotView::Idle, gen(8, 4)], 512);
        assert_eq!(
            p.entries,
            vec![
                entry(1, Tokens::Sampled(7), 10, true),
                entry(3, Tokens::Sampled(8), 4, true),
                entry(0, Tokens::Prompt(0..3), 0, true),
            ]
        );
        assert_eq!(p.n_tokens(), 5);
        assert!(p.prefills());
    }

    #[test]
    fn logits_only_for_generating_tokens_and_the_last_prompt_token() {
        // Slot 1's prompt does not fit: its chunk ends before the prompt does, so no logits.
        let p = plan(&[prefill(2, 5), prefill(0, 10), gen(1, 3)], 8);
        assert_eq!(
            p.entries,
            vec![
                entry(2, Tokens::Sampled(1), 3, true),
                entry(0, Tokens::Prompt(2..5), 2, true),
                entry(1, Tokens::Prompt(0..4), 0, false),
            ]
        );
    }

    #[test]
    fn a_long_prompt_is_chunked_across_steps_while_others_keep_generating() {
        let n_batch = 512;
        let mut slots = vec![gen(5, 20), prefill(0, 1200), gen(6, 30)];
        let mut chunks = Vec::new();
        for _ in 0..3 {
            let p = plan(&slots, n_batch);
            assert!(p.n_tokens() <= n_batch);
            // Both generating sequences get their token in every step.
            assert_eq!(p.entries[0].seq, 0);
            assert_eq!(p.entries[1].seq, 2);
            assert!(p.entries[..2].iter().all(|e| e.logits));
            let prompt = &p.entries[2];
            assert_eq!(prompt.seq, 1);
            chunks.push((prompt.tokens.clone(), prompt.pos, prompt.logits));
            advance(&mut slots, &p);
        }
        assert_eq!(
            chunks,
            vec![
                (Tokens::Prompt(0..510), 0, false),
                (Tokens::Prompt(510..1020), 510, false),
                (Tokens::Prompt(1020..1200), 1020, true),
            ]
        );
        // The prompt is done: the sequence now generates from position 1200.
        assert_eq!(slots[1], gen(99, 1200));
    }

    #[test]
    fn prompts_fill_the_batch_in_slot_order() {
        let p = plan(&[SlotView::Idle, prefill(0, 300), prefill(0, 300)], 512);
        assert_eq!(
            p.entries,
            vec![
                entry(1, Tokens::Prompt(0..300), 0, true),
                entry(2, Tokens::Prompt(0..212), 0, false),
            ]
        );
        assert_eq!(p.n_tokens(), 512);
    }

    #[test]
    fn the_batch_never_exceeds_n_batch() {
        // More generating sequences than the batch holds: the first n_batch, in slot order.
        let slots: Vec<_> = (0..10).map(|i| gen(i, i)).collect();
        let p = plan(&slots, 4);
        assert_eq!(p.n_tokens(), 4);
        assert_eq!(
            p.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        // A full batch of generating tokens leaves no room for prompts.
        let p = plan(&[gen(1, 1), gen(2, 2), prefill(0, 9)], 2);
        assert_eq!(p.n_tokens(), 2);
        assert!(!p.prefills());
        for n_batch in 1..20 {
            let p = plan(
                &[prefill(3, 7), gen(1, 1), prefill(0, 11), gen(2, 2)],
                n_batch,
            );
            assert!(p.n_tokens() <= n_batch, "n_batch {n_batch}: {p:?}");
        }
    }

    #[test]
    fn a_finished_prompt_plans_nothing_for_its_slot() {
        let p = plan(&[prefill(4, 4), gen(3, 9)], 512);
        assert_eq!(p.entries, vec![entry(1, Tokens::Sampled(3), 9, true)]);
    }

    /// One batch token: sequence, position, logits, and which token (sampled, or prompt index).
    type Flat = (usize, i32, bool, Result<i32, usize>);

    fn flatten(plan: &Plan) -> Vec<Flat> {
        let mut out = Vec::new();
        for e in &plan.entries {
            match &e.tokens {
                Tokens::Sampled(t) => out.push((e.seq, e.pos, e.logits, Ok(*t))),
                Tokens::Prompt(r) => {
                    for (i, idx) in r.clone().enumerate() {
                        let last = idx + 1 == r.end;
                        out.push((e.seq, e.pos + i as i32, e.logits && last, Err(idx)));
                    }
                }
            }
        }
        out
    }

    /// The scheduler's batch loop before planning was extracted, token by token, with the
    /// llama.cpp batch's "full at n_batch" refusal.
    fn reference(slots: &[SlotView], n_batch: usize) -> Vec<Flat> {
        let mut out = Vec::new();
        for (seq, slot) in slots.iter().enumerate() {
            if let SlotView::Generating { token, pos } = *slot {
                if out.len() < n_batch {
                    out.push((seq, pos, true, Ok(token)));
                }
            }
        }
        for (seq, slot) in slots.iter().enumerate() {
            if let SlotView::Prefilling { done, len, pos } = *slot {
                let (mut d, mut p) = (done, pos);
                while d < len && out.len() < n_batch {
                    out.push((seq, p, d + 1 == len, Err(d)));
                    d += 1;
                    p += 1;
                }
            }
        }
        out
    }

    #[test]
    fn plans_the_same_batches_as_the_token_by_token_loop() {
        let mut seed = 0x2545_f491_u64;
        let mut next = |m: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) % m
        };
        for _ in 0..2000 {
            let n_slots = next(8) as usize;
            let slots: Vec<_> = (0..n_slots)
                .map(|_| match next(3) {
                    0 => SlotView::Idle,
                    1 => gen(next(1000) as i32, next(4000) as i32),
                    _ => {
                        let len = 1 + next(1500) as usize;
                        prefill(next(len as u64 + 1) as usize, len)
                    }
                })
                .collect();
            let n_batch = 1 + next(600) as usize;
            let p = plan(&slots, n_batch);
            assert_eq!(
                flatten(&p),
                reference(&slots, n_batch),
                "{slots:?} {n_batch}"
            );
            assert!(p.entries.iter().all(|e| e.len() > 0));
        }
    }
}
