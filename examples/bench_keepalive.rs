//! What a QUIC connection costs with the mesh's endpoint settings (1 s keep-alive, 3 s idle
//! timeout): one endpoint holds N connections to N others on 127.0.0.1; after 5 s of settling,
//! the bytes and datagrams its socket counts over 20 s, per connection per second. Idle by
//! default; with a RATE it also writes RATE messages of SIZE bytes a second on each connection
//! (one stream each, as gossip does), so that the run gives QUIC's cost per message besides its
//! payload: its own packet's headers and the acknowledgement that comes back. The figures
//! docs/BENCHMARKS.md ("Membership at scale") adds to the simulated gossip bytes.
//!
//! `cargo run --release --example bench_keepalive -- [N] [RATE] [SIZE]` (defaults 4, 0, 243:
//! the mean gossip message of the 1,000-node simulation).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "support/quic.rs"]
mod quic;
use quic::{arg, bind, drain};

const ALPN: &[u8] = b"bench/idle";
const WINDOW: Duration = Duration::from_secs(20);

/// Bytes received, bytes sent and datagrams received, as the endpoint's socket counts them.
fn counters(e: &iroh::Endpoint) -> [u64; 3] {
    let s = &e.metrics().socket;
    [
        s.recv_data_ipv4.get(),
        s.send_ipv4.get(),
        s.recv_datagrams.get(),
    ]
}

#[tokio::main]
async fn main() {
    let n = arg(1, 4.0).max(1.0) as usize;
    let (rate, size) = (arg(2, 0.0).max(0.0), arg(3, 243.0).max(1.0) as usize);
    let a = bind(ALPN, true).await;
    let (mut others, mut conns) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let b = bind(ALPN, true).await;
        drain(&b);
        conns.push(a.connect(b.addr(), ALPN).await.expect("a connection"));
        others.push(b);
    }
    let sent = Arc::new(AtomicU64::new(0));
    if rate > 0.0 {
        for conn in &conns {
            let mut tx = conn.open_uni().await.expect("a stream");
            let sent = sent.clone();
            let message = vec![7u8; size];
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                loop {
                    tick.tick().await;
                    if tx.write_all(&message).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (before, sent_before) = (counters(&a), sent.load(Ordering::Relaxed));
    tokio::time::sleep(WINDOW).await;
    let (after, sent_after) = (counters(&a), sent.load(Ordering::Relaxed));
    let per = |i: usize| (after[i] - before[i]) as f64 / WINDOW.as_secs_f64() / n as f64;
    let messages = (sent_after - sent_before) as f64 / WINDOW.as_secs_f64() / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "connections": n,
            "recv_bytes_per_conn_s": per(0),
            "sent_bytes_per_conn_s": per(1),
            "recv_datagrams_per_conn_s": per(2),
            "messages_per_conn_s": messages,
            "message_bytes": size,
        })
    );
}
