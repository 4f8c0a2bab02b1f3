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
//! - joined someone else's mesh, and nothing can be served here (no catalog model fits or
//!   decodes fast enough): the node stays in the mesh as a client from then on; in a mesh of
//!   its own that ends the run (a mesh serving nothing is no use to anyone);
//! - joined, and no other node for [`EMPTY_GRACE`]: a client leaves and looks for another mesh;
//!   a serving node stays and publishes its mesh (once) so that others can find it; a peer that
//!   comes back within the grace cancels it;
//! - [`VERIFY_AFTER`] after joining someone else's mesh, the offer is compared with what gossip
//!   shows (`discovery::verify`): if gossip contradicts it, the node distrusts the publisher,
//!   leaves and looks for another mesh (the untrusted publisher is left out from then on);
//! - Ctrl-C stops, whatever the state.
//!
//! Imports nothing but `std`.

use std::time::{Duration, Instant};

/// How long a mesh must have no other node before `--auto` acts on it.
pub const EMPTY_GRACE: Duration = Duration::from_secs(10);
/// How long to wait before looking again when no mesh fits a client, or the chosen mesh
/// refused the node.
pub const RETRY: Duration = Duration::from_secs(10);
/// How long after joining the offer is checked against gossip: time for the first neighbour's
/// roster (every member's announcement, `mesh/roster/2`) and for stragglers to arrive.
pub const VERIFY_AFTER: Duration = Duration::from_secs(10);

/// What the policy knows from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// `--client`: serve nothing, never start a mesh of its own.
    pub client: bool,
    /// `--publish`: publish the mesh even when joining someone else's.
    pub publish: bool,
    /// Check a joined mesh's offer against gossip [`VERIFY_AFTER`] joining (always on in
    /// `mesh --auto`; off only in the tests of the other rules).
    pub verify_offers: bool,
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
    /// The answer to [`Action::CheckOffer`]: why gossip contradicts the offer, if it does.
    OfferChecked {
        contradiction: Option<String>,
        now: Instant,
    },
    /// The answer to [`Action::ChooseAndLoadModel`] when nothing can be served here.
    NothingToServe,
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
    /// Pick the model to serve and download and load it in the background; answer with
    /// [`Event::NothingToServe`] when there is none.
    ChooseAndLoadModel,
    /// Publish the mesh (the node is alone in it).
    StartPublishing,
    /// Compare the joined mesh's offer with what gossip shows; answer with
    /// [`Event::OfferChecked`].
    CheckOffer,
    /// Remember the joined offer's publisher (Nostr key and node) as untrusted, and tell the
    /// user why; [`Action::Leave`] follows.
    Distrust { reason: String },
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
    /// Gossip agrees with the joined mesh's offer.
    OfferConfirmed,
    /// Nothing can be served here; the node stays in the mesh as a client.
    ClientFromNowOn,
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
    /// In a mesh. `own`: a mesh the node started; `alone_since`: when the last other node
    /// went (or the node joined without seeing one); `publishing`: whether the mesh is
    /// published; `verify_at`: when to check the offer against gossip (until it is checked).
    Joined {
        own: bool,
        alone_since: Option<Instant>,
        publishing: bool,
        verify_at: Option<Instant>,
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
                alone_since,
                publishing,
                verify_at,
                ..
            } => {
                let grace = alone_since
                    .filter(|_| self.cfg.client || !publishing)
                    .map(|since| since + EMPTY_GRACE);
                match (grace, verify_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
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
                    own: !joining,
                    alone_since: (peers == 0).then_some(now),
                    publishing: !joining || self.cfg.publish,
                    verify_at: (joining && self.cfg.verify_offers).then(|| now + VERIFY_AFTER),
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
            (State::Joined { own: true, .. }, Event::NothingToServe) => {
                self.state = State::Stopped;
                vec![Action::Fail]
            }
            (State::Joined { own: false, .. }, Event::NothingToServe) if !self.cfg.client => {
                self.cfg.client = true;
                vec![Action::Say(Message::ClientFromNowOn)]
            }
            (State::Joined { .. }, Event::PeersChanged { count, now }) => {
                self.peers_changed(count, now)
            }
            (State::Joined { .. }, Event::Timer { now }) => {
                let mut actions = self.check_alone(now);
                if let State::Joined {
                    verify_at: Some(at),
                    ..
                } = self.state
                {
                    if now >= at {
                        actions.push(Action::CheckOffer);
                    }
                }
                actions
            }
            (
                State::Joined {
                    verify_at: Some(_), ..
                },
                Event::OfferChecked { contradiction, .. },
            ) => self.offer_checked(contradiction),
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

    /// Gossip agrees with the offer (checked once), or the node distrusts it and moves on.
    fn offer_checked<O>(&mut self, contradiction: Option<String>) -> Vec<Action<O>> {
        match contradiction {
            None => {
                if let State::Joined { verify_at, .. } = &mut self.state {
                    *verify_at = None;
                }
                vec![Action::Say(Message::OfferConfirmed)]
            }
            Some(reason) => {
                self.state = State::Looking;
                vec![Action::Distrust { reason }, Action::Leave, Action::Browse]
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
            own,
            alone_since: Some(since),
            publishing,
            verify_at,
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
            own,
            alone_since: Some(since),
            publishing: true,
            verify_at,
        };
        vec![Action::StartPublishing]
    }
}

#[cfg(test)]
#[path = "auto_tests.rs"]
mod tests;
