//! Download progress as events: what happened (a file started, bytes arrived, a retry, done)
//! and the sink they go to. How they are shown on a terminal is the command layer's business
//! (`cmd::progress`: bars, plain lines, JSON lines); this module prints nothing.

use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Something that happened during a download. Serialised as one JSON object per line with an
/// `event` field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// Files to fetch (sizes from the hub; 0 when unknown).
    Start {
        model: String,
        files: Vec<FileSize>,
        total_bytes: u64,
    },
    /// A file transfer starts; `resumed_from` bytes were already on disk.
    FileStart {
        part: usize,
        file: String,
        size: u64,
        resumed_from: u64,
    },
    /// `bytes` of the file are on disk now.
    Progress {
        part: usize,
        file: String,
        bytes: u64,
        size: u64,
    },
    /// A transient error; the transfer continues from the bytes on disk after `delay_ms`.
    Retry {
        part: usize,
        file: String,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    /// The file's size and sha256 matched.
    Verified {
        part: usize,
        file: String,
        sha256: String,
    },
    /// The file was already in the cache.
    Cached {
        part: usize,
        file: String,
        size: u64,
    },
    /// The file is in place.
    FileDone {
        part: usize,
        file: String,
        path: String,
    },
    /// All files are in place; `path` is the first part.
    Done { model: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileSize {
    pub file: String,
    pub size: u64,
}

/// Receives progress events. Must be cheap: it is called from the download loop.
pub trait ProgressSink: Send + Sync {
    fn event(&self, event: &ProgressEvent);
}

/// Where a download reports progress; [`Progress::quiet`] by default. The terminal renderings
/// (bars, plain lines, JSON lines) live with the commands (`cmd::progress`).
#[derive(Clone)]
pub struct Progress(pub Arc<dyn ProgressSink>);

impl Progress {
    pub fn quiet() -> Self {
        Self(Arc::new(Quiet))
    }

    pub fn to(sink: impl ProgressSink + 'static) -> Self {
        Self(Arc::new(sink))
    }

    pub fn sink(&self) -> &dyn ProgressSink {
        self.0.as_ref()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::quiet()
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Discards events.
pub struct Quiet;

impl ProgressSink for Quiet {
    fn event(&self, _: &ProgressEvent) {}
}

/// Collects events in memory (tests, embedding).
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<ProgressEvent>>,
}

impl ProgressSink for Recorder {
    fn event(&self, event: &ProgressEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_carry_an_event_tag() {
        let e = ProgressEvent::Progress {
            part: 0,
            file: "m.gguf".into(),
            bytes: 10,
            size: 20,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "progress");
        assert_eq!(v["bytes"], 10);
    }
}
