//! The `mesh --auto` policy, sans IO: a state machine that hears what happened (an offer found
//! or not, the node started or refused, the peer count changed, a deadline passed, Ctrl-C) and
//! answers with what to do next (browse, join, start a new mesh, publish, leave, stop). It never
//! waits, reads a clock or prints: the caller passes `Instant`s in, executes the [`Action`]s,
//! sleeps until [`Policy::deadline`] and reports back with [`Event`]s (`cmd/auto.rs` does).
//!
//! The rules:
//! - no mesh fits: a client looks again after [`RETRY`]; a serving node starts a new public mesh
//!   and publishes it;
//! - the chosen mesh refuses the node: look again after [`RETRY`]; any other failure to start
//!   (a busy port, a mesh of our own that cannot start) ends the run;
//! - joined, and no other node for [`EMPTY_GRACE`]: a client leaves and looks for another mesh;
//!   a serving node stays and publishes its mesh (once) so that others can find it; a peer that
//!   comes back within the grace cancels it;
//! - Ctrl-C stops, whatever the state.
//!
//! Imports nothing but `std`.

use std::time::{Duration, Instant};

/// How long a mesh must have no other node before `--auto` acts on it.
pub const EMPTY_GRACE: Duration = Duration::from_secs(10);
/// How long to wait before looking again when no mesh fits a client, or the chosen mesh
/// refused the node.
pub const RETRY: Duration = Duration::from_secs(10);

/// What the policy knows from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `--client`: serve nothing, never start a mesh of its own.
    pub client: bool,
    /// `--publish`: publish the mesh even when joining someone else's.
    pub publish: bool,
}

/// What happened. `O` is the offer the caller picked (the policy only passes it on).
#[derive(Debug, Clone, PartialEq)]
pub enum Event<O> {
    /// A browse ended; `best` is the offer to join, if any fits.
    Found { best: Option<O>, now: Instant },
    /// The node started and is in the mesh; `peers` other nodes are known so far.
    Started { peers: usize, now: Instant },
    /// The node did not start. `mesh_refused`: the mesh refused or failed us (not a local
    /// problem such as a busy port).
    StartFailed { mesh_refused: bool, now: Instant },
    /// The mesh now has `count` other nodes.
    PeersChanged { count: usize, now: Instant },
    /// [`Policy::deadline`] may have passed.
    Timer { now: Instant },
    /// Ctrl-C (or SIGTERM).
    CtrlC,
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<O> {
    /// Look for meshes; answer with [`Event::Found`] (or [`Event::CtrlC`]).
    Browse,
    /// Start the node in the mesh of `offer`; answer with [`Event::Started`] or
    /// [`Event::StartFailed`].
    Join { offer: O, publish: bool },
    /// Start the node in a new public mesh and publish it; answer as for [`Action::Join`].
    StartNewMesh,
    /// Pick the model to serve and download and load it in the background.
    ChooseAndLoadModel,
    /// Publish the mesh (the node is alone in it).
    StartPublishing,
    /// Shut the node down: the mesh has emptied.
    Leave,
    /// Tell the user.
    Say(Message),
    /// Shut down (the node, if any) and end the run.
    Stop,
    /// End the run with the error the node failed to start with.
    Fail,
}

/// What the policy tells the user; the caller words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A client found no mesh; it looks again after `retry`.
    NoMeshYet { retry: Duration },
    /// A serving node found no mesh; it starts its own.
    NoMeshFits,
    /// The chosen mesh refused the node; it looks again after `retry`.
    CannotJoin { retry: Duration },
    /// A client's mesh has emptied; it looks for another.
    Emptied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A browse is under way.
    Looking,
    /// Waiting to look again.
    Pausing {
        until: Instant,
    },
    /// The node is starting; `joining`: in someone else's mesh (else a new one of its own).
    Starting {
        joining: bool,
    },
    /// In a mesh. `alone_since`: when the last other node went (or the node joined without
    /// seeing one); `publishing`: whether the mesh is published.
    Joined {
        alone_since: Option<Instant>,
        publishing: bool,
    },
    Stopped,
}

/// The `--auto` state machine.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: Config,
    state: State,
}

