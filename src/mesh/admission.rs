//! Admission (ALPN `mesh/admit/1`): a node proves it holds the mesh secret before any other
//! protocol (gossip, HTTP tunnel) will talk to it. Mutual challenge-response with HMAC-SHA256;
//! the secret itself never crosses the wire. The proof functions are pure; the two small async
//! functions at the bottom move the fixed-size frames.
//!
//! ```text
//! dialer → acceptor  HELLO     version u16 BE | mesh id (16) | dialer nonce (32)        50 bytes
//! acceptor → dialer  CHALLENGE status u8 | acceptor nonce (32) | acceptor proof (32)    65 bytes
//! dialer → acceptor  PROOF     dialer proof (32)                                        32 bytes
//! acceptor → dialer  VERDICT   status u8 (0 = admitted)                                  1 byte
//! proof = HMAC-SHA256(key, label | mesh id | nonce of the other side | prover id | verifier id)
//! ```
//! `key` is the mesh secret; a public mesh uses SHA-256("mesh/public/1" | mesh id), so its
//! handshake proves only that both sides are in the same mesh. Frames have fixed sizes, so no
//! length field can be abused. A refused dialer learns nothing but the refusal.

use std::time::Duration;

use hmac::{Hmac, Mac};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr, EndpointId};
use sha2::{Digest, Sha256};

use super::gate::Gate;
use super::ticket::{MeshId, MeshSecret};

pub const ALPN: &[u8] = b"mesh/admit/1";
/// Version of this handshake.
pub const ADMIT_VERSION: u16 = 1;
/// A whole admission (connect + four frames) must finish within this.
pub const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

const LABEL_ACCEPTOR: &[u8] = b"mesh/admit/1 acceptor";
const LABEL_DIALER: &[u8] = b"mesh/admit/1 dialer";

/// Status bytes.
const OK: u8 = 0;
const WRONG_MESH: u8 = 1;
const WRONG_VERSION: u8 = 2;
const DENIED: u8 = 3;

/// What a node needs to prove (and check) membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshKeys {
    pub mesh_id: MeshId,
    pub secret: Option<MeshSecret>,
}

impl MeshKeys {
    pub fn is_public(&self) -> bool {
        self.secret.is_none()
    }

    fn hmac_key(&self) -> [u8; 32] {
        match self.secret {
            Some(s) => s.0,
            None => Sha256::new()
                .chain_update(b"mesh/public/1")
                .chain_update(self.mesh_id.0)
                .finalize()
                .into(),
        }
    }

    /// The gossip topic: only members can compute it.
    pub fn topic(&self) -> [u8; 32] {
        Sha256::new()
            .chain_update(b"mesh/topic/1")
            .chain_update(self.mesh_id.0)
            .chain_update(self.hmac_key())
            .finalize()
            .into()
    }
}

fn mac(
    keys: &MeshKeys,
    label: &[u8],
    nonce: &[u8; 32],
    prover: &EndpointId,
    verifier: &EndpointId,
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&keys.hmac_key()).expect("any key length");
    m.update(label);
    m.update(&keys.mesh_id.0);
    m.update(nonce);
    m.update(prover.as_bytes());
    m.update(verifier.as_bytes());
    m
}

/// The proof `prover` sends to `verifier`, answering `nonce` (the verifier's).
pub fn proof(
    keys: &MeshKeys,
    acceptor_side: bool,
    nonce: &[u8; 32],
    prover: &EndpointId,
    verifier: &EndpointId,
) -> [u8; 32] {
    let label = if acceptor_side {
        LABEL_ACCEPTOR
    } else {
        LABEL_DIALER
    };
    mac(keys, label, nonce, prover, verifier)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof in constant time.
pub fn verify(
    keys: &MeshKeys,
    acceptor_side: bool,
    nonce: &[u8; 32],
    prover: &EndpointId,
    verifier: &EndpointId,
    proof: &[u8; 32],
) -> bool {
    let label = if acceptor_side {
        LABEL_ACCEPTOR
    } else {
        LABEL_DIALER
    };
    mac(keys, label, nonce, prover, verifier)
        .verify_slice(proof)
        .is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("cannot reach peer {peer}: {reason}")]
    Unreachable { peer: String, reason: String },
    #[error(
        "peer {peer} refused admission: the mesh secret does not match (ask for a fresh ticket)"
    )]
    Denied { peer: String },
    #[error("peer {peer} is not in this mesh (the ticket names another mesh)")]
    WrongMesh { peer: String },
    #[error("peer {peer} speaks another admission version; upgrade mesh")]
    WrongVersion { peer: String },
    #[error("the mesh secret does not match peer {peer}'s: the ticket's secret is wrong (ask for a fresh ticket) or the peer is no member")]
    Impostor { peer: String },
    #[error("admission with {peer} timed out after {ADMIT_TIMEOUT:?}")]
    Timeout { peer: String },
    #[error("admission with {peer} broke off: {reason}")]
    Protocol { peer: String, reason: String },
}

