//! Unix time. Every timestamp in `mesh` (offers, announcements, API documents) comes from here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    since_epoch().as_micros().min(u64::MAX as u128) as u64
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_micros_agree() {
        let (s, us) = (unix_secs(), unix_micros());
        // Both read the same clock within the same second or the next.
        assert!(us / 1_000_000 >= s && us / 1_000_000 <= s + 1, "{s} {us}");
        assert!(s > 1_700_000_000, "the clock is set: {s}");
    }
}
