//! Split serving's plan (pure): which members lend memory to a model split by layers, and how
//! many layers each holds. The host keeps the first layers (and the token embeddings and output
//! head); the workers hold the rest, reached over llama.cpp's RPC backend.
//!
//! - Workers are the members with the most free memory (ties: faster, then by id, so that every
//!   run plans the same way).
//! - `--split N` takes the best N − 1 workers; otherwise as few as make the model fit.
//! - Layers are shared in proportion to free memory, at least one each (largest remainders).

use std::cmp::Ordering;

use super::speed::{self, Device, Machine, Part};

/// Most workers of one split (llama.cpp's `GGML_RPC_MAX_SERVERS`).
pub const MAX_WORKERS: usize = 16;

/// A member as the plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: String,
    /// Memory it can give the model (announced; the host's own: `catalog::available_memory`).
    pub free_bytes: u64,
    /// Decode speed it announces (0: unknown).
    pub tokens_per_second: f32,
    /// Memory bandwidth it measured, bytes per second (0: unknown); see [`super::elect`].
    pub memory_bandwidth: u64,
    /// Round trip to it from this node, seconds, when a connection has measured one.
    pub rtt: Option<f64>,
}

/// One worker's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub id: String,
    pub layers: u32,
}

/// The plan: the host's layers and each worker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub host_layers: u32,
    pub workers: Vec<Share>,
}

impl Plan {
    /// Layers on the workers: llama.cpp's `n_gpu_layers` when the workers are the only devices.
    pub fn worker_layers(&self) -> u32 {
        self.workers.iter().map(|w| w.layers).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a split needs {want} members; the mesh has {have} that could lend memory")]
    NotEnoughMembers { want: usize, have: usize },
    #[error("the model needs {need} bytes; this node and up to {MAX_WORKERS} members have {have}")]
    DoesNotFit { need: u64, have: u64 },
    #[error("the model has {layers} layers: it cannot be split in {parts} parts")]
    TooFewLayers { layers: u32, parts: usize },
}

/// Plans a split of a model of `layers` layers needing `need_bytes` in all between `host` and
/// some of `candidates` (the other members); `parts` forces that many parts (`--split N`, ≥ 2).
pub fn plan(
    need_bytes: u64,
    layers: u32,
    host: &Member,
    candidates: &[Member],
    parts: Option<usize>,
) -> Result<Plan, PlanError> {
    let mut ranked: Vec<&Member> = candidates
        .iter()
        .filter(|m| m.id != host.id && m.free_bytes > 0)
        .collect();
    ranked.sort_by(|a, b| rank(a, b));
    let chosen: Vec<&Member> = match parts {
        Some(n) => {
            let want = n.clamp(2, MAX_WORKERS + 1);
            if ranked.len() < want - 1 {
                return Err(PlanError::NotEnoughMembers {
                    want,
                    have: ranked.len() + 1,
                });
            }
            ranked.into_iter().take(want - 1).collect()
        }
        None => {
            let mut have = host.free_bytes;
            let mut chosen = Vec::new();
            for m in ranked.into_iter().take(MAX_WORKERS) {
                if have >= need_bytes && !chosen.is_empty() {
                    break;
                }
                have = have.saturating_add(m.free_bytes);
                chosen.push(m);
            }
            if have < need_bytes || chosen.is_empty() {
                return Err(PlanError::DoesNotFit {
                    need: need_bytes,
                    have,
                });
            }
            chosen
        }
    };
    let parts = chosen.len() + 1;
    if (layers as usize) < parts {
        return Err(PlanError::TooFewLayers { layers, parts });
    }
    let weights: Vec<u64> = std::iter::once(host.free_bytes.max(1))
        .chain(chosen.iter().map(|m| m.free_bytes))
        .collect();
    let shares = share_layers(layers, &weights);
    Ok(Plan {
        host_layers: shares[0],
        workers: chosen
            .iter()
            .zip(&shares[1..])
            .map(|(m, &layers)| Share {
                id: m.id.clone(),
                layers,
            })
            .collect(),
    })
}

/// A split that would hold a model: its plan and the decode speed expected of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitFit {
    pub plan: Plan,
    pub tokens_per_sec: f64,
}