impl AdmitError {
    /// True when the peer answered and said no (retrying with the same ticket will not help).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Denied { .. }
                | Self::WrongMesh { .. }
                | Self::WrongVersion { .. }
                | Self::Impostor { .. }
        )
    }
}

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
        let my_nonce: [u8; 32] = rand::random();
        let mut hello = [0u8; 50];
        hello[..2].copy_from_slice(&ADMIT_VERSION.to_be_bytes());
        hello[2..18].copy_from_slice(&keys.mesh_id.0);
        hello[18..].copy_from_slice(&my_nonce);
        send.write_all(&hello).await.map_err(|e| broke(&e))?;
        let mut challenge = [0u8; 65];
        recv.read_exact(&mut challenge)
            .await
            .map_err(|e| broke(&e))?;
        match challenge[0] {
            OK => {}
            WRONG_MESH => return Err(AdmitError::WrongMesh { peer: peer.clone() }),
            WRONG_VERSION => return Err(AdmitError::WrongVersion { peer: peer.clone() }),
            _ => return Err(AdmitError::Denied { peer: peer.clone() }),
        }
        let their_nonce: [u8; 32] = challenge[1..33].try_into().unwrap_or_default();
        let their_proof: [u8; 32] = challenge[33..].try_into().unwrap_or_default();
        let me = endpoint.id();
        if !verify(keys, true, &my_nonce, &peer_id, &me, &their_proof) {
            conn.close(DENIED.into(), b"impostor");
            return Err(AdmitError::Impostor { peer: peer.clone() });
        }
        let mine = proof(keys, false, &their_nonce, &me, &peer_id);
        send.write_all(&mine).await.map_err(|e| broke(&e))?;
        let mut verdict = [0u8; 1];
        recv.read_exact(&mut verdict).await.map_err(|e| broke(&e))?;
        let _ = send.finish();
        conn.close(0u8.into(), b"done");
        if verdict[0] != OK {
            return Err(AdmitError::Denied { peer: peer.clone() });
        }
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
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let mut hello = [0u8; 50];
        recv.read_exact(&mut hello)
            .await
            .map_err(|e| e.to_string())?;
        let version = u16::from_be_bytes([hello[0], hello[1]]);
        let mut reply = [0u8; 65];
        if version != ADMIT_VERSION {
            reply[0] = WRONG_VERSION;
        } else if hello[2..18] != self.keys.mesh_id.0 {
            reply[0] = WRONG_MESH;
        }
        if reply[0] != OK {
            send.write_all(&reply).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            return Ok(false);
        }
        let their_nonce: [u8; 32] = hello[18..].try_into().unwrap_or_default();
        let my_nonce: [u8; 32] = rand::random();
        let me = self.me;
        let them = conn.remote_id();
        reply[1..33].copy_from_slice(&my_nonce);
        reply[33..].copy_from_slice(&proof(&self.keys, true, &their_nonce, &me, &them));
        send.write_all(&reply).await.map_err(|e| e.to_string())?;
        let mut their_proof = [0u8; 32];
        recv.read_exact(&mut their_proof)
            .await
            .map_err(|e| e.to_string())?;
        let ok = verify(&self.keys, false, &my_nonce, &them, &me, &their_proof);
        if ok {
            self.gate.admit(them);
        }
        send.write_all(&[if ok { OK } else { DENIED }])
            .await
            .map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (EndpointId, EndpointId) {
        (
            iroh::SecretKey::generate().public(),
            iroh::SecretKey::generate().public(),
        )
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_nonce_and_ids() {
        let keys = MeshKeys {
            mesh_id: MeshId::random(),
            secret: Some(MeshSecret::random()),
        };
        let (a, b) = ids();
        let nonce = rand::random();
        let p = proof(&keys, false, &nonce, &a, &b);
        assert!(verify(&keys, false, &nonce, &a, &b, &p));
        // Another secret, another nonce, swapped ids, or the other role: all refused.
        let other = MeshKeys {
            secret: Some(MeshSecret::random()),
            ..keys
        };
        assert!(!verify(&other, false, &nonce, &a, &b, &p));
        assert!(!verify(&keys, false, &rand::random(), &a, &b, &p));
        assert!(!verify(&keys, false, &nonce, &b, &a, &p));
        assert!(!verify(&keys, true, &nonce, &a, &b, &p));
        // Without the secret (a "public" view of a private mesh) the proof is wrong too.
        let public = MeshKeys {
            secret: None,
            ..keys
        };
        assert!(!verify(
            &keys,
            false,
            &nonce,
            &a,
            &b,
            &proof(&public, false, &nonce, &a, &b)
        ));
    }

    #[test]
    fn the_topic_depends_on_the_secret() {
        let keys = MeshKeys {
            mesh_id: MeshId::random(),
            secret: Some(MeshSecret::random()),
        };
        let public = MeshKeys {
            secret: None,
            ..keys
        };
        assert_ne!(keys.topic(), public.topic());
        assert_eq!(keys.topic(), keys.topic());
    }
}
