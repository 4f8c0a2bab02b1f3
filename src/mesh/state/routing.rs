//! Which replica gets a request: the fewest outstanding requests from this node, then the lowest
//! RTT (unknown RTT last), then the node id so the order is stable. Pure.

use std::time::Duration;

use iroh::EndpointId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: EndpointId,
    /// Requests this node has in flight to the candidate.
    pub outstanding: usize,
    pub rtt: Option<Duration>,
}

/// Candidates in the order to try them: the first is chosen, the rest are retries.
pub fn rank(mut candidates: Vec<Candidate>) -> Vec<EndpointId> {
    candidates.sort_by_key(|c| (c.outstanding, c.rtt.unwrap_or(Duration::MAX), c.id));
    candidates.into_iter().map(|c| c.id).collect()
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

    #[test]
    fn least_outstanding_wins_then_rtt() {
        let (a, b, c) = (id(), id(), id());
        let ranked = rank(vec![
            Candidate {
                id: a,
                outstanding: 2,
                rtt: ms(1),
            },
            Candidate {
                id: b,
                outstanding: 1,
                rtt: ms(50),
            },
            Candidate {
                id: c,
                outstanding: 1,
                rtt: ms(5),
            },
        ]);
        assert_eq!(ranked, vec![c, b, a]);
    }

    #[test]
    fn unknown_rtt_goes_last_among_equals() {
        let (a, b) = (id(), id());
        let ranked = rank(vec![
            Candidate {
                id: a,
                outstanding: 0,
                rtt: None,
            },
            Candidate {
                id: b,
                outstanding: 0,
                rtt: ms(100),
            },
        ]);
        assert_eq!(ranked, vec![b, a]);
        assert!(rank(Vec::new()).is_empty());
    }
}
