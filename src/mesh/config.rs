//! How to start the mesh side of a node, and the mesh keys a configuration implies (pure).

use std::net::SocketAddr;

use iroh::tls::CaTlsConfig;
use iroh::{RelayUrl, SecretKey};

use super::error::MeshError;
use super::proto::admission::MeshKeys;
use super::proto::announce::MAX_NAME_CHARS;
use super::proto::ticket::{MeshId, MeshSecret, Ticket};
use super::state::peers::Timers;

/// How to start the mesh side of a node.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub secret_key: SecretKey,
    /// Tickets to join; none starts a new mesh.
    pub join: Vec<Ticket>,
    /// A new mesh without a secret (anyone with the ticket may join).
    pub public: bool,
    /// UDP address for iroh; `None` binds all interfaces on a random port.
    pub bind: Option<SocketAddr>,
    /// Relay server to use; `None` disables relays (direct addresses only).
    pub relay: Option<RelayUrl>,
    /// TLS roots for a private relay's certificate.
    pub relay_tls: Option<CaTlsConfig>,
    /// Use no direct (IP) transport at all: everything goes through the relay.
    pub relay_only: bool,
    /// Display name and region announced to peers.
    pub name: String,
    pub region: Option<String>,
    /// Memory this node has for models, announced to peers (the figure the catalog's fit check
    /// uses: `catalog::available_memory`).
    pub memory_bytes: u64,
    pub timers: Timers,
}

impl MeshConfig {
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            join: Vec::new(),
            public: false,
            bind: None,
            relay: None,
            relay_tls: None,
            relay_only: false,
            name: default_name(),
            region: None,
            memory_bytes: 0,
            timers: Timers::default(),
        }
    }

    /// The mesh this configuration joins (the tickets' mesh, which must be one), or a new one.
    pub fn keys(&self) -> Result<MeshKeys, MeshError> {
        let Some(first) = self.join.first() else {
            let secret = (!self.public).then(MeshSecret::random);
            return Ok(MeshKeys {
                mesh_id: MeshId::random(),
                secret,
            });
        };
        for t in &self.join[1..] {
            if t.mesh_id != first.mesh_id || t.secret != first.secret {
                return Err(MeshError::MixedTickets(first.mesh_id, t.mesh_id));
            }
        }
        Ok(MeshKeys {
            mesh_id: first.mesh_id,
            secret: first.secret,
        })
    }
}

/// The host name, cut to what an announcement may carry; `mesh` when there is none.
fn default_name() -> String {
    crate::util::sysinfo::host_name()
        .map(|h| h.chars().take(MAX_NAME_CHARS).collect())
        .unwrap_or_else(|| "mesh".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(mesh_id: MeshId, secret: Option<MeshSecret>) -> Ticket {
        Ticket {
            mesh_id,
            secret,
            peers: Vec::new(),
        }
    }

    #[test]
    fn keys_come_from_the_tickets_which_must_agree() {
        let mut cfg = MeshConfig::new(SecretKey::generate());
        let new = cfg.keys().unwrap();
        assert!(!new.is_public(), "a new mesh is private unless asked");
        cfg.public = true;
        assert!(cfg.keys().unwrap().is_public());

        let (id, secret) = (MeshId::random(), Some(MeshSecret::random()));
        cfg.join = vec![ticket(id, secret), ticket(id, secret)];
        assert_eq!(
            cfg.keys().unwrap(),
            MeshKeys {
                mesh_id: id,
                secret
            }
        );
        cfg.join.push(ticket(MeshId::random(), secret));
        assert!(matches!(cfg.keys(), Err(MeshError::MixedTickets(..))));
        cfg.join = vec![ticket(id, secret), ticket(id, Some(MeshSecret::random()))];
        assert!(matches!(cfg.keys(), Err(MeshError::MixedTickets(..))));
    }
}
