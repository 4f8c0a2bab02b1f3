//! Fit by speed: how fast a model would decode on this machine, as plain arithmetic over
//! machine figures passed in (measured by [`super::bandwidth`], or made up in tests).
//!
//! Decoding one token reads every weight the token uses once, so a memory-bound decoder runs at
//! about `bandwidth × efficiency ÷ bytes read per token`. Bytes per token are the file size for
//! a dense model, and the share of active parameters for a mixture of experts
//! (`active_params` in the catalog). The efficiency is calibrated on this project's own
//! measurements (docs/BENCHMARKS.md, "Decode speed estimate"): on two 2-core VMs the share of
//! the [`super::bandwidth`] figure (copy traffic, read + write) that `mesh serve` reads weights
//! at was 0.25 and 0.27 for SmolLM2-135M Q4_1 (98 MB), 0.38 and 0.31 for gemma-3-270m Q4_K_M
//! (253 MB); the share grows with the model's size, and [`CPU_EFFICIENCY`] is just under the
//! larger model's lower figure, so the estimate errs slow for larger models. (It was 0.42, from one
//! figure taken on a loaded machine, and was too fast for all four.)
//!
//! Once `mesh serve` has decoded a model here, what it really read per second
//! ([`Machine::measured_decode`]) is a floor under the estimate's rate: a decode spends its
//! time reading weights plus a fixed cost per token, so weights ÷ time is at most what the device
//! delivers. On a CPU the calibrated figure is usually the higher; on a GPU, whose bandwidth
//! llama.cpp does not report ([`ASSUMED_GPU_BANDWIDTH`]), the floor is the figure that counts.

use serde::{Deserialize, Serialize};

use super::data::CatalogEntry;

/// Default of `--min-speed`: `--auto` serves only models expected to decode at least this fast.
pub const DEFAULT_MIN_TOKENS_PER_SEC: f64 = 10.0;
/// Share of the measured CPU memory bandwidth llama.cpp's decoding reaches (calibration above).
pub const CPU_EFFICIENCY: f64 = 0.30;
/// Share of a GPU's memory bandwidth llama.cpp's decoding reaches.
pub const GPU_EFFICIENCY: f64 = 0.6;
/// Memory bandwidth assumed for a discrete GPU, in bytes per second: llama.cpp's device API
/// reports memory but not bandwidth (TODO: measure it, e.g. with a timed device copy). 300 GB/s
/// is the low end of current discrete cards, so the estimate errs slow.
pub const ASSUMED_GPU_BANDWIDTH: f64 = 300e9;

/// The machine figures the estimate needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Machine {
    /// System memory bandwidth in bytes per second (all cores reading and writing).
    pub memory_bandwidth: f64,
    /// A discrete GPU's bandwidth in bytes per second, when there is one; integrated GPUs
    /// share system memory and count as `None`.
    pub gpu_bandwidth: Option<f64>,
    /// Bytes of weights a single stream read per second when `mesh serve` decoded a model here
    /// on the device models decode on ([`Machine::decoder`]); `None` before any.
    pub measured_decode: Option<f64>,
}

/// Where the model would decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Gpu,
}

/// The estimate for one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Speed {
    /// Expected decode tokens per second (one sequence).
    pub tokens_per_sec: f64,
    /// Bytes of weights read per token.
    pub bytes_per_token: u64,
    pub device: Device,
}

/// Bytes of weights one token reads: the file for a dense model, the active share for a
/// mixture of experts.
pub fn bytes_per_token(entry: &CatalogEntry) -> u64 {
    match entry.active_params {
        Some(active) if entry.params > 0 && active < entry.params => {
            (entry.size as f64 * active as f64 / entry.params as f64) as u64
        }
        _ => entry.size,
    }
}

impl Machine {
    /// Where a model decodes here, and the bandwidth it reads its weights at there.
    pub fn decoder(&self) -> (f64, Device) {
        match self.gpu_bandwidth {
            Some(bw) if bw > 0.0 => (bw, Device::Gpu),
            _ => (self.memory_bandwidth, Device::Cpu),
        }
    }
}

