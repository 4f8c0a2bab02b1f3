//! Prefix affinity: which replica probably still holds a prompt's prefix in its KV cache, so a
//! second chat turn, or another request with the same long system prompt, goes where its prefix
//! is already decoded (`engine::prefix` reuses it there). Pure: hashes and `Instant`s in,
//! a host out.
//!
//! A forwarding node has no tokenizer for a model it does not serve, so a prompt is keyed by
//! its text: [`PrefixKey`] hashes the prompt text (chat messages role and content, in order) at
//! every [`BLOCK_BYTES`] boundary, each hash covering everything before it. When a request goes
//! to a host, each of its block hashes is recorded for that host ([`AffinityTable::record`]);
//! a later request prefers the host recorded for its longest recorded block
//! ([`AffinityTable::lookup`]). Prompts shorter than one block have no key: little to reuse.
//! The preference is only a hint: `routing::rank` lets health, context and free slots override
//! it. The table is bounded ([`MAX_ENTRIES`]) and entries expire ([`ENTRY_TTL`]), as the host's
//! cache is overwritten by other requests over time.

use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Prompt bytes per hashed block (about 60-85 tokens of English).
pub const BLOCK_BYTES: usize = 256;
/// Prompt bytes hashed at most (longer prompts are keyed by their first 64 KiB).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Block hashes remembered; when full, expired entries go first, then the oldest.
pub const MAX_ENTRIES: usize = 16 * 1024;
/// How long a recorded prefix is believed to stay in a host's cache.
pub const ENTRY_TTL: Duration = Duration::from_secs(10 * 60);

/// The block hashes of one prompt, shortest prefix first (empty for a prompt under one block).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixKey {
    blocks: Vec<u64>,
}

/// The hash keys of this process: hashes are compared only within one node, and random keys
/// make colliding prompts hard to craft.
fn hasher() -> DefaultHasher {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).build_hasher()
}

impl PrefixKey {
    /// The key of a prompt for `model` whose text is `parts` in order (each part is followed
    /// by a 0 byte, so `["ab", "c"]` and `["a", "bc"]` differ).
    pub fn of<'a>(model: &str, parts: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut h = hasher();
        h.write(model.as_bytes());
        h.write_u8(0);
        let (mut blocks, mut in_block, mut total) = (Vec::new(), 0usize, 0usize);
        for part in parts {
            for chunk in [part, &[0u8][..]] {
                let mut rest = chunk;
                while !rest.is_empty() && total < MAX_KEY_BYTES {
                    let take = rest.len().min(BLOCK_BYTES - in_block);
                    h.write(&rest[..take]);
                    (in_block, total, rest) = (in_block + take, total + take, &rest[take..]);
                    if in_block == BLOCK_BYTES {
                        blocks.push(h.clone().finish());
                        in_block = 0;
                    }
                }
            }
        }
        Self { blocks }
    }

    /// Whether the prompt is too short to be worth a preference.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Number of whole blocks keyed.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
}

/// Recorded block hashes → the host that last got a prompt with that prefix, and when.
#[derive(Debug)]
pub struct AffinityTable<K> {
    entries: HashMap<u64, (K, Instant)>,
}

impl<K> Default for AffinityTable<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq> AffinityTable<K> {
    /// The host recorded for the longest prefix of `key` among those `eligible` accepts (the
    /// replicas that may take the request), with how many blocks it holds.
    pub fn lookup(
        &self,
        key: &PrefixKey,
        now: Instant,
        eligible: impl Fn(&K) -> bool,
    ) -> Option<(K, usize)> {
        key.blocks.iter().enumerate().rev().find_map(|(i, h)| {
            let (host, at) = self.entries.get(h)?;
            (now.saturating_duration_since(*at) < ENTRY_TTL && eligible(host))
                .then_some((*host, i + 1))
        })
    }

    /// `host` got a request keyed `key` at `now`: every prefix of it is now there.
    pub fn record(&mut self, key: &PrefixKey, host: K, now: Instant) {
        if key.blocks.is_empty() {
            return;
        }
        if self.entries.len() + key.blocks.len() > MAX_ENTRIES {
            self.make_room(key.blocks.len(), now);
        }
        for h in &key.blocks {
            self.entries.insert(*h, (host, now));
        }
    }

    /// Recorded block hashes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries, then the oldest, until `incoming` more fit with a quarter of the
    /// table free (so the scan runs once per many records, not on every one).
    fn make_room(&mut self, incoming: usize, now: Instant) {
        self.entries
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < ENTRY_TTL);
        let target = (MAX_ENTRIES * 3 / 4).saturating_sub(incoming);
        if self.entries.len() <= target {
            return;
        }
        let mut ages: Vec<Instant> = self.entries.values().map(|(_, at)| *at).collect();
        ages.sort_unstable();
        // Entries recorded at or before this instant go (ties may take a few more).
        let cut = ages[self.entries.len() - target - 1];
        self.entries.retain(|_, (_, at)| *at > cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str, text: &str) -> PrefixKey {
        PrefixKey::of(model, [text.as_bytes()])
    }

