//! Admission (ALPN `mesh/admit/1`): a node proves it holds the mesh secret before any other
//! protocol (gossip, HTTP tunnel) will talk to it. Mutual challenge-response with HMAC-SHA256;
//! the secret itself never crosses the wire. This file is the whole protocol, sans IO: a
//! [`Dialer`] and an [`Acceptor`] turn received frames into frames to send and a verdict.
//! `mesh::net::admit` only moves their bytes over an iroh stream, with a deadline.
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
use iroh::EndpointId;
use sha2::{Digest, Sha256};

use super::ticket::{MeshId, MeshSecret};

pub const ALPN: &[u8] = b"mesh/admit/1";
/// Version of this handshake.
pub const ADMIT_VERSION: u16 = 1;
/// A whole admission (connect + four frames) must finish within this.
pub const ADMIT_TIMEOUT: Duration = Duration::from_secs(5);

const LABEL_ACCEPTOR: &[u8] = b"mesh/admit/1 acceptor";
const LABEL_DIALER: &[u8] = b"mesh/admit/1 dialer";

/// Status bytes.
pub const OK: u8 = 0;
const WRONG_MESH: u8 = 1;
const WRONG_VERSION: u8 = 2;
pub const DENIED: u8 = 3;

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

/// Frame sizes, in the order they cross the wire.
pub const HELLO_LEN: usize = 50;
pub const CHALLENGE_LEN: usize = 65;
pub const PROOF_LEN: usize = 32;
pub const VERDICT_LEN: usize = 1;

/// The dialer's side: sends HELLO, answers the CHALLENGE with its PROOF, reads the VERDICT.
#[derive(Debug, Clone)]
pub struct Dialer {
    keys: MeshKeys,
    me: EndpointId,
    peer: EndpointId,
    nonce: [u8; 32],
}

impl Dialer {
    /// `nonce` must be fresh randomness (a parameter so tests are deterministic).
    pub fn new(keys: MeshKeys, me: EndpointId, peer: EndpointId, nonce: [u8; 32]) -> Self {
        Self {
            keys,
            me,
            peer,
            nonce,
        }
    }

    fn peer(&self) -> String {
        self.peer.fmt_short().to_string()
    }

    /// The first frame.
    pub fn hello(&self) -> [u8; HELLO_LEN] {
        let mut hello = [0u8; HELLO_LEN];
        hello[..2].copy_from_slice(&ADMIT_VERSION.to_be_bytes());
        hello[2..18].copy_from_slice(&self.keys.mesh_id.0);
        hello[18..].copy_from_slice(&self.nonce);
        hello
    }

    /// Checks the acceptor's status and proof; the answer is this side's PROOF frame.
    pub fn on_challenge(
        &self,
        challenge: &[u8; CHALLENGE_LEN],
    ) -> Result<[u8; PROOF_LEN], AdmitError> {
        let peer = self.peer();
        match challenge[0] {
            OK => {}
            WRONG_MESH => return Err(AdmitError::WrongMesh { peer }),
            WRONG_VERSION => return Err(AdmitError::WrongVersion { peer }),
            _ => return Err(AdmitError::Denied { peer }),
        }
        let (their_nonce, their_proof) = split_challenge(challenge);
        if !verify(
            &self.keys,
            true,
            &self.nonce,
            &self.peer,
            &self.me,
            &their_proof,
        ) {
            return Err(AdmitError::Impostor { peer });
        }
        Ok(proof(&self.keys, false, &their_nonce, &self.me, &self.peer))
    }

    /// The acceptor's last word.
    pub fn on_verdict(&self, verdict: &[u8; VERDICT_LEN]) -> Result<(), AdmitError> {
        match verdict[0] {
            OK => Ok(()),
            _ => Err(AdmitError::Denied { peer: self.peer() }),
        }
    }
}

fn split_challenge(c: &[u8; CHALLENGE_LEN]) -> ([u8; 32], [u8; 32]) {
    let mut nonce = [0u8; 32];
    let mut proof = [0u8; 32];
    nonce.copy_from_slice(&c[1..33]);
    proof.copy_from_slice(&c[33..]);
    (nonce, proof)
}

/// What the acceptor does after HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterHello {
    /// Send this CHALLENGE, then wait for the dialer's PROOF.
    Challenge([u8; CHALLENGE_LEN]),
    /// Send this refusal (a CHALLENGE frame with a non-zero status) and stop.
    Refuse([u8; CHALLENGE_LEN]),
}

/// The acceptor's side: reads HELLO, sends its CHALLENGE, checks the dialer's PROOF.
#[derive(Debug, Clone)]
pub struct Acceptor {
    keys: MeshKeys,
    me: EndpointId,
    peer: EndpointId,
    nonce: [u8; 32],
}

impl Acceptor {
    /// `peer` is the dialer's endpoint id as the QUIC handshake authenticated it.
    pub fn new(keys: MeshKeys, me: EndpointId, peer: EndpointId, nonce: [u8; 32]) -> Self {
        Self {
            keys,
            me,
            peer,
            nonce,
        }
    }

    pub fn on_hello(&self, hello: &[u8; HELLO_LEN]) -> AfterHello {
        let mut reply = [0u8; CHALLENGE_LEN];
        let version = u16::from_be_bytes([hello[0], hello[1]]);
        if version != ADMIT_VERSION {
            reply[0] = WRONG_VERSION;
            return AfterHello::Refuse(reply);
        }
        if hello[2..18] != self.keys.mesh_id.0 {
            reply[0] = WRONG_MESH;
            return AfterHello::Refuse(reply);
        }
        let mut their_nonce = [0u8; 32];
        their_nonce.copy_from_slice(&hello[18..]);
        reply[1..33].copy_from_slice(&self.nonce);
        reply[33..].copy_from_slice(&proof(&self.keys, true, &their_nonce, &self.me, &self.peer));
        AfterHello::Challenge(reply)
    }

