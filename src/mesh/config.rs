//! How to start the mesh side of a node, and what a configuration implies (pure): the mesh keys,
//! the relay list, and the address policies for what a node tells and what it dials.

use std::net::SocketAddr;

use iroh::tls::CaTlsConfig;
use iroh::{RelayMode, RelayUrl, SecretKey};

use super::error::MeshError;
use super::proto::addrs::{AddrPolicy, RelayPolicy};
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
    /// Relays, port mapping, and which addresses are told and dialled.
    pub net: NetConfig,
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
            net: NetConfig::default(),
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

/// Which relays a node uses (its home relay is the nearest of them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Relays {
    /// iroh's public relays, or the list in `$MESH_DEFAULT_IROH_RELAYS` (how tests point the
    /// default at a local relay through the same code path).
    #[default]
    Default,
    /// These relays only (`--iroh-relay`, a private relay).
    Custom(Vec<RelayUrl>),
    /// No relays: direct addresses only (`--no-iroh-relay`, `MESH_OFFLINE=1`).
    Disabled,
}

/// Overrides the default relay list (comma-separated URLs).
pub const DEFAULT_RELAYS_ENV: &str = "MESH_DEFAULT_IROH_RELAYS";

impl Relays {
    /// The relay URLs this resolves to (empty when disabled).
    pub fn urls(&self) -> Vec<RelayUrl> {
        match self {
            Self::Disabled => Vec::new(),
            Self::Custom(urls) => urls.clone(),
            Self::Default => match std::env::var(DEFAULT_RELAYS_ENV) {
                Ok(list) if !list.trim().is_empty() => list
                    .split(',')
                    .filter_map(|u| u.trim().parse().ok())
                    .collect(),
                _ => iroh::defaults::prod::default_relay_map().urls(),
            },
        }
    }

    /// The iroh relay mode: every relay also answers QUIC address discovery (its default port).
    pub fn mode(&self) -> RelayMode {
        match self.urls() {
            urls if urls.is_empty() => RelayMode::Disabled,
            urls => RelayMode::custom(urls),
        }
    }
}

/// How a node reaches others and is reached: relays, their TLS roots, port mapping, and which
/// addresses it tells and dials.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    pub relays: Relays,
    /// Extra TLS roots (a private relay's certificate); `None`: the built-in web roots.
    pub relay_tls: Option<CaTlsConfig>,
    /// Ask the home router for a port mapping (UPnP / NAT-PMP / PCP). Off by default: it sends
    /// packets to the LAN gateway and multicast groups.
    pub portmap: bool,
    /// Tell and dial loopback, link-local and private addresses in public meshes too.
    pub advertise_lan: bool,
    /// Dial relay URLs others name even when they are not in this node's relay list.
    pub allow_any_relay: bool,
    /// `--lan` (mDNS: advertise this node, find others on the LAN) or `--peers FILE`: nodes on
    /// this LAN are meant, so LAN addresses are dialled in public meshes too. Does not change
    /// what this node tells (that is `advertise_lan`).
    pub lan: bool,
    /// Advertise this node with mDNS (`--lan`).
    pub mdns: bool,
}

impl NetConfig {
    /// Direct addresses only, private ranges included: one machine or one LAN, no internet.
    pub fn offline() -> Self {
        Self {
            relays: Relays::Disabled,
            advertise_lan: true,
            ..Self::default()
        }
    }

    /// What this node tells of itself in a mesh (`public`: tickets and offers anyone may read).
    pub fn tell_policy(&self, public: bool) -> AddrPolicy {
        AddrPolicy {
            lan: !public || self.advertise_lan,
            relays: RelayPolicy::Any,
        }
    }

    /// What this node dials of what others tell it (tickets, offers, announcements).
    pub fn dial_policy(&self, public: bool) -> AddrPolicy {
        let relays = if self.allow_any_relay {
            RelayPolicy::Any
        } else {
            RelayPolicy::Known(self.relays.urls().into_iter().collect())
        };
        AddrPolicy {
            lan: !public || self.advertise_lan || self.lan,
            relays,
        }
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
