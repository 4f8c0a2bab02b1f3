//! This machine's figures for the speed estimate ([`super::speed`]): system memory bandwidth,
//! measured once with a short multi-threaded copy (well under a second) and cached in
//! `~/.mesh/machine.json`; whether a discrete GPU is present, from llama.cpp's device list.
//!
//! The measurement: every available core copies its own 32 MiB buffer (larger than any cache)
//! a few times with `copy_from_slice` (libc's `memcpy`, so the figure does not depend on the
//! build profile); bandwidth = bytes read + written ÷ each thread's CPU time, summed over the
//! threads, the best of [`ROUNDS`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::speed::{Machine, ASSUMED_GPU_BANDWIDTH};

/// The cache file under the mesh home directory.
pub const MACHINE_FILE: &str = "machine.json";
/// Bytes each thread copies per pass (source and destination each this large).
const BUFFER_BYTES: usize = 32 * 1024 * 1024;
/// Passes per round, and rounds (the best round counts: other programs only slow a round).
const PASSES: usize = 4;
const ROUNDS: usize = 3;
/// Cached figures older than this are measured again.
const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Version of the cache file's content; another version is measured again.
const CACHE_VERSION: u32 = 1;

/// `~/.mesh/machine.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    version: u32,
    /// Bytes per second.
    memory_bandwidth: f64,
    threads: usize,
    measured_at: u64,
}

/// The machine figures: the cached bandwidth (measured now when there is none, it is stale, or
/// the core count changed) and the GPU from llama.cpp's devices.
pub fn machine(home: &Path) -> Machine {
    Machine {
        memory_bandwidth: memory_bandwidth(home),
        gpu_bandwidth: discrete_gpu().then_some(ASSUMED_GPU_BANDWIDTH),
    }
}

/// System memory bandwidth in bytes per second, from the cache or measured (and cached).
pub fn memory_bandwidth(home: &Path) -> f64 {
    let threads = threads();
    let now = crate::util::time::unix_secs();
    let file = home.join(MACHINE_FILE);
    let cached = std::fs::read(&file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
        .filter(|c| {
            c.version == CACHE_VERSION
                && c.threads == threads
                && c.memory_bandwidth > 0.0
                && now.saturating_sub(c.measured_at) < MAX_AGE.as_secs()
        });
    if let Some(c) = cached {
        return c.memory_bandwidth;
    }
    let measured = measure(threads);
    let doc = Cached {
        version: CACHE_VERSION,
        memory_bandwidth: measured,
        threads,
        measured_at: now,
    };
    let write = std::fs::create_dir_all(home)
        .and_then(|()| std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap_or_default()));
    if let Err(e) = write {
        tracing::debug!("cannot cache the bandwidth in {}: {e}", file.display());
    }
    measured
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measures copy bandwidth with `threads` threads (bytes read + written per second).
///
/// Each thread's rate is timed by its own CPU time where the OS tells it
/// (`/proc/thread-self/schedstat`), else by the wall clock: on a busy machine other programs
/// take turns on the cores, which says nothing about the memory (measured here: 1.1–1.9 GB/s
/// by the wall clock under a load average of 18, 20–23 GB/s by CPU time, run after run).
pub fn measure(threads: usize) -> f64 {
    let threads = threads.max(1);
    let mut buffers: Vec<(Vec<u8>, Vec<u8>)> = (0..threads)
        .map(|i| (vec![i as u8 + 1; BUFFER_BYTES], vec![0u8; BUFFER_BYTES]))
        .collect();
    // Touch the destinations once so page faults are not timed.
    for (src, dst) in &mut buffers {
        dst.copy_from_slice(src);
    }
    let bytes = (2 * BUFFER_BYTES * PASSES) as f64;
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        let rates: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = buffers
                .iter_mut()
                .map(|(src, dst)| {
                    s.spawn(move || {
                        let (wall, cpu) = (Instant::now(), thread_cpu_ns());
                        for pass in 0..PASSES {
                            dst.copy_from_slice(src);
                            src[pass] = dst[BUFFER_BYTES - 1 - pass];
                        }
                        let secs = match (cpu, thread_cpu_ns()) {
                            (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                            _ => wall.elapsed().as_secs_f64(),
                        };
                        bytes / secs.max(1e-9)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        best = best.max(rates.iter().sum());
    }
    best
}

/// Nanoseconds this thread has run on a CPU (Linux), if the OS says.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Whether llama.cpp sees a discrete GPU (present only when a GPU back end is compiled in).
fn discrete_gpu() -> bool {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|d| matches!(d.device_type, T::Gpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_is_measured_once_then_read_from_the_cache() {
        let home = tempfile::tempdir().unwrap();
        let first = memory_bandwidth(home.path());
        assert!(first > 1e8, "{first}");
        // A figure in the cache is used as it is, without measuring.
        let mut c: Cached =
            serde_json::from_slice(&std::fs::read(home.path().join(MACHINE_FILE)).unwrap())
                .unwrap();
        c.memory_bandwidth = 1234.0;
        std::fs::write(
            home.path().join(MACHINE_FILE),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        assert_eq!(memory_bandwidth(home.path()), 1234.0);
        // A stale or damaged cache is measured again.
        c.measured_at = 0;
        std::fs::write(
            home.path().join(MACHINE_FILE),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        assert!(memory_bandwidth(home.path()) > 1e8);
        std::fs::write(home.path().join(MACHINE_FILE), b"{").unwrap();
        assert!(memory_bandwidth(home.path()) > 1e8);
    }
}
