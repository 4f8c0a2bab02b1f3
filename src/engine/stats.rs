//! Engine counters for the management API: requests served, tokens generated, slots and queue,
//! and decode throughput over the last minute; and the best single-stream decode rate seen
//! (steps that decoded one token and no prompt), which the node keeps to calibrate the speed
//! estimate (`catalog::bandwidth::record_decode`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW_SECS: u64 = 60;
/// Single-stream decode tokens per measurement: each run of this many gives one rate, and the
/// best rate so far is published ([`Stats::single_stream`]). Enough to average out a step's
/// jitter, few enough that one ordinary answer gives a figure.
pub const SINGLE_STREAM_TOKENS: u64 = 64;

/// Shared between the scheduler thread (writer) and the HTTP handlers (readers).
#[derive(Debug)]
pub struct Stats {
    start: Instant,
    pub requests_served: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens not decoded because a slot kept their KV cells (prefix reuse).
    pub prompt_tokens_cached: AtomicU64,
    pub slots_busy: AtomicUsize,
    pub queue_len: AtomicUsize,
    window: Mutex<Window>,
    /// Single-stream decode steps since the last measurement: (tokens, busy time).
    single: Mutex<(u64, Duration)>,
    /// The best single-stream decode rate measured, tokens per second (`None` until one).
    best_single: tokio::sync::watch::Sender<Option<f64>>,
}

/// A snapshot for `GET /api/status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub requests_served: u64,
    pub tokens_generated: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens reused from a slot's KV cache instead of decoded (not in `prompt_tokens`).
    #[serde(default)]
    pub prompt_tokens_cached: u64,
    pub slots_busy: usize,
    pub queue_len: usize,
    /// Decode speed over the last minute: tokens from pure decode steps (no prompt work in the
    /// step) divided by the time those steps took.
    pub decode_tokens_per_second: f64,
    /// Tokens of pure decode steps in the last minute divided by 60 s (how busy the node was).
    pub tokens_per_second_last_minute: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            requests_served: AtomicU64::new(0),
            tokens_generated: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            prompt_tokens_cached: AtomicU64::new(0),
            slots_busy: AtomicUsize::new(0),
            queue_len: AtomicUsize::new(0),
            window: Mutex::new(Window::default()),
            single: Mutex::new((0, Duration::ZERO)),
            best_single: tokio::sync::watch::Sender::new(None),
        }
    }
}

impl Stats {
    /// Records one decode step that produced `tokens` tokens and took `busy`. Steps that also
    /// processed prompt tokens count towards the total but not towards the decode rate.
    pub fn record_step(&self, tokens: u64, busy: Duration, prompt_in_step: bool) {
        self.tokens_generated.fetch_add(tokens, Ordering::Relaxed);
        if prompt_in_step {
            return;
        }
        let now = self.start.elapsed().as_secs();
        if let Ok(mut w) = self.window.lock() {
            w.add(now, tokens, busy);
        }
        if tokens == 1 {
            self.record_single(busy);
        }
    }

    /// One step that decoded one sequence's token: every [`SINGLE_STREAM_TOKENS`] of them give
    /// a rate, published when it beats the best so far (a busy machine only slows a run).
    fn record_single(&self, busy: Duration) {
        let Ok(mut single) = self.single.lock() else {
            return;
        };
        single.0 += 1;
        single.1 += busy;
        if single.0 < SINGLE_STREAM_TOKENS {
            return;
        }
        let rate = single.0 as f64 / single.1.as_secs_f64().max(1e-9);
        *single = (0, Duration::ZERO);
        self.best_single.send_if_modified(|best| {
            let better = best.is_none_or(|b| rate > b);
            if better {
                *best = Some(rate);
            }
            better
        });
    }