impl Policy {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            state: State::Looking,
        }
    }

    /// The first actions: look for meshes.
    pub fn start<O>(&self) -> Vec<Action<O>> {
        vec![Action::Browse]
    }

    /// When to report [`Event::Timer`] next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Pausing { until } => Some(until),
            State::Joined {
                alone_since: Some(since),
                publishing,
            } if self.cfg.client || !publishing => Some(since + EMPTY_GRACE),
            _ => None,
        }
    }

    /// Whether the run has ended.
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    pub fn handle<O>(&mut self, event: Event<O>) -> Vec<Action<O>> {
        match (self.state, event) {
            (State::Stopped, _) => vec![],
            (_, Event::CtrlC) => {
                self.state = State::Stopped;
                vec![Action::Stop]
            }
            (State::Looking, Event::Found { best, now }) => self.found(best, now),
            (State::Starting { joining }, Event::Started { peers, now }) => {
                self.state = State::Joined {
                    alone_since: (peers == 0).then_some(now),
                    publishing: !joining || self.cfg.publish,
                };
                match self.cfg.client {
                    true => vec![],
                    false => vec![Action::ChooseAndLoadModel],
                }
            }
            (State::Starting { joining }, Event::StartFailed { mesh_refused, now }) => {
                if joining && mesh_refused {
                    self.pause(now, Message::CannotJoin { retry: RETRY })
                } else {
                    self.state = State::Stopped;
                    vec![Action::Fail]
                }
            }
            (State::Joined { .. }, Event::PeersChanged { count, now }) => {
                self.peers_changed(count, now)
            }
            (State::Joined { .. }, Event::Timer { now }) => self.check_alone(now),
            (State::Pausing { until }, Event::Timer { now }) if now >= until => {
                self.state = State::Looking;
                vec![Action::Browse]
            }
            // Anything else is stale (a timer that fired early, a count after leaving).
            _ => vec![],
        }
    }

    fn found<O>(&mut self, best: Option<O>, now: Instant) -> Vec<Action<O>> {
        match best {
            Some(offer) => {
                self.state = State::Starting { joining: true };
                vec![Action::Join {
                    offer,
                    publish: self.cfg.publish,
                }]
            }
            None if self.cfg.client => self.pause(now, Message::NoMeshYet { retry: RETRY }),
            None => {
                self.state = State::Starting { joining: false };
                vec![Action::Say(Message::NoMeshFits), Action::StartNewMesh]
            }
        }
    }

    fn pause<O>(&mut self, now: Instant, message: Message) -> Vec<Action<O>> {
        self.state = State::Pausing { until: now + RETRY };
        vec![Action::Say(message)]
    }

    fn peers_changed<O>(&mut self, count: usize, now: Instant) -> Vec<Action<O>> {
        if let State::Joined { alone_since, .. } = &mut self.state {
            *alone_since = match count {
                0 => Some(alone_since.unwrap_or(now)),
                _ => None,
            };
        }
        self.check_alone(now)
    }

    /// Acts on a mesh that has had no other node for [`EMPTY_GRACE`].
    fn check_alone<O>(&mut self, now: Instant) -> Vec<Action<O>> {
        let State::Joined {
            alone_since: Some(since),
            publishing,
        } = self.state
        else {
            return vec![];
        };
        if now.saturating_duration_since(since) < EMPTY_GRACE {
            return vec![];
        }
        if self.cfg.client {
            self.state = State::Looking;
            return vec![Action::Leave, Action::Say(Message::Emptied), Action::Browse];
        }
        if publishing {
            return vec![];
        }
        self.state = State::Joined {
            alone_since: Some(since),
            publishing: true,
        };
        vec![Action::StartPublishing]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type A = Action<&'static str>;

    fn client() -> Policy {
        Policy::new(Config {
            client: true,
            publish: false,
        })
    }

    fn serving() -> Policy {
        Policy::new(Config {
            client: false,
            publish: false,
        })
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// A policy that has joined the offer "m" and started with `peers` other nodes at `t0`.
    fn joined(mut p: Policy, peers: usize, t0: Instant) -> Policy {
        p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        p.handle::<&str>(Event::Started { peers, now: t0 });
        p
    }

    /// A serving node that started its own (published) mesh at `t0`, alone.
    fn own_mesh(t0: Instant) -> Policy {
        let mut p = serving();
        p.handle::<&str>(Event::Found {
            best: None,
            now: t0,
        });
        p.handle::<&str>(Event::Started { peers: 0, now: t0 });
        p
    }

    #[test]
    fn a_run_starts_by_browsing() {
        assert_eq!(client().start::<&str>(), vec![A::Browse]);
        assert_eq!(client().deadline(), None);
    }

    #[test]
    fn an_offer_found_is_joined_without_publishing_unless_asked() {
        let t0 = Instant::now();
        let mut p = client();
        let acts = p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        assert_eq!(
            acts,
            vec![A::Join {
                offer: "m",
                publish: false
            }]
        );
        let mut p = Policy::new(Config {
            client: false,
            publish: true,
        });
        let acts = p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        assert_eq!(
            acts,
            vec![A::Join {
                offer: "m",
                publish: true
            }]
        );
    }

    #[test]
    fn a_client_with_no_offer_waits_retry_and_looks_again() {
        let t0 = Instant::now();
        let mut p = client();
        let acts = p.handle::<&str>(Event::Found {
            best: None,
            now: t0,
        });
        assert_eq!(acts, vec![A::Say(Message::NoMeshYet { retry: RETRY })]);
        assert_eq!(p.deadline(), Some(t0 + RETRY));
        // Early: nothing yet.
        let early = t0 + RETRY - Duration::from_millis(1);
        assert_eq!(p.handle::<&str>(Event::Timer { now: early }), vec![]);
        assert_eq!(
            p.handle::<&str>(Event::Timer { now: t0 + RETRY }),
            vec![A::Browse]
        );
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn a_serving_node_with_no_offer_starts_a_public_mesh_and_publishes_it() {
        let t0 = Instant::now();
        let mut p = serving();
        let acts = p.handle::<&str>(Event::Found {
            best: None,
            now: t0,
        });
        assert_eq!(acts, vec![A::Say(Message::NoMeshFits), A::StartNewMesh]);
        let acts = p.handle::<&str>(Event::Started { peers: 0, now: t0 });
        assert_eq!(acts, vec![A::ChooseAndLoadModel]);
        // Already published: being alone is no reason to act.
        assert_eq!(p.deadline(), None);
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 60) }), vec![]);
    }

    #[test]
    fn a_joined_client_loads_nothing_and_a_serving_node_chooses_a_model() {
        let t0 = Instant::now();
        let mut p = client();
        p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        assert_eq!(
            p.handle::<&str>(Event::Started { peers: 1, now: t0 }),
            vec![]
        );
        let mut p = serving();
        p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        assert_eq!(
            p.handle::<&str>(Event::Started { peers: 1, now: t0 }),
            vec![A::ChooseAndLoadModel]
        );
    }

    #[test]
    fn a_refusal_by_the_mesh_pauses_and_looks_again() {
        let t0 = Instant::now();
        let mut p = client();
        p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        let acts = p.handle::<&str>(Event::StartFailed {
            mesh_refused: true,
            now: t0,
        });
        assert_eq!(acts, vec![A::Say(Message::CannotJoin { retry: RETRY })]);
        assert_eq!(p.deadline(), Some(t0 + RETRY));
        assert_eq!(
            p.handle::<&str>(Event::Timer { now: t0 + RETRY }),
            vec![A::Browse]
        );
        assert!(!p.stopped());
    }

    #[test]
    fn a_local_failure_to_join_ends_the_run() {
        let t0 = Instant::now();
        let mut p = serving();
        p.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        let acts = p.handle::<&str>(Event::StartFailed {
            mesh_refused: false,
            now: t0,
        });
        assert_eq!(acts, vec![A::Fail]);
        assert!(p.stopped());
        assert_eq!(p.deadline(), None);
    }

    #[test]
    fn any_failure_to_start_a_mesh_of_its_own_ends_the_run() {
        let t0 = Instant::now();
        let mut p = serving();
        p.handle::<&str>(Event::Found {
            best: None,
            now: t0,
        });
        let acts = p.handle::<&str>(Event::StartFailed {
            mesh_refused: true,
            now: t0,
        });
        assert_eq!(acts, vec![A::Fail]);
        assert!(p.stopped());
    }

    #[test]
    fn a_client_alone_for_the_grace_leaves_and_looks_again() {
        let t0 = Instant::now();
        let mut p = joined(client(), 1, t0);
        assert_eq!(p.deadline(), None);
        assert_eq!(
            p.handle::<&str>(Event::PeersChanged {
                count: 0,
                now: secs(t0, 5)
            }),
            vec![]
        );
        assert_eq!(p.deadline(), Some(secs(t0, 5) + EMPTY_GRACE));
        // A later event while still alone keeps the first moment.
        p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 8),
        });
        assert_eq!(p.deadline(), Some(secs(t0, 5) + EMPTY_GRACE));
        let early = secs(t0, 5) + EMPTY_GRACE - Duration::from_millis(1);
        assert_eq!(p.handle::<&str>(Event::Timer { now: early }), vec![]);
        let acts = p.handle::<&str>(Event::Timer {
            now: secs(t0, 5) + EMPTY_GRACE,
        });
        assert_eq!(acts, vec![A::Leave, A::Say(Message::Emptied), A::Browse]);
        assert_eq!(p.deadline(), None);
        // Late mesh events after leaving change nothing.
        assert_eq!(
            p.handle::<&str>(Event::PeersChanged {
                count: 0,
                now: secs(t0, 60)
            }),
            vec![]
        );
    }

    #[test]
    fn a_client_that_joins_and_sees_no_one_counts_the_grace_from_the_join() {
        let t0 = Instant::now();
        let mut p = joined(client(), 0, t0);
        assert_eq!(p.deadline(), Some(t0 + EMPTY_GRACE));
        assert_eq!(
            p.handle::<&str>(Event::Timer {
                now: t0 + EMPTY_GRACE
            })[0],
            A::Leave
        );
    }

    #[test]
    fn a_peer_back_within_the_grace_cancels_the_leave() {
        let t0 = Instant::now();
        let mut p = joined(client(), 0, t0);
        let acts = p.handle::<&str>(Event::PeersChanged {
            count: 1,
            now: secs(t0, 9),
        });
        assert_eq!(acts, vec![]);
        assert_eq!(p.deadline(), None);
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 10) }), vec![]);
        // Alone again: the grace starts over.
        p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 12),
        });
        assert_eq!(p.deadline(), Some(secs(t0, 12) + EMPTY_GRACE));
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 21) }), vec![]);
        assert_eq!(
            p.handle::<&str>(Event::Timer { now: secs(t0, 22) })[0],
            A::Leave
        );
    }

    #[test]
    fn a_peer_count_event_past_the_grace_acts_at_once() {
        let t0 = Instant::now();
        let mut p = joined(client(), 0, t0);
        let acts = p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 11),
        });
        assert_eq!(acts[0], A::Leave);
    }

    #[test]
    fn a_serving_node_left_alone_publishes_its_mesh_exactly_once() {
        let t0 = Instant::now();
        let mut p = joined(serving(), 1, t0);
        p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 1),
        });
        assert_eq!(p.deadline(), Some(secs(t0, 1) + EMPTY_GRACE));
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 10) }), vec![]);
        let acts = p.handle::<&str>(Event::Timer { now: secs(t0, 11) });
        assert_eq!(acts, vec![A::StartPublishing]);
        // Published now: no more deadlines, and nothing more when alone again.
        assert_eq!(p.deadline(), None);
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 30) }), vec![]);
        p.handle::<&str>(Event::PeersChanged {
            count: 1,
            now: secs(t0, 31),
        });
        p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 32),
        });
        assert_eq!(p.deadline(), None);
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 60) }), vec![]);
        assert!(!p.stopped());
    }

    #[test]
    fn a_serving_node_that_joined_with_publish_never_publishes_again() {
        let t0 = Instant::now();
        let p = Policy::new(Config {
            client: false,
            publish: true,
        });
        let mut p = joined(p, 0, t0);
        assert_eq!(p.deadline(), None);
        assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 60) }), vec![]);
    }

    #[test]
    fn a_serving_node_in_its_own_mesh_stays_when_alone() {
        let t0 = Instant::now();
        let mut p = own_mesh(t0);
        let acts = p.handle::<&str>(Event::PeersChanged {
            count: 0,
            now: secs(t0, 60),
        });
        assert_eq!(acts, vec![]);
        assert!(!p.stopped());
    }

    #[test]
    fn ctrl_c_stops_in_every_state() {
        let t0 = Instant::now();
        let mut looking = client();
        let mut pausing = client();
        pausing.handle::<&str>(Event::Found {
            best: None,
            now: t0,
        });
        let mut starting = client();
        starting.handle(Event::Found {
            best: Some("m"),
            now: t0,
        });
        let joined_client = joined(client(), 0, t0);
        let joined_serving = joined(serving(), 0, t0);
        for p in [
            &mut looking,
            &mut pausing,
            &mut starting,
            &mut joined_client.clone(),
            &mut joined_serving.clone(),
        ] {
            assert_eq!(p.handle::<&str>(Event::CtrlC), vec![A::Stop]);
            assert!(p.stopped());
            assert_eq!(p.deadline(), None);
            // Nothing after the end, not even a second Ctrl-C.
            assert_eq!(p.handle::<&str>(Event::CtrlC), vec![]);
            assert_eq!(p.handle::<&str>(Event::Timer { now: secs(t0, 99) }), vec![]);
        }
    }

    #[test]
    fn events_out_of_turn_are_ignored() {
        let t0 = Instant::now();
        let mut p = client();
        // Looking: no timer, no start result, no peer count means anything.
        assert_eq!(p.handle::<&str>(Event::Timer { now: t0 }), vec![]);
        assert_eq!(
            p.handle::<&str>(Event::Started { peers: 0, now: t0 }),
            vec![]
        );
        assert_eq!(
            p.handle::<&str>(Event::PeersChanged { count: 0, now: t0 }),
            vec![]
        );
        // Joined: a second browse result does not join again.
        let mut p = joined(client(), 1, t0);
        assert_eq!(
            p.handle(Event::Found {
                best: Some("other"),
                now: t0
            }),
            vec![]
        );
    }

    #[test]
    fn the_grace_and_retry_stay_ten_seconds() {
        assert_eq!(EMPTY_GRACE, Duration::from_secs(10));
        assert_eq!(RETRY, Duration::from_secs(10));
    }
}
