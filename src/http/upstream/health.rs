//! Whether an upstream engine serves, as its polls tell: a pure state machine (`Health × Event
//! → actions`), so the rules are tested in microseconds and the poller only moves data.
//!
//! An upstream's models enter routing when it first answers `GET /v1/models`, change when its
//! list changes, and leave routing after [`DOWN_AFTER`] failed polls in a row (one lost poll on
//! a busy machine does not withdraw them); they come back at the next answer.

/// Failed polls in a row after which an upstream's models leave routing.
pub const DOWN_AFTER: u32 = 2;

/// What the poller saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `GET /v1/models` answered with these model ids.
    Answered(Vec<String>),
    /// The poll failed (refused, timed out, not a model list), for this reason.
    Failed(String),
}

/// What the poller does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Route these models to the upstream (and announce them); replaces the previous list.
    Serve(Vec<String>),
    /// Take the upstream's models out of routing (and announcements), for this reason.
    Withdraw(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Not answered yet.
    #[default]
    Starting,
    Up,
    /// Stopped answering, or never did.
    Down,
}

/// One upstream's health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    /// Failed polls in a row.
    pub failures: u32,
    /// The models routed to it now (empty unless up).
    pub models: Vec<String>,
}

impl Health {
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Answered(models) => {
                self.failures = 0;
                let changed = self.status != Status::Up || self.models != models;
                self.status = Status::Up;
                if !changed {
                    return Vec::new();
                }
                self.models = models.clone();
                vec![Action::Serve(models)]
            }
            Event::Failed(reason) => {
                self.failures = self.failures.saturating_add(1);
                if self.failures < DOWN_AFTER || self.status == Status::Down {
                    return Vec::new();
                }
                let was_up = self.status == Status::Up;
                self.status = Status::Down;
                self.models.clear();
                if was_up {
                    vec![Action::Withdraw(reason)]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(models: &[&str]) -> Event {
        Event::Answered(models.iter().map(|m| m.to_string()).collect())
    }
    fn failed() -> Event {
        Event::Failed("connection refused".into())
    }

    #[test]
    fn models_enter_routing_at_the_first_answer_and_once_only() {
        let mut h = Health::default();
        assert_eq!(
            h.on(answered(&["a"])),
            vec![Action::Serve(vec!["a".into()])]
        );
        assert_eq!(h.on(answered(&["a"])), vec![]);
        assert_eq!(
            h.on(answered(&["a", "b"])),
            vec![Action::Serve(vec!["a".into(), "b".into()])]
        );
        assert_eq!(h.status, Status::Up);
    }

    #[test]
    fn one_lost_poll_is_forgiven_two_in_a_row_withdraw_the_models() {
        let mut h = Health::default();
        h.on(answered(&["a"]));
        assert_eq!(h.on(failed()), vec![]);
        assert_eq!(
            h.on(answered(&["a"])),
            vec![],
            "a failure is forgiven by an answer"
        );
        assert_eq!(h.on(failed()), vec![]);
        assert_eq!(
            h.on(failed()),
            vec![Action::Withdraw("connection refused".into())]
        );
        assert_eq!((h.status, h.models.len()), (Status::Down, 0));
        assert_eq!(h.on(failed()), vec![], "withdrawn once");
    }

    #[test]
    fn a_down_upstream_comes_back_at_its_next_answer() {
        let mut h = Health::default();
        h.on(answered(&["a"]));
        h.on(failed());
        h.on(failed());
        assert_eq!(
            h.on(answered(&["a"])),
            vec![Action::Serve(vec!["a".into()])]
        );
        assert_eq!((h.status, h.failures), (Status::Up, 0));
    }

    #[test]
    fn an_upstream_that_never_answers_is_down_without_withdrawing_anything() {
        let mut h = Health::default();
        assert_eq!(h.on(failed()), vec![]);
        assert_eq!(h.on(failed()), vec![]);
        assert_eq!(h.status, Status::Down);
        assert_eq!(
            h.on(answered(&["a"])),
            vec![Action::Serve(vec!["a".into()])]
        );
    }
}