    /// Whether the dialer proved membership, and the VERDICT frame that says so.
    pub fn on_proof(&self, their_proof: &[u8; PROOF_LEN]) -> (bool, [u8; VERDICT_LEN]) {
        let ok = verify(
            &self.keys,
            false,
            &self.nonce,
            &self.peer,
            &self.me,
            their_proof,
        );
        (ok, [if ok { OK } else { DENIED }])
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

    /// Runs a whole handshake through the two state machines, bytes only.
    fn handshake(dialer_keys: MeshKeys, acceptor_keys: MeshKeys) -> (Result<(), AdmitError>, bool) {
        let (d, a) = ids();
        let dialer = Dialer::new(dialer_keys, d, a, rand::random());
        let acceptor = Acceptor::new(acceptor_keys, a, d, rand::random());
        let challenge = match acceptor.on_hello(&dialer.hello()) {
            AfterHello::Challenge(c) => c,
            AfterHello::Refuse(r) => return (dialer.on_challenge(&r).map(|_| ()), false),
        };
        let mine = match dialer.on_challenge(&challenge) {
            Ok(p) => p,
            Err(e) => return (Err(e), false),
        };
        let (admitted, verdict) = acceptor.on_proof(&mine);
        (dialer.on_verdict(&verdict), admitted)
    }

    fn private() -> MeshKeys {
        MeshKeys {
            mesh_id: MeshId::random(),
            secret: Some(MeshSecret::random()),
        }
    }

    #[test]
    fn same_keys_admit_both_ways() {
        let keys = private();
        let (dialer, acceptor) = handshake(keys, keys);
        assert!(dialer.is_ok() && acceptor);
        let public = MeshKeys {
            secret: None,
            ..keys
        };
        let (dialer, acceptor) = handshake(public, public);
        assert!(dialer.is_ok() && acceptor);
    }

    #[test]
    fn a_wrong_secret_is_caught_by_the_dialer_before_it_proves_anything() {
        let keys = private();
        let other = MeshKeys {
            secret: Some(MeshSecret::random()),
            ..keys
        };
        let (dialer, acceptor) = handshake(keys, other);
        assert!(
            matches!(dialer, Err(AdmitError::Impostor { .. })),
            "{dialer:?}"
        );
        assert!(!acceptor);
    }

    #[test]
    fn another_mesh_or_version_is_refused_at_hello() {
        let (dialer, acceptor) = handshake(private(), private());
        assert!(
            matches!(dialer, Err(AdmitError::WrongMesh { .. })),
            "{dialer:?}"
        );
        assert!(!acceptor);
        let (d, a) = ids();
        let keys = private();
        let mut hello = Dialer::new(keys, d, a, [7; 32]).hello();
        hello[1] = 9;
        let AfterHello::Refuse(r) = Acceptor::new(keys, a, d, [8; 32]).on_hello(&hello) else {
            panic!("a wrong version must be refused");
        };
        let err = Dialer::new(keys, d, a, [7; 32])
            .on_challenge(&r)
            .unwrap_err();
        assert!(matches!(err, AdmitError::WrongVersion { .. }) && err.is_refusal());
    }

    #[test]
    fn a_dialer_without_the_secret_is_denied_by_the_acceptor() {
        let keys = private();
        let (d, a) = ids();
        let acceptor = Acceptor::new(keys, a, d, rand::random());
        let hello = Dialer::new(keys, d, a, rand::random()).hello();
        assert!(matches!(
            acceptor.on_hello(&hello),
            AfterHello::Challenge(_)
        ));
        // Garbage, or a proof made for another acceptor nonce, is refused with DENIED.
        let (ok, verdict) = acceptor.on_proof(&[0u8; PROOF_LEN]);
        assert!(!ok && verdict == [DENIED]);
        let forged = proof(&keys, false, &[1u8; 32], &d, &a);
        assert!(!acceptor.on_proof(&forged).0);
        let err = Dialer::new(keys, d, a, [0; 32])
            .on_verdict(&verdict)
            .unwrap_err();
        assert!(matches!(err, AdmitError::Denied { .. }));
    }

    #[test]
    fn a_replayed_challenge_does_not_fool_a_new_dialer() {
        let keys = private();
        let (d, a) = ids();
        let acceptor = Acceptor::new(keys, a, d, rand::random());
        let old = Dialer::new(keys, d, a, [1; 32]);
        let AfterHello::Challenge(c) = acceptor.on_hello(&old.hello()) else {
            panic!("same mesh");
        };
        // The acceptor proof answers the old nonce: a dialer with a fresh nonce rejects it.
        let fresh = Dialer::new(keys, d, a, [2; 32]);
        assert!(matches!(
            fresh.on_challenge(&c),
            Err(AdmitError::Impostor { .. })
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
        // Another mesh id gives another topic; the same keys give the same one in another run.
        let other_mesh = MeshKeys {
            mesh_id: MeshId::random(),
            ..keys
        };
        assert_ne!(keys.topic(), other_mesh.topic());
        let copy = MeshKeys {
            mesh_id: MeshId(keys.mesh_id.0),
            secret: keys.secret.map(|s| MeshSecret(s.0)),
        };
        assert_eq!(keys.topic(), copy.topic());
    }
}
