//! The IO sides of admission (`mesh/admit/1`): move the fixed-size frames of
//! [`proto::admission`](crate::mesh::proto::admission)'s [`Dialer`] and [`Acceptor`] over one
//! bidirectional iroh stream, within [`ADMIT_TIMEOUT`]. All decisions are made there.

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr, EndpointId};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gate::{AdmitRequest, Gate};
use crate::mesh::proto::admission::{
    Acceptor, AdmitError, AfterHello, Dialer, MeshKeys, ADMIT_TIMEOUT, ALPN, CHALLENGE_LEN, DENIED,
    HELLO_LEN, PROOF_LEN, VERDICT_LEN,
};
use crate::mesh::proto::ticket::Ticket;

/// Dials `addr` on the admission ALPN and runs the dialer side. On success both nodes have
/// verified each other and `gate` lets the peer in.
pub async fn dial(
    endpoint: &Endpoint,
    addr: EndpointAddr,
    keys: &MeshKeys,
    gate: &Gate,
) -> Result<(), AdmitError> {
    let peer_id = addr.id;
    let peer = peer_id.fmt_short().to_string();
    let dialer = Dialer::new(*keys, endpoint.id(), peer_id, rand::random());
    let run = async {
        let conn = endpoint
            .connect(addr, ALPN)
            .await
            .map_err(|e| AdmitError::Unreachable {
                peer: peer.clone(),
                reason: e.to_string(),
            })?;
        let broke = |e: &dyn std::fmt::Display| AdmitError::Protocol {
            peer: peer.clone(),
            reason: e.to_string(),
        };
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broke(&e))?;
        send.write_all(&dialer.hello())
            .await
            .map_err(|e| broke(&e))?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        recv.read_exact(&mut challenge)
            .await
            .map_err(|e| broke(&e))?;
        let mine = match dialer.on_challenge(&challenge) {
            Ok(p) => p,
            Err(e) => {
                conn.close(DENIED.into(), b"refused");
                return Err(e);
            }
        };
        send.write_all(&mine).await.map_err(|e| broke(&e))?;
        let mut verdict = [0u8; VERDICT_LEN];
        recv.read_exact(&mut verdict).await.map_err(|e| broke(&e))?;
        let _ = send.finish();
        conn.close(0u8.into(), b"done");
        dialer.on_verdict(&verdict)?;
        gate.admit(peer_id);
        Ok(())
    };
    tokio::time::timeout(ADMIT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| Err(AdmitError::Timeout { peer: peer.clone() }))
}

/// The acceptor side, registered on iroh's router for [`ALPN`].
#[derive(Debug, Clone)]
pub struct Admission {
    pub keys: MeshKeys,
    pub gate: Gate,
    /// This node's id (the verifier in proofs).
    pub me: EndpointId,
}

impl Admission {
    async fn run(&self, conn: &Connection) -> Result<bool, String> {
        let acceptor = Acceptor::new(self.keys, self.me, conn.remote_id(), rand::random());
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut hello = [0u8; HELLO_LEN];
        recv.read_exact(&mut hello)
            .await
            .map_err(|e| e.to_string())?;
        let challenge = match acceptor.on_hello(&hello) {
            AfterHello::Challenge(c) => c,
            AfterHello::Refuse(refusal) => {
                send.write_all(&refusal).await.map_err(|e| e.to_string())?;
                let _ = send.finish();
                return Ok(false);
            }
        };
        send.write_all(&challenge)
            .await
            .map_err(|e| e.to_string())?;
        let mut their_proof = [0u8; PROOF_LEN];
        recv.read_exact(&mut their_proof)
            .await
            .map_err(|e| e.to_string())?;
        let (ok, verdict) = acceptor.on_proof(&their_proof);
        if ok {
            self.gate.admit(conn.remote_id());
        }
        send.write_all(&verdict).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok(ok)
    }
}

impl ProtocolHandler for Admission {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        match tokio::time::timeout(ADMIT_TIMEOUT, self.run(&conn)).await {
            Ok(Ok(true)) => tracing::debug!(peer = %peer.fmt_short(), "admitted"),
            Ok(Ok(false)) => {
                tracing::warn!(peer = %peer.fmt_short(), "refused admission: wrong mesh or secret")
            }
            Ok(Err(e)) => tracing::debug!(peer = %peer.fmt_short(), "admission broke off: {e}"),
            Err(_) => tracing::debug!(peer = %peer.fmt_short(), "admission timed out"),
        }
        // Wait for the dialer to close, so the last frame is not cut off by our close.
        let _ = tokio::time::timeout(ADMIT_TIMEOUT, conn.closed()).await;
        Ok(())
    }
}

/// Serves admission requests from the outgoing hook until `cancel`.
pub async fn run_admitter(
    endpoint: Endpoint,
    keys: MeshKeys,
    gate: Gate,
    mut requests: mpsc::Receiver<AdmitRequest>,
    cancel: CancellationToken,
) {
    loop {
        let (addr, reply) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let (endpoint, gate) = (endpoint.clone(), gate.clone());
        tokio::spawn(async move {
            let peer = addr.id.fmt_short();
            let ok = match dial(&endpoint, addr, &keys, &gate).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%peer, "{e}");
                    false
                }
            };
            let _ = reply.send(ok);
        });
    }
}

/// Proves membership to every ticket peer (concurrently). Refusal by all reachable peers is an
/// error; peers that cannot be reached are logged and left to gossip to retry.
pub async fn admit_to_tickets(
    endpoint: &Endpoint,
    tickets: &[Ticket],
    keys: &MeshKeys,
    gate: &Gate,
) -> Result<Vec<EndpointId>, crate::mesh::MeshError> {
    let addrs: Vec<_> = tickets
        .iter()
        .flat_map(|t| t.peers.iter().cloned())
        .filter(|a| a.id != endpoint.id())
        .collect();
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let results =
        futures::future::join_all(addrs.iter().map(|a| dial(endpoint, a.clone(), keys, gate)))
            .await;
    let mut ids = Vec::new();
    let mut refusal = None;
    for (addr, result) in addrs.iter().zip(results) {
        match result {
            Ok(()) => ids.push(addr.id),
            Err(e) if e.is_refusal() => refusal = Some(e),
            Err(e) => {
                tracing::warn!("{e}; will keep trying through gossip");
                ids.push(addr.id);
            }
        }
    }
    match refusal {
        Some(e) if ids.is_empty() => Err(crate::mesh::MeshError::Refused(e)),
        _ => Ok(ids),
    }
}