impl Device {
    /// Share of the device's memory bandwidth llama.cpp's decoding reaches.
    pub fn efficiency(self) -> f64 {
        match self {
            Device::Cpu => CPU_EFFICIENCY,
            Device::Gpu => GPU_EFFICIENCY,
        }
    }
}

/// Bytes of weights a decode is expected to read per second here, and whether that figure is
/// the decode measured here ([`Machine::measured_decode`]) rather than the device's bandwidth
/// times its efficiency: the larger of the two.
pub fn weights_rate(machine: &Machine) -> (f64, bool) {
    let (bandwidth, device) = machine.decoder();
    let expected = (bandwidth * device.efficiency()).max(0.0);
    match machine.measured_decode.filter(|m| m.is_finite()) {
        Some(m) if m > expected => (m, true),
        _ => (expected, false),
    }
}

/// Decode speed of a model reading `bytes_per_token` per token on `machine`: [`weights_rate`]
/// divided by the bytes.
pub fn estimate(bytes_per_token: u64, machine: &Machine) -> Speed {
    let device = machine.decoder().1;
    let (rate, _) = weights_rate(machine);
    Speed {
        tokens_per_sec: rate / bytes_per_token.max(1) as f64,
        bytes_per_token,
        device,
    }
}

/// The estimate for a catalog entry.
pub fn estimate_entry(entry: &CatalogEntry, machine: &Machine) -> Speed {
    estimate(bytes_per_token(entry), machine)
}

/// One part of a model split by layers (`super::split`), as the estimate sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    /// Share of the model's layers it holds (the parts' shares add up to 1).
    pub share: f64,
    /// The bandwidth its weights are read at, bytes per second, before its device's efficiency
    /// (the host's: [`Machine`]'s, so its GPU's when it has one).
    pub bandwidth: f64,
    /// Where its decoder runs.
    pub device: Device,
    /// Round trip from the host to it, seconds; `None` for the host itself.
    pub rtt: Option<f64>,
}

/// Round trip assumed to a worker none has been measured to (no connection open yet, e.g. an
/// idle tunnel closed): a typical path between two home connections in one region. It errs slow
/// on a LAN.
pub const ASSUMED_RTT_SECS: f64 = 0.05;

/// Network round trips per worker per token: llama.cpp's RPC backend (the version vendored by
/// `llama-cpp-sys-2`) sends the activations (`RPC_CMD_SET_TENSOR`) and the graph to run
/// (`RPC_CMD_GRAPH_COMPUTE`, or `RPC_CMD_GRAPH_RECOMPUTE` for the same graph again) without
/// waiting for answers, then waits for the result (`RPC_CMD_GET_TENSOR`): one round trip.
pub const RPC_ROUND_TRIPS: f64 = 1.0;

/// Work per worker per token besides the network's round trip (the RPC messages, the
/// `mesh/rpc/1` tunnel's copies, the worker's own scheduling): measured on loopback, where the
/// round trip costs nothing, as split time per token less whole time per token with the test
/// model (`just bench-split`, release: 1/52.5 − 1/124.2 s = 11.0 ms and 1/53.4 − 1/132.8 s =
/// 11.2 ms; docs/BENCHMARKS.md, "Split serving"). Both halves shared two cores there, so it
/// errs slow for separate machines.
pub const RPC_HOP_SECS: f64 = 0.011;

