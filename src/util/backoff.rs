//! Exponential backoff, the one schedule used wherever `mesh` retries: downloads (with a bounded
//! number of attempts, [`RetryPolicy`]) and offer publication (forever, [`Backoff`]).

use std::time::Duration;

/// `base × 2^(attempt-1)`, capped at `max`. `attempt` counts from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// Pause before retry number `attempt` (1-based; 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Retry schedule for transient errors: at most `max_attempts` tries, waiting
/// `base_delay × 2^(attempt-1)` (capped at `max_delay`) between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Pause before retry number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        Backoff::new(self.base_delay, self.max_delay).delay(attempt)
    }

    /// Whether another try may follow try number `attempt` (1-based).
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
        assert_eq!(p.delay(99), Duration::from_millis(350));
        assert!(p.may_retry(4) && !p.may_retry(5));
    }

    #[test]
    fn attempt_zero_is_the_first_and_huge_attempts_do_not_overflow() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        assert_eq!(b.delay(0), Duration::from_secs(2));
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(3), Duration::from_secs(8));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }
}
