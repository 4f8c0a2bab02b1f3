//! Which replica gets a request, and what to do when none may take it now. Pure.
//!
//! Replicas are ranked by, in order:
//! 1. health availability ([`Availability`]): ready hosts, then half-open hosts whose one trial
//!    is running, then open breakers (a last resort);
//! 2. context: replicas no larger than a context that already refused the prompt last (not left
//!    out: a replica may announce a context it does not have), then replicas whose announced
//!    `ctx` fits the prompt's estimated tokens first;
//! 3. free slots: replicas announcing a free slot first;
//! 4. error rate: hosts above [`SUSPECT_ERROR_RATE`] after the others;
//! 5. prefix affinity: the host that probably holds the prompt's prefix in its KV cache
//!    ([`Need::prefers`], from `affinity`) first, while this node has fewer requests in flight
//!    to it than it announced free slots (a burst of one conversation still spreads);
//! 6. the fewest outstanding requests from this node, then hosts that have answered before
//!    unproven ones, then the lowest RTT (unknown last), then the lowest average latency, then
//!    the node id so the order is stable.

use std::time::Duration;

use iroh::EndpointId;

use super::health::{Availability, Standing, SUSPECT_ERROR_RATE};

/// Bytes of prompt text counted as one token when the exact count is unknown (the forwarding
/// node has no tokenizer for a model it does not serve). English averages about 4 bytes a
/// token; counting 3 overestimates, so in doubt the prompt goes to the larger context.
pub const BYTES_PER_TOKEN_ESTIMATE: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: EndpointId,
    /// Requests this node has in flight to the candidate.
    pub outstanding: usize,
    pub rtt: Option<Duration>,
    /// The model's context per sequence on this replica, in tokens (as announced).
    pub ctx: u32,
    /// The replica's slots not decoding right now (as announced).
    pub free_slots: u32,
    pub health: Standing,
}

/// What the prompt needs of a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    /// Estimated prompt tokens (see [`estimate_tokens`]).
    pub tokens: u32,
    /// A replica announcing this context refused the prompt as too long: larger ones first.
    pub refused_ctx: u32,
    /// The replica that probably holds the prompt's prefix in its KV cache (`affinity`).
    pub prefers: Option<EndpointId>,
}

/// A conservative token count for `bytes` of prompt text: more tokens than usual.
pub fn estimate_tokens(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(BYTES_PER_TOKEN_ESTIMATE)).unwrap_or(u32::MAX)
}

/// Candidates in the order to try them.
pub fn rank(mut candidates: Vec<Candidate>, need: &Need) -> Vec<Candidate> {
    candidates.sort_by_key(|c| {
        (
            need.refused_ctx > 0 && c.ctx <= need.refused_ctx,
            c.health.availability,
            need.tokens >= c.ctx,
            c.free_slots == 0,
            c.health.error_rate > SUSPECT_ERROR_RATE,
            !(need.prefers == Some(c.id) && c.outstanding < c.free_slots as usize),
            c.outstanding,
            !c.health.proven,
            c.rtt.unwrap_or(Duration::MAX),
            c.health.latency.unwrap_or(Duration::ZERO),
            c.id,
        )
    });
    candidates
}

/// What the forwarder does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Send the request to this host.
    Host(EndpointId),
    /// Every remaining host is half-open with its trial running: wait for a trial's outcome
    /// (rather than pile requests onto unproven hosts), then pick again.
    Wait,
    /// No host left.
    Nothing,
}

