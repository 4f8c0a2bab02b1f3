//! Events per minute per client IP address for `mesh relay`. nostr-relay-builder's own limit
//! counts per connection, and a client can open one connection per event; this one cannot be
//! dodged that way. Pure: a fixed one-minute window per address, time passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; beyond it windows that ended are dropped, and if all are live,
/// new addresses are refused until some end (a flood from many addresses cannot grow memory).
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
pub struct IpRate {
    per_minute: u32,
    windows: HashMap<IpAddr, (Instant, u32)>,
}

impl IpRate {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: HashMap::new(),
        }
    }

    /// Counts one event from `ip` at `now`; `false` when its minute is used up.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.windows.contains_key(&ip) && self.windows.len() >= MAX_TRACKED {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if self.windows.len() >= MAX_TRACKED {
                return false;
            }
        }
        let (start, count) = self.windows.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= self.per_minute {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_quota_per_minute() {
        let mut r = IpRate::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..3).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0 + Duration::from_secs(59)));
        assert!(r.allow(b, t0), "another address has its own quota");
        assert!(r.allow(a, t0 + WINDOW), "a new minute starts a new quota");
    }
}
