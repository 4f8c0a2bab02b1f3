//! `mesh/roster/2` (wire format: `proto::roster`): hands this node's signed announcements to a
//! member that asks, and asks a new gossip neighbour for its own. Behind the gate (members
//! only). A member gets at most one answer per [`ASK_GAP`]; every step has a deadline and the
//! answer a size limit, so a hostile member can neither make this node send the roster in a
//! loop nor hold its reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};

use crate::mesh::proto::roster::{self, Roster, MAX_ROSTER_BYTES, REQUEST};
use crate::mesh::state::peers::MAX_PEERS;

pub use crate::mesh::proto::roster::ALPN;
/// Connecting, asking and reading the whole answer must finish within this.
pub const ROSTER_TIMEOUT: Duration = Duration::from_secs(10);
/// A member is answered at most once per this long (it asks at most twice in its first
/// seconds, then once per new neighbour and `state::liveness::ROSTER_GAP`).
pub const ASK_GAP: Duration = Duration::from_secs(3);

/// The roster to hand out: this node's own announcement first, then its peers', and whether
/// its table is complete; `None`: refuse (the asker sees the connection close, and asks again
/// later).
pub type RosterFn = Box<dyn Fn() -> Option<Roster> + Send + Sync>;

/// The answering side, registered on the node's router before the peer table exists (the
/// mesh sets [`RosterServer::source`] once it does; until then it answers nothing).
#[derive(Clone, Default)]
pub struct RosterServer {
    pub source: Arc<OnceLock<RosterFn>>,
    asked: Arc<Mutex<HashMap<EndpointId, Instant>>>,
}

impl std::fmt::Debug for RosterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RosterServer")
    }
}

impl RosterServer {
    /// Whether `from` may be answered now (and notes that it was); bounded by [`MAX_PEERS`].
    fn allow(&self, from: EndpointId, now: Instant) -> bool {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if asked.len() >= MAX_PEERS {
            asked.retain(|_, at| now.saturating_duration_since(*at) < ASK_GAP);
        }
        if asked.len() >= MAX_PEERS {
            return false;
        }
        match asked.get(&from) {
            Some(at) if now.saturating_duration_since(*at) < ASK_GAP => false,
            _ => {
                asked.insert(from, now);
                true
            }
        }
    }
}

impl ProtocolHandler for RosterServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        let answer = async {
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            let mut req = [0u8; 1];
            recv.read_exact(&mut req).await.ok()?;
            if req[0] != REQUEST || !self.allow(from, Instant::now()) {
                return None;
            }
            let answer = self.source.get().and_then(|f| f())?;
            send.write_all(&roster::encode(answer.complete, &answer.entries))
                .await
                .ok()?;
            send.finish().ok()?;
            // Let the asker read to the end before the connection closes.
            send.stopped().await.ok()
        };
        let _ = tokio::time::timeout(ROSTER_TIMEOUT, answer).await;
        conn.close(0u8.into(), b"done");
        Ok(())
    }
}

/// Asks `peer` (a member) for its roster: the signed messages, not yet checked.
pub async fn fetch(endpoint: &Endpoint, peer: EndpointId) -> Result<Roster, String> {
    let exchange = async {
        let (conn, mut recv) = super::ask(endpoint, peer, ALPN, &[REQUEST]).await?;
        let bytes = recv
            .read_to_end(MAX_ROSTER_BYTES)
            .await
            .map_err(|e| format!("cannot read the roster: {e}"))?;
        conn.close(0u8.into(), b"thanks");
        roster::decode(&bytes).map_err(|e| e.to_string())
    };
    tokio::time::timeout(ROSTER_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no roster within {ROSTER_TIMEOUT:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    #[test]
    fn a_member_is_answered_once_per_gap_and_the_table_stays_bounded() {
        let s = RosterServer::default();
        let (a, now) = (SecretKey::generate().public(), Instant::now());
        assert!(s.allow(a, now));
        assert!(!s.allow(a, now + ASK_GAP / 2));
        assert!(s.allow(a, now + ASK_GAP));
        for _ in 0..MAX_PEERS * 2 {
            s.allow(SecretKey::generate().public(), now);
        }
        assert!(s.asked.lock().unwrap().len() <= MAX_PEERS);
        // Once the gap has passed, room is made again.
        assert!(s.allow(SecretKey::generate().public(), now + ASK_GAP * 3));
    }
}
