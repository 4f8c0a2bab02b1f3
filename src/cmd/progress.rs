//! Download progress on the terminal: indicatif bars (one per file part plus a total) when
//! stdout is a terminal, plain lines otherwise, JSON lines (`--json`) for programs. The catalog
//! emits `ProgressEvent`s; these sinks show them.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::catalog::fit::human_bytes;
use crate::catalog::progress::{Progress, ProgressEvent, ProgressSink};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Bars when stdout is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// JSON lines on stdout.
    Json,
    /// Nothing.
    Quiet,
}

/// Where the catalog's progress events go for `mode`.
pub fn progress(mode: ProgressMode) -> Progress {
    match mode {
        ProgressMode::Json => Progress::to(JsonLines),
        ProgressMode::Quiet => Progress::quiet(),
        ProgressMode::Auto if std::io::stdout().is_terminal() => Progress::to(Bars::new()),
        ProgressMode::Auto => Progress::to(PlainLines::new()),
    }
}

/// One JSON object per line on stdout.
pub struct JsonLines;

impl ProgressSink for JsonLines {
    fn event(&self, event: &ProgressEvent) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Plain lines on stderr: start/end of each file and a progress line every 5 seconds.
pub struct PlainLines {
    last: Mutex<Instant>,
}

impl PlainLines {
    pub fn new() -> Self {
        Self {
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Default for PlainLines {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressSink for PlainLines {
    fn event(&self, event: &ProgressEvent) {
        let h = human_bytes;
        let line = match event {
            ProgressEvent::Start {
                model,
                files,
                total_bytes,
            } => Some(format!(
                "downloading {model}: {} file(s), {}",
                files.len(),
                h(*total_bytes)
            )),
            ProgressEvent::FileStart {
                file,
                size,
                resumed_from,
                ..
            } if *resumed_from > 0 => Some(format!(
                "{file}: resuming at {} of {}",
                h(*resumed_from),
                h(*size)
            )),
            ProgressEvent::FileStart { file, size, .. } => Some(format!("{file}: {}", h(*size))),
            ProgressEvent::Progress {
                file, bytes, size, ..
            } => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                (last.elapsed() >= Duration::from_secs(5)).then(|| {
                    *last = Instant::now();
                    format!("{file}: {} of {}", h(*bytes), h(*size))
                })
            }
            ProgressEvent::Retry {
                file,
                attempt,
                delay_ms,
                error,
                ..
            } => Some(format!("{file}: {error}; retry {attempt} in {delay_ms} ms")),
            ProgressEvent::Verified { file, .. } => {
                Some(format!("{file}: size and sha256 verified"))
            }
            ProgressEvent::Cached { file, .. } => Some(format!("{file}: already in the cache")),
            ProgressEvent::FileDone { .. } => None,
            ProgressEvent::Done { model, path } => Some(format!("{model}: ready at {path}")),
        };
        if let Some(line) = line {
            eprintln!("{line}");
        }
    }
}

/// indicatif bars on stderr: one per file part and a total.
pub struct Bars {
    multi: MultiProgress,
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    total: Option<ProgressBar>,
    files: Vec<ProgressBar>,
    /// Bytes counted into `total` per part, to add only deltas.
    counted: Vec<u64>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            state: Mutex::new(BarState::default()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressSink for Bars {
    fn event(&self, event: &ProgressEvent) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut *st;
        let bar_for = |st: &mut BarState, part: usize| st.files.get(part).cloned();
        match event {
            ProgressEvent::Start {
                model,
                files,
                total_bytes,
            } => {
                for f in files {
                    let bar = self
                        .multi
                        .add(ProgressBar::new(f.size).with_style(Self::style()));
                    bar.set_message(f.file.rsplit('/').next().unwrap_or(&f.file).to_string());
                    st.files.push(bar);
                    st.counted.push(0);
                }
                if files.len() > 1 {
                    let total = self
                        .multi
                        .add(ProgressBar::new(*total_bytes).with_style(Self::style()));
                    total.set_message(format!("{model} (total)"));
                    st.total = Some(total);
                }
            }
            ProgressEvent::FileStart {
                part, resumed_from, ..
            } => {
                if let Some(bar) = bar_for(st, *part) {
                    bar.set_position(*resumed_from);
                    bar.reset_eta();
                }
                self.add_total(st, *part, *resumed_from);
            }
            ProgressEvent::Progress { part, bytes, .. } => {
                if let Some(bar) = bar_for(st, *part) {
                    bar.set_position(*bytes);
                }
                self.add_total(st, *part, *bytes);
            }
            ProgressEvent::Retry {
                file,
                error,
                delay_ms,
                ..
            } => {
                let _ = self
                    .multi
                    .println(format!("{file}: {error}; retrying in {delay_ms} ms"));
            }
            ProgressEvent::Cached { part, size, .. } => {
                if let Some(bar) = bar_for(st, *part) {
                    bar.set_position(*size);
                    bar.finish_with_message("cached");
                }
                self.add_total(st, *part, *size);
            }
            ProgressEvent::Verified { part, .. } => {
                if let Some(bar) = bar_for(st, *part) {
                    bar.finish();
                }
            }
            ProgressEvent::FileDone { .. } => {}
            ProgressEvent::Done { .. } => {
                if let Some(total) = &st.total {
                    total.finish();
                }
            }
        }
    }
}

impl Bars {
    fn add_total(&self, st: &mut BarState, part: usize, bytes: u64) {
        if let (Some(total), Some(counted)) = (&st.total, st.counted.get_mut(part)) {
            if bytes > *counted {
                total.inc(bytes - *counted);
                *counted = bytes;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::progress::FileSize;

    #[test]
    fn bars_accept_a_whole_download_without_panicking() {
        let bars = Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            state: Mutex::new(BarState::default()),
        };
        let files = vec![
            FileSize {
                file: "a".into(),
                size: 10,
            },
            FileSize {
                file: "b".into(),
                size: 10,
            },
        ];
        bars.event(&ProgressEvent::Start {
            model: "m".into(),
            files,
            total_bytes: 20,
        });
        bars.event(&ProgressEvent::FileStart {
            part: 0,
            file: "a".into(),
            size: 10,
            resumed_from: 4,
        });
        bars.event(&ProgressEvent::Progress {
            part: 0,
            file: "a".into(),
            bytes: 10,
            size: 10,
        });
        bars.event(&ProgressEvent::Cached {
            part: 1,
            file: "b".into(),
            size: 10,
        });
        bars.event(&ProgressEvent::Progress {
            part: 7,
            file: "?".into(),
            bytes: 1,
            size: 1,
        });
        let st = bars.state.lock().unwrap();
        assert_eq!(st.total.as_ref().unwrap().position(), 20);
    }
}
