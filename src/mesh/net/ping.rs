//! `mesh/ping/1`: an echo that lets a node outside the mesh measure the round trip to a member
//! before deciding to join (discovery's probe). Open to every node (the gate lets this ALPN
//! through like admission); it reveals nothing and echoes [`PING_BYTES`] bytes on each of at
//! most [`PINGS`] streams per connection.

use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr};

pub const ALPN: &[u8] = b"mesh/ping/1";
/// Size of a ping (and of its echo).
pub const PING_BYTES: usize = 16;
/// Pings per connection: the first stream also pays for finishing the connection set-up, so
/// the probe keeps the fastest of these.
pub const PINGS: usize = 2;
/// How long the acceptor waits for the ping.
const SERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The acceptor side, registered on the node's router.
#[derive(Debug, Clone)]
pub struct PingServer;

impl ProtocolHandler for PingServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let echo = async {
            for _ in 0..PINGS {
                let (mut send, mut recv) = conn.accept_bi().await.ok()?;
                let mut buf = [0u8; PING_BYTES];
                recv.read_exact(&mut buf).await.ok()?;
                send.write_all(&buf).await.ok()?;
                send.finish().ok()?;
            }
            Some(())
        };
        let _ = tokio::time::timeout(SERVE_TIMEOUT, echo).await;
        // The dialer closes once it has the echo; do not cut the last frame off.
        let _ = tokio::time::timeout(SERVE_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

/// Connects to `addr` and times [`PINGS`] echoes, one after the other; returns the fastest
/// (the connection set-up is not counted).
pub async fn ping(endpoint: &Endpoint, addr: EndpointAddr) -> Result<Duration, String> {
    let conn = endpoint
        .connect(addr, ALPN)
        .await
        .map_err(|e| e.to_string())?;
    let mut best = Duration::MAX;
    for _ in 0..PINGS {
        best = best.min(echo_once(&conn).await?);
    }
    conn.close(0u8.into(), b"done");
    Ok(best)
}

async fn echo_once(conn: &iroh::endpoint::Connection) -> Result<Duration, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let nonce: [u8; PING_BYTES] = rand::random();
    let start = Instant::now();
    send.write_all(&nonce).await.map_err(|e| e.to_string())?;
    let mut echo = [0u8; PING_BYTES];
    recv.read_exact(&mut echo)
        .await
        .map_err(|e| e.to_string())?;
    let rtt = start.elapsed();
    if echo == nonce {
        Ok(rtt)
    } else {
        Err("wrong echo".into())
    }
}
