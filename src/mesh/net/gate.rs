//! The gate: iroh endpoint hooks that keep every protocol but admission closed to nodes that
//! have not proven membership (see `admission`). Protocols behind it (gossip, HTTP tunnel) need
//! no knowledge of secrets.
//!
//! - Incoming: after the TLS handshake, a connection on any ALPN other than `mesh/admit/1`,
//!   `mesh/ping/1` and `mesh/offer/1` is closed with code 403 unless its endpoint id is admitted.
//! - Outgoing: before connecting to a node that is not admitted yet, run the admission handshake
//!   with it (through the admitter task, which owns the endpoint: hooks must not hold one).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use iroh::endpoint::{
    AfterHandshakeOutcome, BeforeConnectOutcome, Connection, EndpointHooks, Side,
};
use iroh::{EndpointAddr, EndpointId};
use tokio::sync::{mpsc, oneshot};

use super::{offer, ping};
use crate::mesh::proto::admission;

/// Close code for connections from nodes that are not admitted.
pub const NOT_ADMITTED: u32 = 403;

/// The set of nodes that proved membership to us (and to which we proved ours).
#[derive(Debug, Clone, Default)]
pub struct Gate {
    admitted: Arc<Mutex<HashSet<EndpointId>>>,
}

impl Gate {
    pub fn admit(&self, id: EndpointId) {
        if let Ok(mut set) = self.admitted.lock() {
            set.insert(id);
        }
    }

    /// Forgets a node (it left or expired): it must prove membership again to come back.
    pub fn revoke(&self, id: &EndpointId) {
        if let Ok(mut set) = self.admitted.lock() {
            set.remove(id);
        }
    }

    pub fn is_admitted(&self, id: &EndpointId) -> bool {
        self.admitted.lock().is_ok_and(|set| set.contains(id))
    }
}

/// Protocols open to nodes outside the mesh: admission itself, discovery's ping, the offer.
fn is_open(alpn: &[u8]) -> bool {
    alpn == admission::ALPN || alpn == ping::ALPN || alpn == offer::ALPN
}

/// A node to admit before connecting to it, and where to say whether that worked.
pub type AdmitRequest = (EndpointAddr, oneshot::Sender<bool>);

/// The hooks to install with `Endpoint::builder(..).hooks(..)`.
#[derive(Debug)]
pub struct GateHooks {
    gate: Gate,
    admitter: mpsc::Sender<AdmitRequest>,
}

/// Creates the hooks and the receiving end that `admit::run_admitter` serves once the endpoint
/// exists.
pub fn hooks(gate: Gate) -> (GateHooks, mpsc::Receiver<AdmitRequest>) {
    let (tx, rx) = mpsc::channel(64);
    (GateHooks { gate, admitter: tx }, rx)
}

impl EndpointHooks for GateHooks {
    async fn before_connect<'a>(
        &'a self,
        remote: &'a EndpointAddr,
        alpn: &'a [u8],
    ) -> BeforeConnectOutcome {
        if is_open(alpn) || self.gate.is_admitted(&remote.id) {
            return BeforeConnectOutcome::Accept;
        }
        let (tx, rx) = oneshot::channel();
        if self.admitter.send((remote.clone(), tx)).await.is_err() {
            return BeforeConnectOutcome::Reject;
        }
        match rx.await {
            Ok(true) => BeforeConnectOutcome::Accept,
            _ => BeforeConnectOutcome::Reject,
        }
    }

    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        if conn.side() == Side::Client
            || is_open(conn.alpn())
            || self.gate.is_admitted(&conn.remote_id())
        {
            AfterHandshakeOutcome::Accept
        } else {
            tracing::debug!(peer = %conn.remote_id().fmt_short(), "closing connection from a node that is not admitted");
            AfterHandshakeOutcome::Reject {
                error_code: NOT_ADMITTED.into(),
                reason: b"not admitted".to_vec(),
            }
        }
    }
}
