//! How well each host has answered this node's forwarded requests: error rate and latency
//! (exponentially weighted), and a circuit breaker. Pure: outcomes and `Instant`s go in, the
//! host's standing comes out; the forwarding code reports outcomes, routing reads standings.
//!
//! The breaker (docs/PROTOCOL.md, "Routing"):
//! - A host we know nothing about starts **half-open**: one trial request at a time until one
//!   answers properly. So a burst of requests never lands on an unproven host, and a host that
//!   fails at once (a 500 in 1 ms) fails one request, not half of them.
//! - **Closed** (proven): requests flow. [`FAILURES_TO_OPEN`] failures in a row, or an error rate
//!   of [`ERROR_RATE_TO_OPEN`] over at least [`MIN_OUTCOMES_FOR_RATE`] outcomes, open it.
//! - **Open**: no requests (except as a last resort, when every other host failed) until its
//!   cool-down ends; then half-open again. The cool-down starts at [`COOL_DOWN`] and doubles with
//!   every failed trial, up to [`MAX_COOL_DOWN`]; a request that completes resets it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Weight of the newest outcome in the error-rate and latency averages.
pub const EWMA_WEIGHT: f64 = 0.25;
/// Failures in a row that open a proven host's breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// An error rate at or above this (with enough outcomes) opens the breaker.
pub const ERROR_RATE_TO_OPEN: f64 = 0.5;
/// Outcomes needed before the error rate alone may open the breaker.
pub const MIN_OUTCOMES_FOR_RATE: u32 = 4;
/// Hosts whose error rate is above this are ranked after those below it.
pub const SUSPECT_ERROR_RATE: f64 = 0.3;
/// The error rate halves every this long without new outcomes (old failures are forgiven).
pub const ERROR_HALF_LIFE: Duration = Duration::from_secs(30);
/// First cool-down of an open breaker, and its ceiling after repeated failed trials.
pub const COOL_DOWN: Duration = Duration::from_secs(5);
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(60);
/// A trial that reported nothing for this long no longer blocks another (a lost report).
pub const STALE_TRIAL: Duration = Duration::from_secs(120);
/// Most hosts remembered; the least recently used is forgotten first.
pub const MAX_HOSTS: usize = 1024;

/// What one request to a host came to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The response began properly (a valid head and first bytes) after `latency`.
    Answered { latency: Duration },
    /// The whole response arrived and ended properly.
    Completed,
    /// 5xx, a timeout, a broken or stalled stream, or garbage.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    Closed,
    Open {
        until: Instant,
    },
    /// One trial at a time; `trial` is when the running one started.
    HalfOpen {
        trial: Option<Instant>,
    },
}

/// May a request go to the host now?
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Availability {
    /// Yes (closed, or half-open with no trial running: this request is the trial).
    Ready,
    /// Half-open and its one trial is running: wait for it rather than pile on.
    Busy,
    /// Open: only as a last resort.
    Open,
}

/// A host's standing, as routing reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub availability: Availability,
    /// The breaker is closed: the host has answered properly since it last failed.
    pub proven: bool,
    /// Share of recent requests that failed, 0..=1.
    pub error_rate: f64,
    /// Average time to a response's first bytes, when known.
    pub latency: Option<Duration>,
}

impl Standing {
    /// A host never tried: ready for its first trial.
    pub const UNKNOWN: Standing = Standing {
        availability: Availability::Ready,
        proven: false,
        error_rate: 0.0,
        latency: None,
    };
}

#[derive(Debug, Clone)]
pub struct HostHealth {
    breaker: Breaker,
    error_rate: f64,
    latency: Option<Duration>,
    failures_in_a_row: u32,
    outcomes: u32,
    cool_down: Duration,
    /// When the last outcome was recorded (for decay and eviction).
    updated: Instant,
}

impl HostHealth {
    pub fn new(now: Instant) -> Self {
        Self {
            breaker: Breaker::HalfOpen { trial: None },
            error_rate: 0.0,
            latency: None,
            failures_in_a_row: 0,
            outcomes: 0,
            cool_down: COOL_DOWN,
            updated: now,
        }
    }

