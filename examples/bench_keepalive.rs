//! What an idle QUIC connection costs with the mesh's endpoint settings (1 s keep-alive, 3 s
//! idle timeout): one endpoint holds N idle connections to N others on 127.0.0.1; after 5 s of
//! settling, the bytes and datagrams its socket counts over 20 s, per connection per second.
//! The figure docs/BENCHMARKS.md ("Membership at scale") adds to the simulated gossip bytes.
//!
//! `cargo run --release --example bench_keepalive -- [N]` (default 4).

use std::time::Duration;

use mesh::mesh::net::endpoint;
use mesh::mesh::NetConfig;

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

async fn bind() -> iroh::Endpoint {
    endpoint::builder(&NetConfig::offline(), iroh::SecretKey::generate())
        .clear_ip_transports()
        .bind_addr((std::net::Ipv4Addr::LOCALHOST, 0))
        .expect("a loopback address")
        .alpns(vec![ALPN.to_vec()])
        .bind()
        .await
        .expect("an endpoint")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4)
        .max(1);
    let a = bind().await;
    let (mut others, mut conns) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let b = bind().await;
        let accepting = b.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                if let Ok(conn) = incoming.await {
                    tokio::spawn(async move { conn.closed().await });
                }
            }
        });
        conns.push(a.connect(b.addr(), ALPN).await.expect("a connection"));
        others.push(b);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = counters(&a);
    tokio::time::sleep(WINDOW).await;
    let after = counters(&a);
    let per = |i: usize| (after[i] - before[i]) as f64 / WINDOW.as_secs_f64() / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "connections": n,
            "recv_bytes_per_conn_s": per(0),
            "sent_bytes_per_conn_s": per(1),
            "recv_datagrams_per_conn_s": per(2),
        })
    );
}
