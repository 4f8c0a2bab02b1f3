//! What `bench_keepalive` and `bench_connect` share: loopback endpoints with the mesh's QUIC
//! settings, a peer that reads whatever is sent to it, and their positional arguments.

use mesh::mesh::net::endpoint::{self, IDLE_TIMEOUT, KEEP_ALIVE};
use mesh::mesh::NetConfig;

/// The `i`th command-line argument as a number, else `default`.
pub fn arg(i: usize, default: f64) -> f64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse::<f64>().ok())
        .unwrap_or(default)
}

/// An endpoint on 127.0.0.1 with the mesh's settings (relays off) that accepts `alpn`;
/// `mtu_discovery: false` turns QUIC's path MTU discovery off (for comparison).
pub async fn bind(alpn: &[u8], mtu_discovery: bool) -> iroh::Endpoint {
    let mut builder = endpoint::builder(&NetConfig::offline(), iroh::SecretKey::generate());
    if !mtu_discovery {
        let transport = iroh::endpoint::QuicTransportConfig::builder()
            .keep_alive_interval(KEEP_ALIVE)
            .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
            .mtu_discovery_config(None)
            .build();
        builder = builder.transport_config(transport);
    }
    builder
        .clear_ip_transports()
        .bind_addr((std::net::Ipv4Addr::LOCALHOST, 0))
        .expect("a loopback address")
        .alpns(vec![alpn.to_vec()])
        .bind()
        .await
        .expect("an endpoint")
}

/// Accepts every connection to `endpoint` and reads its unidirectional streams to the end.
pub fn drain(endpoint: &iroh::Endpoint) {
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                while let Ok(mut rx) = conn.accept_uni().await {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(Some(_)) = rx.read(&mut buf).await {}
                }
            });
        }
    });
}