/// Plans a split of a model (needing `need_bytes`, reading `bytes_per_token` per token) between
/// `host`, on `machine`, and as few of `lenders` as hold it, and estimates its decode speed
/// (`speed::split_estimate`). `layers`: the model's layer count, when known; otherwise the
/// layers are shared as if the model had [`UNKNOWN_LAYERS`].
pub fn fit(
    need_bytes: u64,
    layers: Option<u32>,
    bytes_per_token: u64,
    host: &Member,
    machine: &Machine,
    lenders: &[Member],
) -> Result<SplitFit, PlanError> {
    let total = layers.unwrap_or(UNKNOWN_LAYERS).max(1);
    let plan = plan(need_bytes, total, host, lenders, None)?;
    let (bandwidth, device) = machine.decoder();
    let mut parts = vec![Part {
        share: f64::from(plan.host_layers) / f64::from(total),
        bandwidth,
        device,
        rtt: None,
    }];
    for w in &plan.workers {
        let m = lenders.iter().find(|m| m.id == w.id);
        parts.push(Part {
            share: f64::from(w.layers) / f64::from(total),
            bandwidth: m.map_or(0.0, |m| m.memory_bandwidth as f64),
            device: Device::Cpu,
            rtt: Some(m.and_then(|m| m.rtt).unwrap_or(speed::ASSUMED_RTT_SECS)),
        });
    }
    let tokens_per_sec = speed::split_estimate(bytes_per_token, &parts);
    Ok(SplitFit {
        plan,
        tokens_per_sec,
    })
}

/// Layers assumed of a model whose layer count is unknown (no `kv` shape in the catalog): fine
/// enough that sharing them follows the members' memory closely.
pub const UNKNOWN_LAYERS: u32 = 64;

/// More free memory first, then [`faster_first`].
fn rank(a: &Member, b: &Member) -> Ordering {
    b.free_bytes.cmp(&a.free_bytes).then(faster_first(a, b))
}

/// Higher memory bandwidth first, then higher decode speed, then the lower id (so that every
/// member orders the same list the same way); also the host election's tie-break.
pub(super) fn faster_first(a: &Member, b: &Member) -> Ordering {
    b.memory_bandwidth
        .cmp(&a.memory_bandwidth)
        .then(
            b.tokens_per_second
                .partial_cmp(&a.tokens_per_second)
                .unwrap_or(Ordering::Equal),
        )
        .then(a.id.cmp(&b.id))
}