/// The choice among `ranked` (from [`rank`]): the best ready host; else wait for a running
/// trial unless `waited_enough`; else a busy or open host as a last resort.
pub fn pick(ranked: &[Candidate], waited_enough: bool) -> Pick {
    let Some(best) = ranked.first() else {
        return Pick::Nothing;
    };
    match best.health.availability {
        Availability::Ready => Pick::Host(best.id),
        Availability::Busy if !waited_enough => Pick::Wait,
        Availability::Busy | Availability::Open => Pick::Host(best.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EndpointId {
        iroh::SecretKey::generate().public()
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn cand(id: EndpointId, outstanding: usize, rtt: Option<Duration>) -> Candidate {
        Candidate {
            id,
            outstanding,
            rtt,
            ctx: 4096,
            free_slots: 1,
            health: Standing::UNKNOWN,
        }
    }

    fn ids(ranked: Vec<Candidate>) -> Vec<EndpointId> {
        ranked.into_iter().map(|c| c.id).collect()
    }

    fn with(availability: Availability, error_rate: f64) -> Standing {
        Standing {
            availability,
            proven: availability == Availability::Ready,
            error_rate,
            latency: None,
        }
    }

    #[test]
    fn least_outstanding_wins_then_rtt() {
        let (a, b, c) = (id(), id(), id());
        let ranked = rank(
            vec![cand(a, 2, ms(1)), cand(b, 1, ms(50)), cand(c, 1, ms(5))],
            &Need::default(),
        );
        assert_eq!(ids(ranked), vec![c, b, a]);
    }

    #[test]
    fn unknown_rtt_goes_last_among_equals() {
        let (a, b) = (id(), id());
        let ranked = rank(
            vec![cand(a, 0, None), cand(b, 0, ms(100))],
            &Need::default(),
        );
        assert_eq!(ids(ranked), vec![b, a]);
        assert!(rank(Vec::new(), &Need::default()).is_empty());
    }

    #[test]
    fn a_failing_host_goes_after_healthy_ones_however_idle_it_is() {
        let (bad, suspect, good) = (id(), id(), id());
        let ranked = rank(
            vec![
                Candidate {
                    health: with(Availability::Open, 1.0),
                    ..cand(bad, 0, ms(1))
                },
                Candidate {
                    health: with(Availability::Ready, 0.4),
                    ..cand(suspect, 0, ms(1))
                },
                cand(good, 9, ms(50)),
            ],
            &Need::default(),
        );
        assert_eq!(ids(ranked), vec![good, suspect, bad]);
    }

    #[test]
    fn a_prompt_goes_to_a_replica_whose_context_fits() {
        let (small, large) = (id(), id());
        let candidates = vec![
            Candidate {
                ctx: 256,
                ..cand(small, 0, ms(1))
            },
            Candidate {
                ctx: 4096,
                ..cand(large, 5, ms(50))
            },
        ];
        let short = Need {
            tokens: estimate_tokens(30),
            refused_ctx: 0,
            ..Need::default()
        };
        assert_eq!(ids(rank(candidates.clone(), &short)), vec![small, large]);
        let long = Need {
            tokens: estimate_tokens(3000),
            refused_ctx: 0,
            ..Need::default()
        };
        assert_eq!(ids(rank(candidates.clone(), &long)), vec![large, small]);
        // The small one refused a short-looking prompt: larger contexts first, however busy.
        let refused = Need {
            tokens: 0,
            refused_ctx: 256,
            ..Need::default()
        };
        assert_eq!(ids(rank(candidates, &refused)), vec![large, small]);
    }

    #[test]
    fn replicas_with_free_slots_come_first() {
        let (full, free) = (id(), id());
        let ranked = rank(
            vec![
                Candidate {
                    free_slots: 0,
                    ..cand(full, 0, ms(1))
                },
                cand(free, 3, ms(40)),
            ],
            &Need::default(),
        );
        assert_eq!(ids(ranked), vec![free, full]);
    }

    #[test]
    fn requests_wait_for_a_running_trial_then_fall_back_to_the_last_resort() {
        let (busy, open) = (id(), id());
        let ranked = rank(
            vec![
                Candidate {
                    health: with(Availability::Open, 1.0),
                    ..cand(open, 0, ms(1))
                },
                Candidate {
                    health: with(Availability::Busy, 0.0),
                    ..cand(busy, 1, ms(1))
                },
            ],
            &Need::default(),
        );
        assert_eq!(pick(&ranked, false), Pick::Wait);
        assert_eq!(pick(&ranked, true), Pick::Host(busy));
        assert_eq!(pick(&ranked[1..], false), Pick::Host(open));
        assert_eq!(pick(&[], false), Pick::Nothing);
    }

    #[test]
    fn a_proven_host_wins_a_tie_but_not_over_load() {
        let (new, old) = (id(), id());
        let proven = Candidate {
            health: with(Availability::Ready, 0.0),
            ..cand(old, 0, ms(50))
        };
        let ranked = rank(vec![cand(new, 0, ms(1)), proven], &Need::default());
        assert_eq!(ids(ranked), vec![old, new]);
        let busier = Candidate {
            outstanding: 1,
            ..proven
        };
        let ranked = rank(vec![cand(new, 0, ms(1)), busier], &Need::default());
        assert_eq!(ids(ranked), vec![new, old]);
    }

    #[test]
    fn the_replica_holding_the_prefix_wins_over_a_less_busy_one_while_it_has_room() {
        let (holder, idle) = (id(), id());
        let proven = with(Availability::Ready, 0.0);
        let candidates = |outstanding| {
            vec![
                Candidate {
                    free_slots: 2,
                    health: proven,
                    ..cand(holder, outstanding, ms(50))
                },
                Candidate {
                    free_slots: 2,
                    health: proven,
                    ..cand(idle, 0, ms(1))
                },
            ]
        };
        let need = Need {
            prefers: Some(holder),
            ..Need::default()
        };
        assert_eq!(
            ids(rank(candidates(0), &Need::default())),
            vec![idle, holder]
        );
        assert_eq!(ids(rank(candidates(0), &need)), vec![holder, idle]);
        assert_eq!(ids(rank(candidates(1), &need)), vec![holder, idle]);
        // As many requests in flight to it as it had free slots: load wins again.
        assert_eq!(ids(rank(candidates(2), &need)), vec![idle, holder]);
        // A preference for a host that is not a candidate changes nothing.
        let elsewhere = Need {
            prefers: Some(id()),
            ..Need::default()
        };
        assert_eq!(ids(rank(candidates(0), &elsewhere)), vec![idle, holder]);
    }

    #[test]
    fn affinity_never_beats_health_context_or_a_full_replica() {
        let (holder, other) = (id(), id());
        let need = Need {
            tokens: 100,
            prefers: Some(holder),
            ..Need::default()
        };
        let other_c = cand(other, 3, ms(40));
        for holder_c in [
            Candidate {
                health: with(Availability::Open, 1.0),
                ..cand(holder, 0, ms(1))
            },
            Candidate {
                health: with(Availability::Ready, 0.4),
                ..cand(holder, 0, ms(1))
            },
            Candidate {
                free_slots: 0,
                ..cand(holder, 0, ms(1))
            },
            Candidate {
                ctx: 16,
                ..cand(holder, 0, ms(1))
            },
        ] {
            assert_eq!(
                ids(rank(vec![holder_c, other_c], &need)),
                vec![other, holder],
                "{holder_c:?}"
            );
        }
    }

    #[test]
    fn token_estimates_overcount_and_saturate() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(4), 2);
        assert_eq!(estimate_tokens(usize::MAX), u32::MAX);
    }
}
