//! `mesh/ping/1`: an echo that lets a node outside the mesh measure the round trip to a member
//! before deciding to join (discovery's probe). Open to every node (the gate lets this ALPN
//! through like admission); it reveals nothing and echoes at most [`PING_BYTES`] bytes once
//! per connection.

use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr};

pub const ALPN: &[u8] = b"mesh/ping/1";
/// Size of a ping (and of its echo).
pub const PING_BYTES: usize = 16;
/// How long the acceptor waits for the ping.
const SERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The acceptor side, registered on the node's router.
#[derive(Debug, Clone)]
pub struct PingServer;

impl ProtocolHandler for PingServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let echo = async {
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            let mut buf = [0u8; PING_BYTES];
            recv.read_exact(&mut buf).await.ok()?;
            send.write_all(&buf).await.ok()?;
            send.finish().ok()
        };
        let _ = tokio::time::timeout(SERVE_TIMEOUT, echo).await;
        // The dialer closes once it has the echo; do not cut the last frame off.
        let _ = tokio::time::timeout(SERVE_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

/// Connects to `addr` and times one echo (the connection set-up is not counted).
pub async fn ping(endpoint: &Endpoint, addr: EndpointAddr) -> Result<Duration, String> {
    let conn = endpoint
        .connect(addr, ALPN)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let nonce: [u8; PING_BYTES] = rand::random();
    let start = Instant::now();
    send.write_all(&nonce).await.map_err(|e| e.to_string())?;
    let mut echo = [0u8; PING_BYTES];
    recv.read_exact(&mut echo)
        .await
        .map_err(|e| e.to_string())?;
    let rtt = start.elapsed();
    conn.close(0u8.into(), b"done");
    if echo == nonce {
        Ok(rtt)
    } else {
        Err("wrong echo".into())
    }
}
