//! What one short-lived QUIC connection costs with the mesh's endpoint settings: the bytes and
//! datagrams both ends' sockets count for a connection opened on 127.0.0.1, carrying one
//! 243 B message (a gossip frame), held `HOLD` seconds (keep-alives) and closed. HyParView's
//! shuffle replies come over such connections, closed as strays 10 s after they open
//! (docs/BENCHMARKS.md, "Membership at scale"). Run twice: with the mesh's settings, and with
//! QUIC's path MTU discovery off, to show its share (the probes go up to 1,452 B on any path
//! that carries them, loopback included).
//!
//! `cargo run --release --example bench_connect -- [CONNS] [HOLD_SECS]` (defaults 5, 10;
//! `just bench-connect`). Prints one JSON line per run.

use std::time::Duration;

#[path = "support/quic.rs"]
mod quic;
use quic::{arg, bind, drain};

const ALPN: &[u8] = b"bench/connect";
/// Time for the close to go out and for late packets to be counted.
const DRAIN: Duration = Duration::from_secs(2);

/// Bytes received and datagrams received, as the endpoint's socket counts them.
fn counters(e: &iroh::Endpoint) -> [u64; 2] {
    let s = &e.metrics().socket;
    [s.recv_data_ipv4.get(), s.recv_datagrams.get()]
}

/// Both ends' received bytes and datagrams per connection, over `conns` connections in turn.
async fn run(conns: u32, hold: Duration, mtu_discovery: bool) -> serde_json::Value {
    let (a, b) = (
        bind(ALPN, mtu_discovery).await,
        bind(ALPN, mtu_discovery).await,
    );
    drain(&b);
    let before = [counters(&a), counters(&b)];
    for _ in 0..conns {
        let conn = a.connect(b.addr(), ALPN).await.expect("a connection");
        let mut tx = conn.open_uni().await.expect("a stream");
        tx.write_all(&[7u8; 243]).await.expect("a message");
        tokio::time::sleep(hold).await;
        conn.close(0u32.into(), b"stray");
        tokio::time::sleep(DRAIN).await;
    }
    let after = [counters(&a), counters(&b)];
    let per = |i: usize| {
        let total: u64 = (0..2).map(|e| after[e][i] - before[e][i]).sum();
        total as f64 / conns as f64
    };
    serde_json::json!({
        "mtu_discovery": mtu_discovery,
        "connections": conns,
        "hold_secs": hold.as_secs_f64(),
        "recv_bytes_both_ends_per_conn": per(0),
        "recv_datagrams_both_ends_per_conn": per(1),
    })
}

#[tokio::main]
async fn main() {
    let conns = arg(1, 5.0).max(1.0) as u32;
    let hold = Duration::from_secs_f64(arg(2, 10.0).max(0.0));
    for mtu_discovery in [true, false] {
        println!("{}", run(conns, hold, mtu_discovery).await);
    }
}
