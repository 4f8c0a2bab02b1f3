//! The node's recent log lines (`mesh logs`, `GET /api/logs`): a bounded in-memory ring fed
//! by a tracing layer ([`RingLayer`], installed by `main.rs` beside the terminal output).
//! Lines are numbered, so a follower asks for those after the last it saw and waits on
//! [`LogRing::watch`] for more.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Lines kept; the oldest go first.
pub const LOG_CAPACITY: usize = 2000;
/// Longest line kept (longer ones are cut, at a character boundary).
pub const MAX_LINE_BYTES: usize = 2048;

/// One log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: u64,
    pub level: String,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<LogLine>,
    next: u64,
}

/// The ring.
#[derive(Debug)]
pub struct LogRing {
    inner: Mutex<Lines>,
    seq: watch::Sender<u64>,
}

/// The process's ring.
pub fn ring() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing {
        inner: Mutex::default(),
        seq: watch::channel(0).0,
    })
}

impl LogRing {
    pub fn push(&self, level: &str, target: &str, mut message: String) {
        if message.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let seq = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.next += 1;
            let seq = inner.next;
            if inner.lines.len() >= LOG_CAPACITY {
                inner.lines.pop_front();
            }
            inner.lines.push_back(LogLine {
                seq,
                ts_ms: crate::util::time::unix_micros() / 1000,
                level: level.into(),
                target: target.into(),
                message,
            });
            seq
        };
        self.seq.send_replace(seq);
    }

    /// Lines with `seq > after`, oldest first; at most the last `max` of them.
    pub fn after(&self, after: u64, max: usize) -> Vec<LogLine> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let newer: Vec<&LogLine> = inner.lines.iter().filter(|l| l.seq > after).collect();
        let skip = newer.len().saturating_sub(max);
        newer.into_iter().skip(skip).cloned().collect()
    }

    /// The `seq` of the newest line; wakes when one is added.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }
}

/// The tracing layer that copies every event (that passes the filter) into [`ring`].
#[derive(Debug, Default)]
pub struct RingLayer;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        ring().push(meta.level().as_str(), meta.target(), fields.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_numbered_and_cut_to_size() {
        let ring = LogRing {
            inner: Mutex::default(),
            seq: watch::channel(0).0,
        };
        for i in 0..LOG_CAPACITY + 5 {
            ring.push("INFO", "t", format!("line {i}"));
        }
        let all = ring.after(0, usize::MAX);
        assert_eq!(all.len(), LOG_CAPACITY);
        assert_eq!(all[0].message, "line 5");
        let last = all.last().unwrap().seq;
        assert_eq!(ring.after(last - 3, usize::MAX).len(), 3);
        assert_eq!(ring.after(0, 10).len(), 10);
        assert_eq!(*ring.watch().borrow(), last);
        ring.push("WARN", "t", "é".repeat(MAX_LINE_BYTES));
        let long = ring.after(last, 1).remove(0);
        assert!(long.message.len() <= MAX_LINE_BYTES);
    }
}
