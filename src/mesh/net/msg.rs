//! `mesh/msg/1`: short text messages between members (`mesh send`, `mesh inbox`). Behind the
//! gate like the tunnel, so only admitted members reach it. One bi-stream per message: the
//! sender writes the UTF-8 text (at most [`MAX_MESSAGE_BYTES`]) and finishes; the receiver
//! answers one status byte ([`DELIVERED`], [`RATE_LIMITED`] or [`REFUSED`]). Received
//! messages go to the mesh (inbox and `message` event) through a bounded queue; this file only
//! moves bytes and applies the per-sender rate limit of `state::inbox`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};
use tokio::sync::mpsc;

use crate::mesh::state::inbox::SenderLimit;
pub use crate::mesh::state::inbox::MAX_MESSAGE_BYTES;

pub const ALPN: &[u8] = b"mesh/msg/1";
/// Status byte: the message is in the receiver's inbox.
pub const DELIVERED: u8 = 0;
/// Status byte: the sender is over its rate limit; the message was dropped.
pub const RATE_LIMITED: u8 = 1;
/// Status byte: too large or not UTF-8.
pub const REFUSED: u8 = 2;
/// Messages read from one connection before it is closed.
const STREAMS_PER_CONN: usize = 16;
/// Time to connect, and for each step of one message after.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(10);
/// Received messages waiting for the mesh to file them.
pub const RECEIVED_QUEUE: usize = 64;

/// The serving side, registered on the node's router.
#[derive(Clone)]
pub struct MsgServer {
    limit: Arc<Mutex<SenderLimit<EndpointId>>>,
    received: mpsc::Sender<(EndpointId, String)>,
}

impl std::fmt::Debug for MsgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MsgServer")
    }
}

impl MsgServer {
    /// The server and the queue its messages arrive on.
    pub fn new() -> (Self, mpsc::Receiver<(EndpointId, String)>) {
        let (tx, rx) = mpsc::channel(RECEIVED_QUEUE);
        let server = MsgServer {
            limit: Arc::default(),
            received: tx,
        };
        (server, rx)
    }

    fn file(&self, from: EndpointId, bytes: &[u8]) -> u8 {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return REFUSED;
        };
        if text.is_empty() {
            return REFUSED;
        }
        let allowed = self
            .limit
            .lock()
            .map(|mut l| l.allow(&from, Instant::now()))
            .unwrap_or(false);
        if !allowed || self.received.try_send((from, text.to_owned())).is_err() {
            return RATE_LIMITED;
        }
        DELIVERED
    }
}

impl ProtocolHandler for MsgServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        for _ in 0..STREAMS_PER_CONN {
            let Ok(Ok((mut send, mut recv))) =
                tokio::time::timeout(MSG_TIMEOUT, conn.accept_bi()).await
            else {
                break;
            };
            let status = match tokio::time::timeout(
                MSG_TIMEOUT,
                recv.read_to_end(MAX_MESSAGE_BYTES),
            )
            .await
            {
                Ok(Ok(bytes)) => self.file(from, &bytes),
                _ => REFUSED,
            };
            let _ = send.write_all(&[status]).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(MSG_TIMEOUT, send.stopped()).await;
        }
        conn.close(0u8.into(), b"done");
        Ok(())
    }
}

/// Sends `text` to `peer` (a member: the gate admits the connection first).
pub async fn send(endpoint: &Endpoint, peer: EndpointId, text: &str) -> Result<(), String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
            text.len()
        ));
    }
    let exchange = async {
        let (conn, mut recv) = super::ask(endpoint, peer, ALPN, text.as_bytes()).await?;
        let mut status = [0u8; 1];
        recv.read_exact(&mut status)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        conn.close(0u8.into(), b"sent");
        match status[0] {
            DELIVERED => Ok(()),
            RATE_LIMITED => Err("the peer refused it: too many messages from this node".into()),
            _ => Err("the peer refused it (too large or not text)".into()),
        }
    };
    tokio::time::timeout(2 * MSG_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", 2 * MSG_TIMEOUT.as_secs())))
}
