//! Scoring benchmark: rank N offers (default 10,000) the way `mesh --auto` does — score all,
//! take the top K to probe, score again with their RTTs, pick — and print the median time.
//! `cargo run --release --example bench_score [OFFERS] [ROUNDS]` (`just bench-score`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mesh::discovery::score::{self, synthetic_offer, Preferences, Probe};
use mesh::mesh::proto::ticket::MeshId;
use rand::{Rng, SeedableRng};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let models: Vec<String> = (0..30).map(|i| format!("model-{i}-Q4_K_M")).collect();
    let regions = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"];
    let offers: Vec<_> = (0..n)
        .map(|i| {
            let model = &models[rng.random_range(0..models.len())];
            let region = regions[rng.random_range(0..regions.len())];
            let mut o = synthetic_offer(0, model, rng.random_range(0..=4), Some(region));
            o.mesh_id = MeshId((i as u128).to_be_bytes());
            o.content.nodes = rng.random_range(1..20);
            o.content.clients = rng.random_range(0..64);
            o.content.memory_bytes = rng.random_range(8..512u64) << 30;
            o.created_at = 1_000 - rng.random_range(0..170);
            o
        })
        .collect();
    let prefs = Preferences {
        model: Some(models[3].clone()),
        region: Some("eu-west".into()),
        client: true,
        joinable_only: true,
        now: 1_000,
        ..Preferences::default()
    };
    let mut times = Vec::with_capacity(rounds);
    let mut picked = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let first = score::rank(&offers, &HashMap::new(), &prefs);
        let probes: HashMap<_, _> = score::to_probe(&offers, &first, score::PROBE_TOP_K)
            .into_iter()
            .map(|i| {
                (
                    offers[i].node,
                    Probe::Rtt(Duration::from_millis(20 + i as u64 % 50)),
                )
            })
            .collect();
        let ranked = score::rank(&offers, &probes, &prefs);
        picked += score::pick(&ranked, &mut rng).map_or(0, |s| s.index);
        times.push(start.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "scored {n} offers (score, probe top {}, score again, pick): median {:.2} ms, min {:.2} ms, max {:.2} ms over {rounds} rounds (checksum {picked})",
        score::PROBE_TOP_K,
        ms(times[rounds / 2]),
        ms(times[0]),
        ms(times[rounds - 1]),
    );
}
