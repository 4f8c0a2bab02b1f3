//! Messages between members (`mesh send`, `mesh inbox`): the bounded inbox and the per-sender
//! rate limit. Pure: times are passed in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest message, in bytes of UTF-8 text.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Messages kept; the oldest go first.
pub const INBOX_CAPACITY: usize = 256;
/// Messages one sender may send in a burst…
pub const SENDER_BURST: u32 = 10;
/// …refilled at this pace (one per 6 s: 10 a minute).
pub const SENDER_REFILL: Duration = Duration::from_secs(6);
/// Senders whose budget is tracked (the least recently seen is forgotten first).
pub const MAX_TRACKED_SENDERS: usize = 1024;

/// One message as the inbox keeps it (and `/api/inbox`, `/api/events` show it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxMessage {
    /// Increases by one per message this node received (`/api/inbox?after=SEQ`).
    pub seq: u64,
    pub from: String,
    /// The sender's name as its announcements give it ("" when not in the peer table).
    pub from_name: String,
    pub text: String,
    /// Unix milliseconds when it arrived.
    pub received_ms: u64,
}

/// The bounded inbox.
#[derive(Debug, Default)]
pub struct Inbox {
    messages: VecDeque<InboxMessage>,
    next_seq: u64,
}

impl Inbox {
    /// Keeps `msg` (its `seq` is set here) and returns it as kept.
    pub fn push(&mut self, mut msg: InboxMessage) -> InboxMessage {
        self.next_seq += 1;
        msg.seq = self.next_seq;
        if self.messages.len() >= INBOX_CAPACITY {
            self.messages.pop_front();
        }
        self.messages.push_back(msg.clone());
        msg
    }

    /// Messages with `seq > after`, oldest first.
    pub fn after(&self, after: u64) -> Vec<InboxMessage> {
        self.messages
            .iter()
            .filter(|m| m.seq > after)
            .cloned()
            .collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Token buckets per sender.
#[derive(Debug)]
pub struct SenderLimit<K> {
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K> Default for SenderLimit<K> {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> SenderLimit<K> {
    /// Whether `sender` may deliver one more message now (and spends it if so).
    pub fn allow(&mut self, sender: &K, now: Instant) -> bool {
        if !self.buckets.contains_key(sender) && self.buckets.len() >= MAX_TRACKED_SENDERS {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.buckets.remove(&k);
            }
        }
        let (tokens, last) = self
            .buckets
            .entry(sender.clone())
            .or_insert((SENDER_BURST as f64, now));
        let refill =
            now.saturating_duration_since(*last).as_secs_f64() / SENDER_REFILL.as_secs_f64();
        *tokens = (*tokens + refill).min(SENDER_BURST as f64);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> InboxMessage {
        InboxMessage {
            seq: 0,
            from: "a".into(),
            from_name: "a".into(),
            text: text.into(),
            received_ms: 0,
        }
    }

    #[test]
    fn the_inbox_keeps_the_newest_and_numbers_them() {
        let mut inbox = Inbox::default();
        for i in 0..INBOX_CAPACITY + 10 {
            inbox.push(msg(&i.to_string()));
        }
        assert_eq!(inbox.len(), INBOX_CAPACITY);
        assert_eq!(inbox.after(0)[0].text, "10");
        let last = inbox.last_seq();
        assert_eq!(last, (INBOX_CAPACITY + 10) as u64);
        assert_eq!(inbox.after(last - 2).len(), 2);
        assert!(inbox.after(last).is_empty());
    }

    #[test]
    fn a_sender_gets_a_burst_then_one_message_per_refill() {
        let mut limit = SenderLimit::default();
        let t0 = Instant::now();
        for _ in 0..SENDER_BURST {
            assert!(limit.allow(&1, t0));
        }
        assert!(!limit.allow(&1, t0), "burst spent");
        assert!(limit.allow(&2, t0), "other senders have their own budget");
        assert!(limit.allow(&1, t0 + SENDER_REFILL));
        assert!(!limit.allow(&1, t0 + SENDER_REFILL));
    }

    #[test]
    fn tracked_senders_are_bounded() {
        let mut limit = SenderLimit::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_SENDERS + 50 {
            limit.allow(&i, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(limit.len(), MAX_TRACKED_SENDERS);
    }
}