    /// The best single-stream decode rate measured so far (tokens per second); it changes
    /// when a run of [`SINGLE_STREAM_TOKENS`] one-sequence steps beats it.
    pub fn single_stream(&self) -> tokio::sync::watch::Receiver<Option<f64>> {
        self.best_single.subscribe()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let now = self.start.elapsed().as_secs();
        let (tokens, busy) = self.window.lock().map(|w| w.sum(now)).unwrap_or_default();
        let decode = if busy.is_zero() {
            0.0
        } else {
            tokens as f64 / busy.as_secs_f64()
        };
        StatsSnapshot {
            requests_served: self.requests_served.load(Ordering::Relaxed),
            tokens_generated: self.tokens_generated.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            prompt_tokens_cached: self.prompt_tokens_cached.load(Ordering::Relaxed),
            slots_busy: self.slots_busy.load(Ordering::Relaxed),
            queue_len: self.queue_len.load(Ordering::Relaxed),
            decode_tokens_per_second: decode,
            tokens_per_second_last_minute: tokens as f64 / WINDOW_SECS as f64,
        }
    }
}

/// Per-second buckets over the last minute: (second, tokens, busy time).
#[derive(Debug)]
struct Window {
    buckets: [(u64, u64, Duration); WINDOW_SECS as usize],
}

impl Default for Window {
    fn default() -> Self {
        Self {
            buckets: [(0, 0, Duration::ZERO); WINDOW_SECS as usize],
        }
    }
}

impl Window {
    fn add(&mut self, second: u64, tokens: u64, busy: Duration) {
        let b = &mut self.buckets[(second % WINDOW_SECS) as usize];
        if b.0 != second {
            *b = (second, 0, Duration::ZERO);
        }
        b.1 += tokens;
        b.2 += busy;
    }

    fn sum(&self, now: u64) -> (u64, Duration) {
        self.buckets
            .iter()
            .filter(|b| b.1 > 0 && now.saturating_sub(b.0) < WINDOW_SECS)
            .fold((0, Duration::ZERO), |(t, d), b| (t + b.1, d + b.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_only_the_last_minute() {
        let mut w = Window::default();
        w.add(0, 10, Duration::from_secs(1));
        w.add(30, 20, Duration::from_secs(1));
        assert_eq!(w.sum(30), (30, Duration::from_secs(2)));
        // Second 0 has left the window at second 60; second 60 reuses its bucket.
        w.add(60, 5, Duration::from_millis(500));
        assert_eq!(w.sum(60), (25, Duration::from_millis(1500)));
        assert_eq!(w.sum(200), (0, Duration::ZERO));
    }

    #[test]
    fn decode_rate_is_tokens_over_busy_time() {
        let s = Stats::default();
        s.record_step(50, Duration::from_millis(500), false);
        s.record_step(50, Duration::from_millis(500), false);
        s.record_step(1, Duration::from_millis(900), true);
        let snap = s.snapshot();
        assert_eq!(snap.tokens_generated, 101);
        assert!((snap.decode_tokens_per_second - 100.0).abs() < 1e-6);
    }

    #[test]
    fn the_single_stream_rate_comes_from_one_token_steps_and_only_improves() {
        let s = Stats::default();
        let rx = s.single_stream();
        // Batched steps and prompt steps are no single-stream figure.
        for _ in 0..SINGLE_STREAM_TOKENS {
            s.record_step(2, Duration::from_millis(1), false);
            s.record_step(1, Duration::from_millis(1), true);
        }
        assert_eq!(*rx.borrow(), None);
        // One short of a run: still nothing.
        for _ in 1..SINGLE_STREAM_TOKENS {
            s.record_step(1, Duration::from_millis(10), false);
        }
        assert!(!rx.has_changed().unwrap());
        s.record_step(1, Duration::from_millis(10), false);
        assert!(rx.has_changed().unwrap());
        assert!((rx.borrow().unwrap() - 100.0).abs() < 1e-6);
        // A slower run (a busy machine) leaves the best; a faster one replaces it.
        let mut rx = s.single_stream();
        for _ in 0..SINGLE_STREAM_TOKENS {
            s.record_step(1, Duration::from_millis(20), false);
        }
        assert!(!rx.has_changed().unwrap());
        for _ in 0..SINGLE_STREAM_TOKENS {
            s.record_step(1, Duration::from_millis(5), false);
        }
        assert!(rx.has_changed().unwrap());
        assert!((rx.borrow_and_update().unwrap() - 200.0).abs() < 1e-6);
    }
}