    pub fn breaker(&self) -> Breaker {
        self.breaker
    }

    pub fn standing(&self, now: Instant) -> Standing {
        let availability = match self.breaker {
            Breaker::Closed => Availability::Ready,
            Breaker::Open { until } if now < until => Availability::Open,
            Breaker::Open { .. } => Availability::Ready,
            Breaker::HalfOpen { trial: Some(t) }
                if now.saturating_duration_since(t) < STALE_TRIAL =>
            {
                Availability::Busy
            }
            Breaker::HalfOpen { .. } => Availability::Ready,
        };
        Standing {
            availability,
            proven: self.breaker == Breaker::Closed,
            error_rate: self.decayed_error_rate(now),
            latency: self.latency,
        }
    }

    /// A request is sent now. Returns whether it is the host's trial (half-open, or open with
    /// its cool-down over).
    pub fn begin(&mut self, now: Instant) -> bool {
        let trial = match self.breaker {
            Breaker::Closed => false,
            Breaker::Open { until } => now >= until,
            Breaker::HalfOpen { trial } => {
                trial.is_none_or(|t| now.saturating_duration_since(t) >= STALE_TRIAL)
            }
        };
        if trial {
            self.breaker = Breaker::HalfOpen { trial: Some(now) };
        }
        trial
    }

    /// A trial ended without an outcome (the client went away): let the next one start.
    pub fn release_trial(&mut self) {
        if let Breaker::HalfOpen { trial: Some(_) } = self.breaker {
            self.breaker = Breaker::HalfOpen { trial: None };
        }
    }

    pub fn record(&mut self, outcome: Outcome, now: Instant) {
        self.error_rate = self.decayed_error_rate(now);
        self.updated = now;
        match outcome {
            Outcome::Answered { latency } => {
                self.latency = Some(match self.latency {
                    None => latency,
                    Some(avg) => avg.mul_f64(1.0 - EWMA_WEIGHT) + latency.mul_f64(EWMA_WEIGHT),
                });
                self.breaker = Breaker::Closed;
            }
            Outcome::Completed => {
                self.error_rate *= 1.0 - EWMA_WEIGHT;
                self.outcomes = self.outcomes.saturating_add(1);
                self.failures_in_a_row = 0;
                self.cool_down = COOL_DOWN;
                if matches!(self.breaker, Breaker::HalfOpen { .. }) {
                    self.breaker = Breaker::Closed;
                }
            }
            Outcome::Failed => {
                self.error_rate = self.error_rate * (1.0 - EWMA_WEIGHT) + EWMA_WEIGHT;
                self.outcomes = self.outcomes.saturating_add(1);
                self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
                let open = match self.breaker {
                    // A failed trial (or a failure while open) opens it again, for longer.
                    Breaker::HalfOpen { .. } | Breaker::Open { .. } => true,
                    Breaker::Closed => {
                        self.failures_in_a_row >= FAILURES_TO_OPEN
                            || (self.outcomes >= MIN_OUTCOMES_FOR_RATE
                                && self.error_rate >= ERROR_RATE_TO_OPEN)
                    }
                };
                if open {
                    self.breaker = Breaker::Open {
                        until: now + self.cool_down,
                    };
                    self.cool_down = (self.cool_down * 2).min(MAX_COOL_DOWN);
                }
            }
        }
    }

    fn decayed_error_rate(&self, now: Instant) -> f64 {
        let idle = now.saturating_duration_since(self.updated).as_secs_f64();
        self.error_rate * 0.5f64.powf(idle / ERROR_HALF_LIFE.as_secs_f64())
    }
}

/// Health of every host this node forwarded to, at most [`MAX_HOSTS`] of them.
#[derive(Debug, Clone)]
pub struct HealthTable<K> {
    hosts: HashMap<K, HostHealth>,
}

