//! Which addresses of a node others are told of, and which addresses read from tickets, offers
//! and announcements a node may dial (pure). The same rules on both sides: a node leaves out of
//! public tickets what a reader would refuse anyway.
//!
//! - Never: unspecified, multicast, broadcast, port 0.
//! - Only where LAN addresses are allowed (private meshes, `--advertise-lan`): loopback,
//!   link-local, private (RFC 1918, unique-local IPv6), shared (100.64/10) and benchmarking
//!   (198.18/15) ranges. Documentation ranges count as public: the namespace tests use
//!   198.51.100/24 as their "internet".
//! - At most [`MAX_IP_ADDRS`] IP addresses (public ones first) and [`MAX_RELAY_URLS`] relay URLs
//!   per node; a reader keeps only relay URLs its [`RelayPolicy`] accepts.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use iroh::{EndpointAddr, RelayUrl, TransportAddr};

/// Most IP addresses kept per node.
pub const MAX_IP_ADDRS: usize = 4;
/// Most relay URLs kept per node (a node has one home relay).
pub const MAX_RELAY_URLS: usize = 2;

/// Which relay URLs a reader accepts from others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayPolicy {
    /// Any relay (`--allow-any-iroh-relay`, or a private mesh whose ticket came from a friend).
    Any,
    /// Only the relays in this node's own list (none when relays are off).
    Known(BTreeSet<RelayUrl>),
}

impl RelayPolicy {
    pub fn accepts(&self, url: &RelayUrl) -> bool {
        match self {
            Self::Any => true,
            Self::Known(known) => known.contains(url),
        }
    }
}

/// What a node tells of itself, and what it reads of others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPolicy {
    /// Keep loopback, link-local and private addresses.
    pub lan: bool,
    pub relays: RelayPolicy,
}

impl AddrPolicy {
    /// Anything goes, within the per-node caps (private meshes on one machine, tests).
    pub fn permissive() -> Self {
        Self {
            lan: true,
            relays: RelayPolicy::Any,
        }
    }

    /// `addr` with only the addresses this policy allows, public ones first, capped.
    pub fn tidy(&self, addr: &EndpointAddr) -> EndpointAddr {
        let mut ips: Vec<SocketAddr> = addr
            .ip_addrs()
            .copied()
            .filter(|a| dialable(a, self.lan))
            .collect();
        // Public before private, IPv4 before IPv6, then a stable order.
        ips.sort_by_key(|a| (!is_public(a.ip()), a.is_ipv6(), *a));
        ips.dedup();
        let relays = addr
            .relay_urls()
            .filter(|u| self.relays.accepts(u))
            .take(MAX_RELAY_URLS)
            .cloned()
            .map(TransportAddr::Relay);
        let ips = ips.into_iter().take(MAX_IP_ADDRS).map(TransportAddr::Ip);
        EndpointAddr::from_parts(addr.id, relays.chain(ips))
    }
}

/// Whether `addr` may be told to others or dialled (`lan`: private ranges allowed).
pub fn dialable(addr: &SocketAddr, lan: bool) -> bool {
    let ip = canonical(addr.ip());
    if addr.port() == 0 || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if let IpAddr::V4(v4) = ip {
        if v4.is_broadcast() {
            return false;
        }
    }
    lan || is_public(ip)
}

/// Whether `ip` can be reached from the internet (not loopback, link-local or a private range).
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    let benchmarking = a == 198 && (b == 18 || b == 19);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || shared
        || benchmarking
        || a == 0)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges_are_not_public_and_documentation_ranges_are() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "198.18.0.2",
            "198.19.255.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["198.51.100.10", "203.0.113.5", "8.8.8.8", "2001:db8::1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn never_dialable_even_on_a_lan() {
        for bad in [
            "0.0.0.0:1234",
            "[::]:1234",
            "224.0.0.251:5353",
            "255.255.255.255:9",
            "[ff02::1]:1",
            "10.0.0.1:0",
        ] {
            assert!(!dialable(&sa(bad), true), "{bad}");
        }
        assert!(dialable(&sa("10.0.0.1:7"), true));
        assert!(!dialable(&sa("10.0.0.1:7"), false));
        assert!(dialable(&sa("198.51.100.7:7"), false));
    }

    #[test]
    fn tidy_keeps_public_first_caps_and_filters_relays() {
        let id = SecretKey::generate().public();
        let known: RelayUrl = "https://relay.example./".parse().unwrap();
        let foreign: RelayUrl = "https://evil.example./".parse().unwrap();
        let mut addr = EndpointAddr::new(id)
            .with_relay_url(known.clone())
            .with_relay_url(foreign.clone());
        for i in 0..50u8 {
            addr = addr.with_ip_addr(sa(&format!("10.0.0.{i}:1000")));
        }
        addr = addr
            .with_ip_addr(sa("198.51.100.7:4000"))
            .with_ip_addr(sa("127.0.0.1:5"));
        let public = AddrPolicy {
            lan: false,
            relays: RelayPolicy::Known([known.clone()].into()),
        };
        let t = public.tidy(&addr);
        assert_eq!(t.id, id);
        assert_eq!(t.ip_addrs().collect::<Vec<_>>(), [&sa("198.51.100.7:4000")]);
        assert_eq!(t.relay_urls().collect::<Vec<_>>(), [&known]);

        let lan = AddrPolicy::permissive().tidy(&addr);
        let ips: Vec<_> = lan.ip_addrs().copied().collect();
        assert_eq!(ips.len(), MAX_IP_ADDRS);
        assert!(ips.contains(&sa("198.51.100.7:4000")), "public first");
        assert_eq!(lan.relay_urls().count(), 2);
    }
}