    fn text(seed: char, bytes: usize) -> String {
        std::iter::repeat_n(seed, bytes).collect()
    }

    #[test]
    fn a_prompt_is_keyed_at_every_whole_block() {
        assert!(key("m", "short prompt").is_empty());
        // The 0 byte after the part counts: 255 + 1 bytes is one block.
        assert_eq!(key("m", &text('a', BLOCK_BYTES - 1)).len(), 1);
        assert_eq!(key("m", &text('a', BLOCK_BYTES * 3 + 10)).len(), 3);
        assert_eq!(
            key("m", &text('a', MAX_KEY_BYTES * 4)).len(),
            MAX_KEY_BYTES / BLOCK_BYTES
        );
    }

    #[test]
    fn prompts_sharing_a_prefix_share_its_block_hashes_and_no_more() {
        let system = text('s', 600);
        let turn1 = key("m", &format!("{system}first question"));
        let turn2 = key(
            "m",
            &format!(
                "{system}first question, an answer, and another {}",
                text('q', 400)
            ),
        );
        assert_eq!(turn1.blocks[..2], turn2.blocks[..2]);
        let other = key("m", &format!("{}{}", text('t', 600), "first question"));
        assert!(other.blocks.iter().all(|h| !turn1.blocks.contains(h)));
        // Another model's cache is another cache.
        assert_ne!(key("n", &system).blocks[0], key("m", &system).blocks[0]);
        // Message boundaries count.
        let ys = text('y', 300);
        let split_a = PrefixKey::of("m", [text('x', 300).as_bytes(), ys.as_bytes()]);
        let split_b = PrefixKey::of(
            "m",
            [text('x', 299).as_bytes(), format!("x{ys}").as_bytes()],
        );
        assert_eq!((split_a.len(), split_b.len()), (2, 2));
        assert_eq!(split_a.blocks[0], split_b.blocks[0]);
        assert_ne!(split_a.blocks[1], split_b.blocks[1]);
    }

    #[test]
    fn the_host_holding_the_longest_prefix_is_preferred() {
        let now = Instant::now();
        let system = text('s', 600); // blocks 0 and 1 are the system prompt alone
        let mut t = AffinityTable::default();
        // Host 2 got a whole conversation; then host 1 another one with the same system prompt.
        let conversation = format!("{system}hi{}", text('c', 1000));
        t.record(&key("m", &conversation), 2u32, now);
        t.record(&key("m", &format!("{system}yo{}", text('d', 300))), 1, now);
        let next_turn = key("m", &format!("{conversation}{}", text('n', 300)));
        assert_eq!(t.lookup(&next_turn, now, |_| true), Some((2, 6)));
        // Host 2 cannot take it: the longest prefix held elsewhere (the system prompt).
        assert_eq!(t.lookup(&next_turn, now, |&h| h != 2), Some((1, 2)));
        // A new conversation with the same system prompt goes where it was sent last.
        let fresh = key("m", &format!("{system}another question {}", text('z', 300)));
        assert_eq!(t.lookup(&fresh, now, |_| true), Some((1, 2)));
        assert_eq!(t.lookup(&key("m", &text('u', 900)), now, |_| true), None);
        assert_eq!(t.lookup(&PrefixKey::default(), now, |_| true), None);
    }

    #[test]
    fn entries_expire() {
        let now = Instant::now();
        let k = key("m", &text('a', 1000));
        let mut t = AffinityTable::default();
        t.record(&k, 7u32, now);
        assert_eq!(t.lookup(&k, now + ENTRY_TTL / 2, |_| true), Some((7, 3)));
        assert_eq!(t.lookup(&k, now + ENTRY_TTL, |_| true), None);
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_the_oldest_first() {
        let start = Instant::now();
        let mut t = AffinityTable::default();
        let big = |i: usize| key("m", &format!("{i:08}{}", text('p', MAX_KEY_BYTES)));
        let first = big(0);
        let n = 3 * MAX_ENTRIES / first.len();
        for i in 0..n {
            let at = start + Duration::from_millis(i as u64);
            t.record(&big(i), i as u32, at);
            assert!(t.len() <= MAX_ENTRIES, "{} entries after {i}", t.len());
        }
        let now = start + Duration::from_millis(n as u64);
        assert_eq!(t.lookup(&first, now, |_| true), None);
        let last = big(n - 1);
        assert_eq!(
            t.lookup(&last, now, |_| true),
            Some(((n - 1) as u32, last.len()))
        );
        assert!(!t.is_empty());
    }
}
