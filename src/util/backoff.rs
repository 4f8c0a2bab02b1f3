//! Exponential backoff, the one schedule used wherever `mesh` retries: downloads and hub
//! metadata (a bounded number of tries, [`RetryPolicy`], counted by [`Retry`]) and offer
//! publication (forever, [`Backoff`]).
//!
//! All of it is plain data and functions: callers await their tries and sleep the pauses.
//! Imports nothing beyond std.

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

    /// Try number `attempt` (1-based) failed: the pause before the next try, or `None` to give
    /// up (the error is not `transient`, or the tries are used up).
    pub fn after_failure(&self, attempt: u32, transient: bool) -> Option<Duration> {
        (transient && self.may_retry(attempt)).then(|| self.delay(attempt))
    }
}

/// What to do after a failed try (see [`Retry::failed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try number `attempt` failed: pause for `delay`, then try again.
    RetryAfter { attempt: u32, delay: Duration },
    /// Stop: the error is permanent or the tries are used up; `attempts` were made.
    GiveUp { attempts: u32 },
}

/// The tries of one operation under a [`RetryPolicy`], as plain data: the caller's loop runs
/// the try, tells [`Retry::failed`] how it went, and sleeps or stops as the [`Verdict`] says.
/// (A state rather than an async `retry(op)` helper: the download's tries share `&mut` state,
/// which an async closure cannot lend to a `Send` future.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    policy: RetryPolicy,
    attempt: u32,
}

impl Retry {
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy, attempt: 1 }
    }

    /// The try under way (1-based).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The try under way failed with a `transient` error or not: retry (the next try counts
    /// one more) or give up.
    pub fn failed(&mut self, transient: bool) -> Verdict {
        let attempt = self.attempt;
        match self.policy.after_failure(attempt, transient) {
            Some(delay) => {
                self.attempt += 1;
                Verdict::RetryAfter { attempt, delay }
            }
            None => Verdict::GiveUp { attempts: attempt },
        }
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
    fn after_failure_retries_transient_errors_until_the_tries_run_out() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.after_failure(1, true), Some(Duration::from_millis(100)));
        assert_eq!(p.after_failure(2, true), Some(Duration::from_millis(200)));
        assert_eq!(p.after_failure(3, true), None);
        assert_eq!(p.after_failure(1, false), None);
    }

    #[test]
    fn retry_counts_tries_and_backs_off_until_they_run_out() {
        let mut r = Retry::new(RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        });
        assert_eq!(r.attempt(), 1);
        let ms = Duration::from_millis;
        assert_eq!(
            r.failed(true),
            Verdict::RetryAfter {
                attempt: 1,
                delay: ms(100)
            }
        );
        assert_eq!(r.attempt(), 2);
        assert_eq!(
            r.failed(true),
            Verdict::RetryAfter {
                attempt: 2,
                delay: ms(200)
            }
        );
        assert_eq!(r.failed(true), Verdict::GiveUp { attempts: 3 });
        assert_eq!(r.attempt(), 3, "giving up does not count another try");
    }

    #[test]
    fn retry_gives_up_at_once_on_a_permanent_error() {
        let mut r = Retry::new(RetryPolicy::default());
        assert_eq!(r.failed(false), Verdict::GiveUp { attempts: 1 });
        let mut r = Retry::new(RetryPolicy::default());
        assert!(matches!(r.failed(true), Verdict::RetryAfter { .. }));
        assert_eq!(r.failed(false), Verdict::GiveUp { attempts: 2 });
    }

    #[test]
    fn a_single_try_policy_never_retries() {
        let mut r = Retry::new(RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        });
        assert_eq!(r.failed(true), Verdict::GiveUp { attempts: 1 });
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