/// `layers` shared in proportion to `weights` (largest remainders), at least one each;
/// `layers` ≥ `weights.len()` ≥ 1.
fn share_layers(layers: u32, weights: &[u64]) -> Vec<u32> {
    let n = weights.len() as u32;
    let spare = u128::from(layers - n);
    let weights: Vec<u128> = weights.iter().map(|&w| u128::from(w.max(1))).collect();
    let total: u128 = weights.iter().sum();
    let exact: Vec<(u128, u128)> = weights
        .iter()
        .map(|&w| {
            let x = spare * w;
            (x / total, x % total)
        })
        .collect();
    let mut out: Vec<u32> = exact.iter().map(|&(q, _)| 1 + q as u32).collect();
    let mut left = layers - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in order {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1 << 30;

    fn m(id: &str, gb: u64, tps: f32) -> Member {
        Member {
            id: id.into(),
            free_bytes: gb * GB,
            tokens_per_second: tps,
            memory_bandwidth: 0,
            rtt: None,
        }
    }

    #[test]
    fn forced_split_takes_the_members_with_most_memory_and_shares_layers_by_memory() {
        let host = m("h", 8, 0.0);
        let others = [m("a", 4, 0.0), m("b", 16, 0.0), m("c", 8, 0.0)];
        let p = plan(1, 28, &host, &others, Some(3)).unwrap();
        let ids: Vec<_> = p.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        // 8 : 16 : 8 of 28 layers.
        assert_eq!(p.host_layers, 7);
        assert_eq!(p.workers[0].layers, 14);
        assert_eq!(p.workers[1].layers, 7);
        assert_eq!(p.host_layers + p.worker_layers(), 28);
    }

    #[test]
    fn without_a_count_as_few_workers_as_make_the_model_fit_are_taken() {
        let host = m("h", 8, 0.0);
        let others = [m("a", 4, 0.0), m("b", 6, 0.0), m("c", 2, 0.0)];
        let p = plan(13 * GB, 30, &host, &others, None).unwrap();
        let ids: Vec<_> = p.workers.iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["b"]);
        let p = plan(17 * GB, 30, &host, &others, None).unwrap();
        assert_eq!(p.workers.len(), 2);
        assert_eq!(
            plan(40 * GB, 30, &host, &others, None),
            Err(PlanError::DoesNotFit {
                need: 40 * GB,
                have: 20 * GB
            })
        );
    }

    #[test]
    fn ties_go_to_the_faster_member_then_by_id_and_the_host_is_never_its_own_worker() {
        let host = m("h", 8, 0.0);
        let others = [
            m("h", 64, 0.0),
            m("z", 4, 9.0),
            m("y", 4, 9.0),
            m("x", 4, 1.0),
        ];
        let p = plan(1, 10, &host, &others, Some(2)).unwrap();
        assert_eq!(p.workers[0].id, "y");
    }

    #[test]
    fn too_few_members_or_layers_is_an_error_not_a_partial_plan() {
        let host = m("h", 8, 0.0);
        assert_eq!(
            plan(1, 30, &host, &[m("a", 0, 0.0)], Some(2)),
            Err(PlanError::NotEnoughMembers { want: 2, have: 1 })
        );
        assert_eq!(
            plan(1, 2, &host, &[m("a", 1, 0.0), m("b", 1, 0.0)], Some(3)),
            Err(PlanError::TooFewLayers {
                layers: 2,
                parts: 3
            })
        );
    }

    #[test]
    fn every_part_gets_at_least_one_layer_and_the_sum_is_exact() {
        assert_eq!(share_layers(3, &[1, 1_000_000, 1]), [1, 1, 1]);
        assert_eq!(share_layers(10, &[1, 1_000_000]), [1, 9]);
        assert_eq!(share_layers(7, &[1, 1, 1]), [3, 2, 2]);
        assert_eq!(share_layers(30, &[0, 0]), [15, 15]);
    }

    #[test]
    fn a_fit_plans_as_few_workers_as_hold_the_model_and_estimates_the_slower_split() {
        let machine = Machine {
            memory_bandwidth: 22e9,
            gpu_bandwidth: None,
            measured_decode: None,
        };
        let host = Member {
            memory_bandwidth: 22_000_000_000,
            ..m("h", 8, 0.0)
        };
        let near = Member {
            memory_bandwidth: 22_000_000_000,
            rtt: Some(0.001),
            ..m("a", 8, 0.0)
        };
        let far = Member {
            rtt: Some(0.2),
            ..near.clone()
        };
        let f = fit(
            12 * GB,
            Some(40),
            GB,
            &host,
            &machine,
            std::slice::from_ref(&near),
        )
        .unwrap();
        assert_eq!((f.plan.host_layers, f.plan.worker_layers()), (20, 20));
        let whole = speed::estimate(GB, &machine).tokens_per_sec;
        let expected = 1.0 / (1.0 / whole + speed::RPC_HOP_SECS + speed::RPC_ROUND_TRIPS * 0.001);
        assert!((f.tokens_per_sec - expected).abs() < 1e-9);
        let slow = fit(12 * GB, Some(40), GB, &host, &machine, &[far]).unwrap();
        assert!(slow.tokens_per_sec < f.tokens_per_sec / 2.0, "{slow:?}");
        // No layer count: shared as if fine-grained; no room: the plan's error.
        let f = fit(
            12 * GB,
            None,
            GB,
            &host,
            &machine,
            std::slice::from_ref(&near),
        )
        .unwrap();
        assert_eq!(f.plan.host_layers + f.plan.worker_layers(), UNKNOWN_LAYERS);
        assert!(matches!(
            fit(40 * GB, Some(40), GB, &host, &machine, &[near]),
            Err(PlanError::DoesNotFit { .. })
        ));
    }
}
