//! This machine's figures for the speed estimate ([`super::speed`]): system memory bandwidth,
//! measured once with a short multi-threaded copy (well under a second) and cached in
//! `~/.mesh/machine.json`; whether a discrete GPU is present, from llama.cpp's device list; and
//! the best single-stream decode a model served here reached, per device ([`record_decode`],
//! kept in the same file), the only measured figure there is for a GPU.
//!
//! The measurement: every available core copies its own 32 MiB buffer (larger than any cache)
//! a few times with `copy_from_slice` (libc's `memcpy`, so the figure does not depend on the
//! build profile); bandwidth = bytes read + written ÷ each thread's CPU time, summed over the
//! threads, the best of [`ROUNDS`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::speed::{Device, Machine, ASSUMED_GPU_BANDWIDTH};

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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cached {
    version: u32,
    /// Bytes per second; 0 until measured.
    memory_bandwidth: f64,
    threads: usize,
    measured_at: u64,
    /// The best single-stream decode measured on each device.
    #[serde(default)]
    decode: Vec<Decoded>,
}

/// A single-stream decode `mesh serve` measured here: a model whose layers all ran on `device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decoded {
    pub device: Device,
    /// Bytes of weights read per second: tokens per second × the model's bytes per token.
    pub weights_per_sec: f64,
    pub tokens_per_sec: f64,
    /// The model's file name.
    pub model: String,
    /// Cores of the machine then (another count is another machine).
    pub threads: usize,
    pub measured_at: u64,
}

impl Decoded {
    fn valid(&self, device: Device, threads: usize, now: u64) -> bool {
        self.device == device
            && self.threads == threads
            && self.weights_per_sec.is_finite()
            && self.weights_per_sec > 0.0
            && now.saturating_sub(self.measured_at) < MAX_AGE.as_secs()
    }
}

/// The machine figures: the cached bandwidth (measured now when there is none, it is stale, or
/// the core count changed), the GPU from llama.cpp's devices, and the decode measured on the
/// device models decode on here.
pub fn machine(home: &Path) -> Machine {
    let gpu = discrete_gpu();
    let device = if gpu { Device::Gpu } else { Device::Cpu };
    Machine {
        memory_bandwidth: memory_bandwidth(home),
        gpu_bandwidth: gpu.then_some(ASSUMED_GPU_BANDWIDTH),
        measured_decode: measured_decode(home, device).map(|d| d.weights_per_sec),
    }
}

fn read(file: &Path) -> Option<Cached> {
    let c = serde_json::from_slice::<Cached>(&std::fs::read(file).ok()?).ok()?;
    (c.version == CACHE_VERSION).then_some(c)
}

