//! When to publish the offer: the republish schedule as a sans-IO state machine. The driver
//! (`publish::run`) feeds it [`Event`]s with the time they happened and does what the returned
//! [`Action`] says; nothing here sleeps, reads a clock or touches the network, so every rule is
//! unit-tested with made-up `Instant`s.
//!
//! Rules: the first round is due at once. After a round every relay took, the next one is due a
//! full `interval` later; after a round some relay failed, sooner, with backoff (2 s, 4 s, 8 s …
//! capped at `interval`), until a round succeeds again. Between rounds a change in the mesh's
//! [`Shape`] publishes at once, unless the last round failed: then the backoff decides, so
//! failing relays are not hammered by a busy mesh.
//! Imports only `summary` (for [`Shape`]) and `util::backoff`.

use std::time::{Duration, Instant};

use super::summary::Shape;
use crate::util::backoff::Backoff;

/// First retry delay after a round where some relay failed; doubles up to the interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The offer was signed and sent; `all_ok` when every relay took it.
    Sent { shape: Shape, all_ok: bool },
    /// The offer could not be signed: nothing was sent (the next try is a full interval away).
    NotSigned,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A round finished.
    Round(Outcome),
    /// The mesh may have changed; this is its shape now.
    Mesh(Shape),
    /// The timer set by the last [`Action::WaitUntil`] fired.
    Timer,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sign and send the offer now, then report [`Event::Round`].
    PublishNow,
    /// Wait until this instant (then report [`Event::Timer`]), or for a mesh change.
    WaitUntil(Instant),
}

/// The republish schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    /// Rounds in a row where some relay failed.
    failures: u32,
    /// Whether the last round that sent anything had a relay fail.
    had_failed: bool,
    /// Shape of the offer last signed.
    published: Option<Shape>,
    /// When the next round is due.
    due: Instant,
}

impl Schedule {
    /// A schedule republishing every `interval`, its first round due at `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            failures: 0,
            had_failed: false,
            published: None,
            due: now,
        }
    }

    /// The first action: publish at once.
    pub fn start(&self) -> Action {
        Action::PublishNow
    }

    /// When the next round is due.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// Pause before the next try after `failures` failed rounds in a row: 2 s, 4 s, 8 s …
    /// capped at the interval.
    pub fn backoff(&self, failures: u32) -> Duration {
        Backoff::new(FIRST_RETRY, self.interval).delay(failures)
    }

    pub fn handle(&mut self, event: Event, now: Instant) -> Action {
        match event {
            Event::Round(outcome) => {
                self.due = now + self.after(outcome);
                Action::WaitUntil(self.due)
            }
            Event::Timer if now >= self.due => Action::PublishNow,
            Event::Timer => Action::WaitUntil(self.due),
            Event::Mesh(_) if now >= self.due => Action::PublishNow,
            Event::Mesh(shape) if !self.had_failed && self.published.as_ref() != Some(&shape) => {
                Action::PublishNow
            }
            Event::Mesh(_) => Action::WaitUntil(self.due),
        }
    }

    /// How long after this round the next one is due.
    fn after(&mut self, outcome: Outcome) -> Duration {
        match outcome {
            Outcome::Sent { shape, all_ok } => {
                self.published = Some(shape);
                self.had_failed = !all_ok;
                if all_ok {
                    self.failures = 0;
                    self.interval
                } else {
                    self.failures = self.failures.saturating_add(1);
                    self.backoff(self.failures)
                }
            }
            Outcome::NotSigned => self.interval,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn shape(nodes: u32) -> Shape {
        Shape {
            models: vec![("m".into(), nodes)],
            nodes,
            clients: 0,
            ticket: None,
        }
    }

    fn sent(nodes: u32, all_ok: bool) -> Event {
        Event::Round(Outcome::Sent {
            shape: shape(nodes),
            all_ok,
        })
    }

    #[test]
    fn the_first_round_is_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        assert_eq!(s.start(), Action::PublishNow);
        let t1 = t0 + secs(1);
        assert_eq!(
            s.handle(sent(1, true), t1),
            Action::WaitUntil(t1 + INTERVAL)
        );
        assert_eq!(
            s.handle(Event::Timer, t1 + secs(59)),
            Action::WaitUntil(t1 + INTERVAL),
            "an early timer waits on"
        );
        assert_eq!(s.handle(Event::Timer, t1 + INTERVAL), Action::PublishNow);
        let t2 = t1 + INTERVAL + secs(1);
        assert_eq!(
            s.handle(sent(1, true), t2),
            Action::WaitUntil(t2 + INTERVAL)
        );
    }

    #[test]
    fn failed_rounds_back_off_doubling_up_to_the_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            let Action::WaitUntil(due) = s.handle(sent(1, false), now) else {
                panic!("a round is followed by a wait");
            };
            delays.push((due - now).as_secs());
            now = due;
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_short_interval_caps_the_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_millis(500), t0);
        assert_eq!(
            s.handle(sent(1, false), t0),
            Action::WaitUntil(t0 + Duration::from_millis(500))
        );
    }

    #[test]
    fn a_successful_round_resets_the_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        s.handle(sent(1, false), t0);
        s.handle(sent(1, false), t0);
        assert_eq!(
            s.handle(sent(1, false), t0),
            Action::WaitUntil(t0 + secs(8))
        );
        assert_eq!(
            s.handle(sent(1, true), t0),
            Action::WaitUntil(t0 + INTERVAL)
        );
        assert_eq!(
            s.handle(sent(1, false), t0),
            Action::WaitUntil(t0 + secs(2)),
            "the next failure starts again at the first retry"
        );
    }

    #[test]
    fn a_change_of_shape_publishes_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        let due = t0 + INTERVAL;
        assert_eq!(s.handle(sent(1, true), t0), Action::WaitUntil(due));
        assert_eq!(
            s.handle(Event::Mesh(shape(1)), t0 + secs(5)),
            Action::WaitUntil(due),
            "the same shape waits for the interval"
        );
        assert_eq!(
            s.handle(Event::Mesh(shape(2)), t0 + secs(6)),
            Action::PublishNow
        );
    }

    #[test]
    fn a_change_of_shape_while_backing_off_waits_for_the_backoff() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        let due = t0 + secs(2);
        assert_eq!(s.handle(sent(1, false), t0), Action::WaitUntil(due));
        assert_eq!(
            s.handle(Event::Mesh(shape(2)), t0 + secs(1)),
            Action::WaitUntil(due),
            "failing relays are not hammered"
        );
        assert_eq!(s.handle(Event::Mesh(shape(2)), due), Action::PublishNow);
        // Once a round succeeds, changes publish at once again.
        assert_eq!(
            s.handle(sent(2, true), due),
            Action::WaitUntil(due + INTERVAL)
        );
        assert_eq!(s.handle(Event::Mesh(shape(3)), due), Action::PublishNow);
    }

    #[test]
    fn an_unsigned_round_retries_after_an_interval_and_keeps_the_last_shape() {
        let t0 = Instant::now();
        let mut s = Schedule::new(INTERVAL, t0);
        s.handle(sent(1, true), t0);
        assert_eq!(
            s.handle(Event::Round(Outcome::NotSigned), t0),
            Action::WaitUntil(t0 + INTERVAL)
        );
        assert_eq!(
            s.handle(Event::Mesh(shape(1)), t0),
            Action::WaitUntil(t0 + INTERVAL),
            "the shape last sent still counts as published"
        );
        assert_eq!(s.handle(Event::Mesh(shape(4)), t0), Action::PublishNow);
    }
}
