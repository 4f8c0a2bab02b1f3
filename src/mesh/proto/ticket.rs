//! Tickets: how a node is invited into a mesh. Pure encode/decode, no IO.
//!
//! Text form: `mesh1` + lowercase base32 (no padding) of `postcard(TicketWire)`. A ticket holds
//! the format version, the mesh id, the mesh secret (private meshes only) and the addresses
//! (iroh `EndpointAddr`: id, relay URL, direct addresses) of one or more members to dial.

use iroh::EndpointAddr;
use serde::{Deserialize, Serialize};

/// Every ticket starts with this.
pub const PREFIX: &str = "mesh1";
/// Format version inside the encoded bytes.
pub const TICKET_VERSION: u8 = 1;
/// Longest ticket text accepted (a ticket with a few peers is a few hundred characters).
pub const MAX_TICKET_CHARS: usize = 8 * 1024;
/// Most peer addresses in one ticket.
pub const MAX_PEERS: usize = 16;

/// Identifies a mesh. Random, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshId(pub [u8; 16]);

impl MeshId {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Display for MeshId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

/// The secret of a private mesh: whoever holds it may join.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshSecret(pub [u8; 32]);

impl MeshSecret {
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl std::fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub mesh_id: MeshId,
    /// `None` for a public mesh.
    pub secret: Option<MeshSecret>,
    /// Members to dial; at least one.
    pub peers: Vec<EndpointAddr>,
}

/// What is serialised (kept separate so the version is checked before the rest is trusted).
#[derive(Serialize, Deserialize)]
struct TicketWire {
    version: u8,
    mesh_id: MeshId,
    secret: Option<MeshSecret>,
    peers: Vec<EndpointAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("the ticket is empty")]
    Empty,
    #[error("not a mesh ticket: it should start with `{PREFIX}`")]
    Prefix,
    #[error("the ticket is too long ({0} characters, at most {MAX_TICKET_CHARS})")]
    TooLong(usize),
    #[error("the ticket is damaged (bad base32); copy it again in full")]
    Encoding,
    #[error("the ticket is damaged (cannot decode its contents); copy it again in full")]
    Decode,
    #[error("ticket format version {0} is not supported (this mesh understands {TICKET_VERSION}); upgrade mesh")]
    Version(u8),
    #[error("the ticket names no peer to dial")]
    NoPeers,
    #[error("the ticket names {0} peers (at most {MAX_PEERS})")]
    TooManyPeers(usize),
}

impl Ticket {
    pub fn encode(&self) -> String {
        let wire = TicketWire {
            version: TICKET_VERSION,
            mesh_id: self.mesh_id,
            secret: self.secret,
            peers: self.peers.iter().take(MAX_PEERS).cloned().collect(),
        };
        // Serialising plain data into a Vec cannot fail.
        let bytes = postcard::to_stdvec(&wire).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase()
        )
    }

    pub fn decode(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TicketError::Empty);
        }
        if text.len() > MAX_TICKET_CHARS {
            return Err(TicketError::TooLong(text.len()));
        }
        let body = text
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .and_then(|_| text.get(PREFIX.len()..))
            .ok_or(TicketError::Prefix)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Encoding)?;
        match bytes.first() {
            None => return Err(TicketError::Decode),
            Some(&v) if v != TICKET_VERSION => return Err(TicketError::Version(v)),
            Some(_) => {}
        }
        let (wire, rest): (TicketWire, _) =
            postcard::take_from_bytes(&bytes).map_err(|_| TicketError::Decode)?;
        if !rest.is_empty() {
            return Err(TicketError::Decode);
        }
        if wire.peers.is_empty() {
            return Err(TicketError::NoPeers);
        }
        if wire.peers.len() > MAX_PEERS {
            return Err(TicketError::TooManyPeers(wire.peers.len()));
        }
        Ok(Self {
            mesh_id: wire.mesh_id,
            secret: wire.secret,
            peers: wire.peers,
        })
    }
}

impl std::str::FromStr for Ticket {
    type Err = TicketError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn sample(secret: Option<MeshSecret>) -> Ticket {
        let id = iroh::SecretKey::generate().public();
        let addr =
            EndpointAddr::new(id).with_ip_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 4242)));
        Ticket {
            mesh_id: MeshId::random(),
            secret,
            peers: vec![addr],
        }
    }

    #[test]
    fn round_trips_private_and_public_tickets() {
        for t in [sample(Some(MeshSecret::random())), sample(None)] {
            let text = t.encode();
            assert!(text.starts_with(PREFIX));
            assert_eq!(Ticket::decode(&text).unwrap(), t);
            assert_eq!(
                Ticket::decode(&format!("  {}\n", text.to_uppercase())).unwrap(),
                t
            );
        }
    }

    #[test]
    fn garbage_gives_a_typed_error() {
        assert_eq!(Ticket::decode(""), Err(TicketError::Empty));
        assert_eq!(Ticket::decode("hello"), Err(TicketError::Prefix));
        assert_eq!(Ticket::decode("mesh1!!!"), Err(TicketError::Encoding));
        assert_eq!(Ticket::decode("mesh1"), Err(TicketError::Decode));
        assert_eq!(
            Ticket::decode(&"mesh1a".repeat(2000)),
            Err(TicketError::TooLong(12000))
        );
        // A valid ticket with its tail cut off.
        let text = sample(None).encode();
        assert!(Ticket::decode(&text[..text.len() - 8]).is_err());
        // Another version.
        let bytes = [9u8, 1, 2, 3];
        let text = format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        );
        assert_eq!(Ticket::decode(&text), Err(TicketError::Version(9)));
    }

    #[test]
    fn a_ticket_without_peers_is_refused() {
        let mut t = sample(None);
        t.peers.clear();
        assert_eq!(Ticket::decode(&t.encode()), Err(TicketError::NoPeers));
    }
}