fn write(home: &Path, doc: &Cached) -> std::io::Result<()> {
    std::fs::create_dir_all(home)?;
    // Written whole to a temporary file, then renamed: a reader never sees half a file.
    let tmp = home.join(format!("{MACHINE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap_or_default())?;
    std::fs::rename(tmp, home.join(MACHINE_FILE))
}

/// System memory bandwidth in bytes per second, from the cache or measured (and cached).
pub fn memory_bandwidth(home: &Path) -> f64 {
    let threads = threads();
    let now = crate::util::time::unix_secs();
    let file = home.join(MACHINE_FILE);
    let cached = read(&file);
    if let Some(c) = cached.as_ref().filter(|c| {
        c.threads == threads
            && c.memory_bandwidth > 0.0
            && now.saturating_sub(c.measured_at) < MAX_AGE.as_secs()
    }) {
        return c.memory_bandwidth;
    }
    let measured = measure(threads);
    let doc = Cached {
        version: CACHE_VERSION,
        memory_bandwidth: measured,
        threads,
        measured_at: now,
        decode: cached.map(|c| c.decode).unwrap_or_default(),
    };
    if let Err(e) = write(home, &doc) {
        tracing::debug!("cannot cache the bandwidth in {}: {e}", file.display());
    }
    measured
}

/// The decode measured on `device` here, if one is cached (same core count, under 30 days old).
pub fn measured_decode(home: &Path, device: Device) -> Option<Decoded> {
    let now = crate::util::time::unix_secs();
    read(&home.join(MACHINE_FILE))?
        .decode
        .into_iter()
        .find(|d| d.valid(device, threads(), now))
}

/// Keeps a single-stream decode of `model` (reading `bytes_per_token` per token) at
/// `tokens_per_sec` on `device` when it beats the one cached for that device (or none is):
/// a loaded machine only slows a decode, so the best is the machine's. True when written.
pub fn record_decode(
    home: &Path,
    device: Device,
    model: &str,
    bytes_per_token: u64,
    tokens_per_sec: f64,
) -> std::io::Result<bool> {
    let weights_per_sec = tokens_per_sec * bytes_per_token as f64;
    if !weights_per_sec.is_finite() || weights_per_sec <= 0.0 {
        return Ok(false);
    }
    let (threads, now) = (threads(), crate::util::time::unix_secs());
    let mut doc = read(&home.join(MACHINE_FILE)).unwrap_or_else(|| Cached {
        version: CACHE_VERSION,
        ..Cached::default()
    });
    if let Some(best) = doc.decode.iter().find(|d| d.valid(device, threads, now)) {
        if best.weights_per_sec >= weights_per_sec {
            return Ok(false);
        }
    }
    doc.decode.retain(|d| d.device != device);
    doc.decode.push(Decoded {
        device,
        weights_per_sec,
        tokens_per_sec,
        model: model.to_string(),
        threads,
        measured_at: now,
    });
    write(home, &doc)?;
    Ok(true)
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
pub fn discrete_gpu() -> bool {
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

    #[test]
    fn the_best_decode_per_device_is_kept_and_survives_a_new_bandwidth_measurement() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        assert_eq!(measured_decode(h, Device::Cpu), None);
        // A decode before any bandwidth measurement: kept, and the bandwidth still measured.
        assert!(record_decode(h, Device::Cpu, "a.gguf", 100_000_000, 90.0).unwrap());
        let first = measured_decode(h, Device::Cpu).unwrap();
        assert_eq!(first.weights_per_sec, 9e9);
        assert_eq!(first.model, "a.gguf");
        assert!(memory_bandwidth(h) > 1e8);
        assert_eq!(measured_decode(h, Device::Cpu), Some(first.clone()));
        // A slower run (a loaded machine) leaves it; a faster one replaces it.
        assert!(!record_decode(h, Device::Cpu, "b.gguf", 250_000_000, 30.0).unwrap());
        assert!(record_decode(h, Device::Cpu, "b.gguf", 250_000_000, 44.0).unwrap());
        assert_eq!(
            measured_decode(h, Device::Cpu).unwrap().weights_per_sec,
            11e9
        );
        // Each device its own; nonsense is not kept.
        assert_eq!(measured_decode(h, Device::Gpu), None);
        assert!(record_decode(h, Device::Gpu, "a.gguf", 100_000_000, 900.0).unwrap());
        assert_eq!(
            measured_decode(h, Device::Gpu).unwrap().weights_per_sec,
            9e10
        );
        assert_eq!(
            measured_decode(h, Device::Cpu).unwrap().weights_per_sec,
            11e9
        );
        assert!(!record_decode(h, Device::Cpu, "c.gguf", 1, f64::NAN).unwrap());
        // A stale figure, or one from another core count, counts as none.
        let mut c = read(&h.join(MACHINE_FILE)).unwrap();
        c.decode.iter_mut().for_each(|d| d.measured_at = 0);
        write(h, &c).unwrap();
        assert_eq!(measured_decode(h, Device::Cpu), None);
        assert!(record_decode(h, Device::Cpu, "a.gguf", 100_000_000, 10.0).unwrap());
        let mut c = read(&h.join(MACHINE_FILE)).unwrap();
        c.decode.iter_mut().for_each(|d| d.threads += 1);
        write(h, &c).unwrap();
        assert_eq!(measured_decode(h, Device::Cpu), None);
    }
}