impl<K> Default for HealthTable<K> {
    fn default() -> Self {
        Self {
            hosts: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> HealthTable<K> {
    pub fn standing(&self, host: &K, now: Instant) -> Standing {
        self.hosts
            .get(host)
            .map_or(Standing::UNKNOWN, |h| h.standing(now))
    }

    pub fn get(&self, host: &K) -> Option<&HostHealth> {
        self.hosts.get(host)
    }

    /// A request to `host` is sent now; true when it is the host's trial.
    pub fn begin(&mut self, host: K, now: Instant) -> bool {
        self.entry(host, now).begin(now)
    }

    pub fn release_trial(&mut self, host: &K) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.release_trial();
        }
    }

    pub fn record(&mut self, host: K, outcome: Outcome, now: Instant) {
        self.entry(host, now).record(outcome, now);
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn entry(&mut self, host: K, now: Instant) -> &mut HostHealth {
        if !self.hosts.contains_key(&host) && self.hosts.len() >= MAX_HOSTS {
            let oldest = self.hosts.iter().min_by_key(|(_, h)| h.updated);
            if let Some(k) = oldest.map(|(k, _)| *k) {
                self.hosts.remove(&k);
            }
        }
        self.hosts
            .entry(host)
            .or_insert_with(|| HostHealth::new(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A host that has answered and completed once: closed.
    fn proven(now: Instant) -> HostHealth {
        let mut h = HostHealth::new(now);
        assert!(h.begin(now));
        h.record(Outcome::Answered { latency: ms(10) }, now);
        h.record(Outcome::Completed, now);
        assert_eq!(h.breaker(), Breaker::Closed);
        h
    }

    #[test]
    fn an_unknown_host_gets_one_trial_at_a_time_until_it_answers() {
        let t0 = Instant::now();
        let mut h = HostHealth::new(t0);
        assert_eq!(h.standing(t0).availability, Availability::Ready);
        assert!(h.begin(t0), "the first request is the trial");
        assert_eq!(h.standing(t0).availability, Availability::Busy);
        assert!(!h.begin(t0), "a forced second request is no trial");
        h.record(Outcome::Answered { latency: ms(20) }, t0 + ms(20));
        assert_eq!(h.breaker(), Breaker::Closed);
        assert_eq!(h.standing(t0 + ms(20)).availability, Availability::Ready);
        assert_eq!(h.standing(t0).latency, Some(ms(20)));
    }

    #[test]
    fn an_unknown_host_that_fails_its_trial_is_open_for_the_cool_down_then_half_open() {
        let t0 = Instant::now();
        let mut h = HostHealth::new(t0);
        h.begin(t0);
        h.record(Outcome::Failed, t0 + ms(1));
        assert_eq!(h.standing(t0 + ms(2)).availability, Availability::Open);
        let after = t0 + ms(1) + COOL_DOWN;
        assert_eq!(h.standing(after).availability, Availability::Ready);
        assert!(h.begin(after), "after the cool-down one trial goes through");
        assert_eq!(h.standing(after).availability, Availability::Busy);
        // The trial fails: open again, for twice as long.
        h.record(Outcome::Failed, after);
        assert_eq!(
            h.standing(after + COOL_DOWN).availability,
            Availability::Open
        );
        assert_eq!(
            h.standing(after + COOL_DOWN * 2).availability,
            Availability::Ready
        );
    }

    #[test]
    fn the_cool_down_doubles_up_to_its_ceiling_and_a_completed_request_resets_it() {
        let mut now = Instant::now();
        let mut h = HostHealth::new(now);
        let mut cool = COOL_DOWN;
        for _ in 0..10 {
            assert!(h.begin(now));
            h.record(Outcome::Failed, now);
            assert_eq!(h.breaker(), Breaker::Open { until: now + cool });
            now += cool;
            cool = (cool * 2).min(MAX_COOL_DOWN);
        }
        assert_eq!(cool, MAX_COOL_DOWN);
        assert!(h.begin(now));
        h.record(Outcome::Answered { latency: ms(5) }, now);
        h.record(Outcome::Completed, now);
        while h.breaker() == Breaker::Closed {
            h.record(Outcome::Failed, now);
        }
        assert_eq!(
            h.breaker(),
            Breaker::Open {
                until: now + COOL_DOWN
            }
        );
    }

    #[test]
    fn failures_in_a_row_open_a_proven_host() {
        let t0 = Instant::now();
        let mut h = proven(t0);
        for i in 1..FAILURES_TO_OPEN {
            h.record(Outcome::Failed, t0);
            assert_eq!(h.breaker(), Breaker::Closed, "after {i} failures");
        }
        h.record(Outcome::Failed, t0);
        assert!(matches!(h.breaker(), Breaker::Open { .. }));
        assert_eq!(h.standing(t0).availability, Availability::Open);
    }

    #[test]
    fn a_high_error_rate_opens_even_without_failures_in_a_row() {
        let t0 = Instant::now();
        let mut h = proven(t0);
        // Fail, succeed, fail, … : never three in a row, but half of them fail.
        let mut opened = false;
        for _ in 0..20 {
            h.record(Outcome::Failed, t0);
            if matches!(h.breaker(), Breaker::Open { .. }) {
                opened = true;
                break;
            }
            h.record(Outcome::Completed, t0);
        }
        assert!(opened, "error rate {}", h.standing(t0).error_rate);
    }

    #[test]
    fn a_host_that_answers_then_stalls_opens_after_failures_in_a_row() {
        // Answered (first byte) does not count as success; the stalled body is the failure.
        let t0 = Instant::now();
        let mut h = HostHealth::new(t0);
        for _ in 0..FAILURES_TO_OPEN {
            h.begin(t0);
            h.record(Outcome::Answered { latency: ms(1) }, t0);
            h.record(Outcome::Failed, t0);
        }
        assert!(matches!(h.breaker(), Breaker::Open { .. }));
    }

    #[test]
    fn the_error_rate_decays_with_time() {
        let t0 = Instant::now();
        let mut h = proven(t0);
        h.record(Outcome::Failed, t0);
        let fresh = h.standing(t0).error_rate;
        assert!((fresh - EWMA_WEIGHT).abs() < 1e-9, "{fresh}");
        let later = h.standing(t0 + ERROR_HALF_LIFE).error_rate;
        assert!((later - fresh / 2.0).abs() < 1e-9, "{later}");
    }

    #[test]
    fn latency_is_an_exponential_average() {
        let t0 = Instant::now();
        let mut h = HostHealth::new(t0);
        h.record(Outcome::Answered { latency: ms(100) }, t0);
        h.record(Outcome::Answered { latency: ms(200) }, t0);
        assert_eq!(h.standing(t0).latency, Some(ms(125)));
    }

    #[test]
    fn a_released_trial_lets_the_next_one_start_and_a_lost_one_expires() {
        let t0 = Instant::now();
        let mut table = HealthTable::default();
        assert!(table.begin(1u32, t0));
        assert_eq!(table.standing(&1, t0).availability, Availability::Busy);
        table.release_trial(&1);
        assert!(table.begin(1, t0));
        assert_eq!(
            table.standing(&1, t0 + STALE_TRIAL).availability,
            Availability::Ready
        );
        assert!(table.begin(1, t0 + STALE_TRIAL));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_least_recently_used() {
        let t0 = Instant::now();
        let mut table = HealthTable::default();
        for i in 0..MAX_HOSTS as u32 {
            table.record(i, Outcome::Failed, t0 + ms(u64::from(i)));
        }
        table.record(u32::MAX, Outcome::Failed, t0 + Duration::from_secs(10));
        assert_eq!(table.len(), MAX_HOSTS);
        assert!(table.get(&0).is_none(), "the oldest went");
        assert!(table.get(&1).is_some());
        assert_eq!(table.standing(&12345678, t0), Standing::UNKNOWN);
    }
}
