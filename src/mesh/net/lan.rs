//! `--lan`: finding mesh nodes on the same LAN with mDNS, no relay or internet needed. A node
//! with `--lan` advertises its endpoint id and direct addresses under the service
//! [`SERVICE_NAME`] (`_mesh-llm._udp.local`, so only mesh nodes answer, not every iroh app) and
//! resolves other members' addresses the same way; [`find`] listens for a bounded time and lists
//! the nodes that answered. Off unless asked: mDNS sends multicast to the LAN.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use iroh::address_lookup::{AddressLookupBuilderError, EndpointInfo};
use iroh::{EndpointAddr, SecretKey, TransportAddr};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup, MdnsAddressLookupBuilder};

/// mDNS service name of mesh nodes.
pub const SERVICE_NAME: &str = "mesh-llm";
/// Most nodes one [`find`] lists (a LAN full of answers is cut here).
pub const MAX_LAN_NODES: usize = 64;

/// The mDNS address lookup for a node's endpoint: it advertises the node (`advertise`) and
/// resolves other mesh nodes' addresses.
pub fn lookup(advertise: bool) -> MdnsAddressLookupBuilder {
    MdnsAddressLookup::builder()
        .service_name(SERVICE_NAME)
        .advertise(advertise)
}

/// The address an mDNS answer gives for its endpoint, keeping only what another host could reach.
pub fn lan_addr(info: &EndpointInfo) -> EndpointAddr {
    let ips = info.data.ip_addrs().copied().filter(reachable);
    EndpointAddr::from_parts(info.endpoint_id, ips.map(TransportAddr::Ip))
}

/// Whether another host could reach `addr`: not its loopback, not unspecified, not port 0.
fn reachable(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback() && !addr.ip().is_unspecified() && addr.port() != 0
}

/// Listens for `wait` for mesh nodes on the LAN (advertising nothing) and returns each with the
/// direct addresses it announced (relay URLs and loopback left out: the LAN is reached
/// directly). At most
/// [`MAX_LAN_NODES`]; nodes without an address are left out.
pub async fn find(wait: Duration) -> Result<Vec<EndpointAddr>, AddressLookupBuilderError> {
    let mdns = lookup(false).build(SecretKey::generate().public())?;
    let mut events = mdns.subscribe().await;
    let mut found: Vec<EndpointAddr> = Vec::new();
    let listen = async {
        while let Some(event) = events.next().await {
            let DiscoveryEvent::Discovered { endpoint_info, .. } = event else {
                continue;
            };
            let addr = lan_addr(&endpoint_info);
            if addr.is_empty() {
                continue;
            }
            match found.iter_mut().find(|a| a.id == addr.id) {
                Some(known) => *known = addr,
                None => found.push(addr),
            }
            if found.len() >= MAX_LAN_NODES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(wait, listen).await;
    Ok(found)
}