/// Decode speed of a model reading `bytes_per_token` per token, split by layers into `parts`
/// (the host's first). A token passes through every part in turn, so the times add up: each
/// part reads its share of the weights at its own bandwidth, and reaching each worker costs
/// [`RPC_ROUND_TRIPS`] round trips and [`RPC_HOP_SECS`]. A part of unknown bandwidth (0) counts
/// as the slowest known.
pub fn split_estimate(bytes_per_token: u64, parts: &[Part]) -> f64 {
    let slowest = parts
        .iter()
        .map(|p| p.bandwidth)
        .filter(|&b| b > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !slowest.is_finite() {
        return 0.0;
    }
    let secs: f64 = parts
        .iter()
        .map(|p| {
            let bandwidth = if p.bandwidth > 0.0 {
                p.bandwidth
            } else {
                slowest
            };
            let efficiency = p.device.efficiency();
            let read = p.share.max(0.0) * bytes_per_token as f64 / (bandwidth * efficiency);
            let hop = p
                .rtt
                .map_or(0.0, |rtt| RPC_ROUND_TRIPS * rtt.max(0.0) + RPC_HOP_SECS);
            read + hop
        })
        .sum();
    if secs > 0.0 {
        1.0 / secs
    } else {
        0.0
    }
}

/// Whether a model is fast enough to serve: at least `min_tokens_per_sec` expected.
pub fn fast_enough(speed: &Speed, min_tokens_per_sec: f64) -> bool {
    speed.tokens_per_sec >= min_tokens_per_sec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    /// A 2-core machine, as `bandwidth::measure` measured it (docs/BENCHMARKS.md, 2026-12-02
    /// evening), where the test model decoded at 97.4 tok/s and gemma-3-270m at 43.5.
    fn two_core() -> Machine {
        Machine {
            memory_bandwidth: 35.9e9,
            gpu_bandwidth: None,
            measured_decode: None,
        }
    }

    fn entry(name: &str) -> CatalogEntry {
        Catalog::embedded().unwrap().get(name).unwrap().clone()
    }

    #[test]
    fn the_test_models_estimates_are_near_what_they_decoded_and_the_larger_errs_slow() {
        let s = estimate_entry(&entry("SmolLM2-135M-Instruct-Q4_1"), &two_core());
        assert_eq!(s.device, Device::Cpu);
        assert!(
            (70.0..=130.0).contains(&s.tokens_per_sec),
            "{}",
            s.tokens_per_sec
        );
        // gemma-3-270m Q4_K_M (253,113,024 bytes; not in the catalog) on both machines it was
        // measured on: 43.5 tok/s at 35.9 GB/s, 71.8 tok/s at 47.8 GB/s.
        for (bandwidth, measured) in [(35.9e9, 43.5), (47.8e9, 71.8)] {
            let machine = Machine {
                memory_bandwidth: bandwidth,
                gpu_bandwidth: None,
                measured_decode: None,
            };
            let s = estimate(253_113_024, &machine).tokens_per_sec;
            assert!(s <= measured && s >= 0.75 * measured, "{s} vs {measured}");
        }
    }

    #[test]
    fn a_32b_dense_model_on_two_cores_is_under_one_token_a_second_and_too_slow() {
        let s = estimate_entry(&entry("Qwen2.5-32B-Instruct-Q4_K_M"), &two_core());
        assert!(s.tokens_per_sec < 1.0, "{}", s.tokens_per_sec);
        assert!(!fast_enough(&s, DEFAULT_MIN_TOKENS_PER_SEC));
    }

    #[test]
    fn a_mixture_of_experts_reads_only_its_active_share() {
        let moe = entry("Qwen3-30B-A3B-Q4_K_M");
        let dense = entry("Qwen3-32B-Q4_K_M");
        assert!(bytes_per_token(&moe) < moe.size / 5);
        assert_eq!(bytes_per_token(&dense), dense.size);
        let (m, d) = (
            estimate_entry(&moe, &two_core()),
            estimate_entry(&dense, &two_core()),
        );
        assert!(m.tokens_per_sec > 5.0 * d.tokens_per_sec);
    }

    #[test]
    fn a_gpu_decodes_from_its_own_bandwidth() {
        let gpu = Machine {
            gpu_bandwidth: Some(ASSUMED_GPU_BANDWIDTH),
            ..two_core()
        };
        let s = estimate_entry(&entry("Qwen3-14B-Q4_K_M"), &gpu);
        assert_eq!(s.device, Device::Gpu);
        assert!(fast_enough(&s, DEFAULT_MIN_TOKENS_PER_SEC));
    }

    #[test]
    fn a_measured_decode_raises_the_estimate_but_never_lowers_it() {
        let q = entry("Qwen3-14B-Q4_K_M");
        let assumed = Machine {
            gpu_bandwidth: Some(ASSUMED_GPU_BANDWIDTH),
            ..two_core()
        };
        let guess = estimate_entry(&q, &assumed).tokens_per_sec;
        // A fast GPU: 150 tok/s measured there on a 9 GB model.
        let fast = Machine {
            measured_decode: Some(150.0 * 9e9),
            ..assumed
        };
        let s = estimate_entry(&q, &fast);
        assert_eq!(s.device, Device::Gpu);
        assert!((s.tokens_per_sec - 150.0 * 9e9 / q.size as f64).abs() < 1e-6);
        assert!(s.tokens_per_sec > 4.0 * guess);
        // A tiny model's decode, bound by the cost per token: below the device's figure, unused.
        let tiny = Machine {
            measured_decode: Some(500.0 * 98e6),
            ..assumed
        };
        assert_eq!(estimate_entry(&q, &tiny).tokens_per_sec, guess);
        let nan = Machine {
            measured_decode: Some(f64::NAN),
            ..assumed
        };
        assert_eq!(estimate_entry(&q, &nan).tokens_per_sec, guess);
        assert!(!weights_rate(&tiny).1 && !weights_rate(&nan).1 && weights_rate(&fast).1);
    }

    #[test]
    fn the_threshold_is_inclusive_and_zero_figures_give_zero() {
        let s = estimate(1_000, &two_core());
        assert!(fast_enough(&s, s.tokens_per_sec));
        assert!(!fast_enough(&s, s.tokens_per_sec * 1.01));
        let none = Machine {
            memory_bandwidth: 0.0,
            gpu_bandwidth: None,
            measured_decode: None,
        };
        assert_eq!(estimate(0, &none).tokens_per_sec, 0.0);
    }

    fn part(share: f64, bandwidth: f64, rtt: Option<f64>) -> Part {
        Part {
            share,
            bandwidth,
            device: Device::Cpu,
            rtt,
        }
    }

    #[test]
    fn a_split_costs_each_part_its_read_and_each_worker_its_round_trips_and_hop() {
        let bytes = 1_000_000_000;
        let (whole, bw) = (
            estimate(bytes, &two_core()).tokens_per_sec,
            two_core().memory_bandwidth,
        );
        // Two halves on machines like this one, a worker with no measured round trip yet.
        let on_loopback = split_estimate(bytes, &[part(0.5, bw, None), part(0.5, bw, Some(0.0))]);
        let expected = 1.0 / (1.0 / whole + RPC_HOP_SECS);
        assert!(
            (on_loopback - expected).abs() < 1e-9,
            "{on_loopback} vs {expected}"
        );
        let far = split_estimate(bytes, &[part(0.5, bw, None), part(0.5, bw, Some(0.03))]);
        let expected = 1.0 / (1.0 / whole + RPC_HOP_SECS + RPC_ROUND_TRIPS * 0.03);
        assert!((far - expected).abs() < 1e-9, "{far} vs {expected}");
        // A worker of unknown bandwidth counts as the slowest known part.
        let slow = split_estimate(
            bytes,
            &[part(0.5, bw / 2.0, None), part(0.5, bw, Some(0.0))],
        );
        let unknown = split_estimate(
            bytes,
            &[part(0.5, bw / 2.0, None), part(0.5, 0.0, Some(0.0))],
        );
        let both_slow = split_estimate(
            bytes,
            &[part(0.5, bw / 2.0, None), part(0.5, bw / 2.0, Some(0.0))],
        );
        assert!(unknown < slow);
        assert!((unknown - both_slow).abs() < 1e-9);
        assert_eq!(split_estimate(bytes, &[part(1.0, 0.0, None)]), 0.0);
    }
}
