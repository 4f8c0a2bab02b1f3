//! Download throughput: `mesh`'s hub download (HEAD + redirect + write + sha256 + rename +
//! snapshot link) against a plain HTTP GET of the same bytes written to a file, both from the
//! local fake hub (tests/it/common/hub.rs) on 127.0.0.1. Goal: ratio ≥ 0.9. Results: docs/BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example bench_download -- [MiB=256] [rounds=3] [MB/s link speed, 0=unlimited]
//! cargo run --release --example bench_download -- serve [MiB]   # keep a fake hub running
//! ```

#[path = "../tests/it/common/hub.rs"]
mod common_hub;

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh::catalog::hub::RetryPolicy;
use mesh::catalog::progress::{Progress, Quiet};
use mesh::catalog::spec::parse_spec;
use mesh::catalog::{resolve_with, ResolveOptions};

const REPO: &str = "bench/big-GGUF";
const FILE: &str = "big.gguf";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = args.first().is_some_and(|a| a == "serve");
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let mib = nums.first().copied().unwrap_or(256);
    let rounds = nums.get(1).copied().unwrap_or(3).max(1);
    let link_mbs = nums.get(2).copied().unwrap_or(0);

    let hub = common_hub::FakeHub::start().await;
    let content = common_hub::synthetic(mib << 20, 42);
    let sha = hub.add_file(REPO, FILE, content);
    // MB/s → bytes per 10 ms tick of the fake hub's pacing.
    hub.state.throttle.store(
        link_mbs as u64 * 10_000,
        std::sync::atomic::Ordering::SeqCst,
    );
    if serve {
        println!(
            "fake hub at {} serving {REPO}/{FILE} ({mib} MiB, sha256 {sha}); Ctrl-C to stop",
            hub.url()
        );
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    let work = tempfile::tempdir()?;
    let client = mesh::catalog::hub::http_client(10)?;
    let bytes = (mib as f64) * 1024.0 * 1024.0;
    let (mut plain, mut hashed, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Baseline: one GET, body streamed into a file.
        let out = work.path().join(format!("plain-{round}"));
        let t = Instant::now();
        let resp = client
            .get(format!("{}/plain/{sha}", hub.url()))
            .send()
            .await?
            .error_for_status()?;
        let mut file = std::fs::File::create(&out)?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?)?;
        }
        drop(file);
        plain.push(t.elapsed());
        std::fs::remove_file(&out)?;

        // Reference: the same plus sha256 inline — the floor for any verified download.
        let t = Instant::now();
        let resp = client
            .get(format!("{}/plain/{sha}", hub.url()))
            .send()
            .await?
            .error_for_status()?;
        let mut file = std::fs::File::create(&out)?;
        let mut stream = resp.bytes_stream();
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)?;
            sha2::Digest::update(&mut hasher, &chunk);
        }
        drop(file);
        anyhow::ensure!(
            mesh::catalog::disk::hex(&sha2::Digest::finalize(hasher)) == sha,
            "bad hash"
        );
        hashed.push(t.elapsed());
        std::fs::remove_file(&out)?;

        // mesh: the full resolve path into a fresh Hugging Face cache.
        let opts = ResolveOptions {
            catalog: None,
            endpoint: hub.url(),
            token: None,
            offline: false,
            cache_dir: work.path().join(format!("hf-{round}")),
            progress: Progress::quiet(),
            retry: RetryPolicy::default(),
            verify: false,
        };
        let spec = parse_spec(&format!("{REPO}/{FILE}"), |_| false)?;
        let t = Instant::now();
        let model = resolve_with(spec, &opts, &Quiet).await?;
        ours.push(t.elapsed());
        anyhow::ensure!(
            std::fs::metadata(&model.path)?.len() == (mib << 20) as u64,
            "wrong size"
        );
        std::fs::remove_dir_all(&opts.cache_dir)?;
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (p, h, o) = (median(&mut plain), median(&mut hashed), median(&mut ours));
    let mbs = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    let line = |label: &str, d: Duration| {
        println!(
            "{label:<28} {:>8.1} MB/s  ({:.3} s)",
            mbs(d),
            d.as_secs_f64()
        );
    };
    let link = if link_mbs == 0 {
        "unlimited".to_string()
    } else {
        format!("{link_mbs} MB/s")
    };
    println!("file: {mib} MiB, rounds: {rounds} (medians), link: {link}");
    line("plain GET -> file", p);
    line("plain GET -> file + sha256", h);
    line("mesh download (verified)", o);
    println!(
        "{:<28} {:>8.3}",
        "ratio mesh / plain GET",
        p.as_secs_f64() / o.as_secs_f64()
    );
    Ok(())
}
