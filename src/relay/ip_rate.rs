//! Events per minute per client network for `mesh relay`. nostr-relay-builder's own limit
//! counts per connection, and a client can open one connection per event; this one cannot be
//! dodged that way. Pure: a fixed one-minute window per [`IpKey`], time passed in.
//!
//! Keyed on [`ip_key`]: the full address for IPv4, the /64 prefix for IPv6 (one host usually
//! holds a whole /64, so keying on full IPv6 addresses would give it 2⁶⁴ quotas). The table is
//! bounded and evicts rather than refuses: a client with more networks than the table holds can
//! at worst push other entries out (their quotas restart), never make the relay refuse everyone.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Networks tracked at most ([`IpRate`]): about 3 MiB of table.
pub const MAX_TRACKED: usize = 65_536;

/// Who a per-IP limit counts: an IPv4 address, or the /64 an IPv6 address is in (IPv4-mapped
/// IPv6 addresses count as their IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(IpAddr);

pub fn ip_key(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(v4) => IpKey(IpAddr::V4(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpKey(IpAddr::V4(v4)),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        },
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[derive(Debug)]
pub struct IpRate {
    per_minute: u32,
    max_tracked: usize,
    windows: HashMap<IpKey, (Instant, u32)>,
    /// When windows that ended were last dropped (once a minute, so a full table is not scanned
    /// on every event).
    swept: Option<Instant>,
}

impl IpRate {
    pub fn new(per_minute: u32) -> Self {
        Self::with_capacity(per_minute, MAX_TRACKED)
    }

    pub fn with_capacity(per_minute: u32, max_tracked: usize) -> Self {
        Self {
            per_minute,
            max_tracked: max_tracked.max(1),
            windows: HashMap::new(),
            swept: None,
        }
    }

    /// Networks tracked now (never more than the capacity).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.len()
    }

    /// Counts one event from `key` at `now`; `false` when its minute is used up.
    pub fn allow(&mut self, key: IpKey, now: Instant) -> bool {
        if !self.windows.contains_key(&key) && self.windows.len() >= self.max_tracked {
            self.make_room(now);
        }
        let (start, count) = self.windows.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= self.per_minute {
            return false;
        }
        *count += 1;
        true
    }

    /// Frees one entry: windows that ended (at most once a minute), else an arbitrary one (the
    /// map's hash order, which a client cannot predict).
    fn make_room(&mut self, now: Instant) {
        if self
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= WINDOW)
        {
            self.swept = Some(now);
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
        }
        if self.windows.len() >= self.max_tracked {
            if let Some(victim) = self.windows.keys().next().copied() {
                self.windows.remove(&victim);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IpKey {
        ip_key(s.parse().unwrap())
    }

    #[test]
    fn each_address_gets_its_quota_per_minute() {
        let mut r = IpRate::new(3);
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0 + Duration::from_secs(59)));
        assert!(r.allow(b, t0), "another address has its own quota");
        assert!(r.allow(a, t0 + WINDOW), "a new minute starts a new quota");
    }

    #[test]
    fn ipv6_addresses_in_one_64_share_a_key_and_ipv4_keeps_the_full_address() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn a_64_cannot_bypass_the_quota_by_changing_its_interface_id() {
        let mut r = IpRate::new(3);
        let t0 = Instant::now();
        let allowed = (0..100u32)
            .filter(|i| r.allow(key(&format!("2001:db8:0:7::{i:x}")), t0))
            .count();
        assert_eq!(allowed, 3);
        assert_eq!(r.tracked(), 1, "one /64 is one entry");
    }

    #[test]
    fn a_full_table_evicts_instead_of_refusing_newcomers() {
        let mut r = IpRate::with_capacity(3, 100);
        let t0 = Instant::now();
        // An attacker with many networks fills the table within one minute…
        for i in 0..1000u32 {
            r.allow(
                key(&format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff)),
                t0,
            );
            assert!(r.tracked() <= 100);
        }
        // …and an honest newcomer still gets its whole quota, then is limited as usual.
        let honest = key("192.0.2.7");
        assert!((0..3).all(|_| r.allow(honest, t0)));
        assert!(!r.allow(honest, t0));
        assert_eq!(r.tracked(), 100);
    }

    #[test]
    fn windows_that_ended_are_dropped_first() {
        let mut r = IpRate::with_capacity(3, 10);
        let t0 = Instant::now();
        for i in 0..10u32 {
            assert!(r.allow(key(&format!("10.0.0.{i}")), t0));
        }
        let live = key("10.0.1.1");
        let t1 = t0 + WINDOW;
        // The first newcomer after the minute sweeps all ended windows at once.
        assert!(r.allow(live, t1));
        assert_eq!(r.tracked(), 1);
    }
}
