//! Which member hosts a split model (pure): every member that wants the model but cannot hold
//! it alone announces so (`Extra::split`, docs/PROTOCOL.md), and each computes the same answer
//! from the same announcements, so exactly one of them starts the split and the others lend
//! their memory to it.
//!
//! The host holds the token embeddings, the output head and its share of the layers, and runs
//! every step's sampling; a host that holds more of the model sends less over the network, and
//! a faster one decodes faster. So, in order:
//! 1. most of the model it can hold: `min(free memory, need)`, counted in steps of
//!    1/[`MEMORY_STEPS`] of the need (members within a step count as equal, so speed decides
//!    between them rather than a few bytes);
//! 2. highest measured memory bandwidth (decode speed on a CPU is memory bound:
//!    `catalog::bandwidth`);
//! 3. highest announced decode speed (tokens per second);
//! 4. lowest node id: a tie never splits the vote.
//!
//! A member with no free memory is never elected.

use std::cmp::Ordering;

use super::split::{faster_first, Member};

/// Steps in which the memory a candidate can hold is compared (see the module doc).
pub const MEMORY_STEPS: u64 = 16;

/// The member of `wanting` that hosts a split of a model needing `need_bytes`; `None` when no
/// member has free memory.
pub fn elect(need_bytes: u64, wanting: &[Member]) -> Option<&Member> {
    wanting
        .iter()
        .filter(|m| m.free_bytes > 0)
        .min_by(|a, b| rank(need_bytes, a, b))
}

/// Better host first.
fn rank(need: u64, a: &Member, b: &Member) -> Ordering {
    held(need, b).cmp(&held(need, a)).then(faster_first(a, b))
}

/// How much of the model `m` can hold, in steps of 1/[`MEMORY_STEPS`] of the need.
fn held(need: u64, m: &Member) -> u64 {
    let step = (need / MEMORY_STEPS).max(1);
    m.free_bytes.min(need) / step
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn m(id: &str, free_mb: u64, bandwidth: u64, tps: f32) -> Member {
        Member {
            id: id.into(),
            free_bytes: free_mb * MB,
            tokens_per_second: tps,
            memory_bandwidth: bandwidth,
            rtt: None,
        }
    }

    fn host(need_mb: u64, members: &[Member]) -> Option<&str> {
        elect(need_mb * MB, members).map(|m| m.id.as_str())
    }

    #[test]
    fn the_member_that_holds_most_of_the_model_hosts() {
        let members = [
            m("a", 400, 9, 9.0),
            m("b", 700, 1, 1.0),
            m("c", 100, 9, 9.0),
        ];
        assert_eq!(host(1600, &members), Some("b"));
    }

    #[test]
    fn within_one_step_of_memory_the_faster_member_hosts() {
        // 1600 MB need: steps of 100 MB; 710 and 790 MB are the same step.
        let members = [m("a", 790, 10, 0.0), m("b", 710, 20, 0.0)];
        assert_eq!(host(1600, &members), Some("b"));
        // Same bandwidth: the announced decode speed decides.
        let members = [m("a", 790, 10, 1.0), m("b", 710, 10, 3.0)];
        assert_eq!(host(1600, &members), Some("b"));
        // Memory beyond the need counts as the need.
        let members = [m("a", 1600, 10, 0.0), m("b", 9000, 5, 0.0)];
        assert_eq!(host(1600, &members), Some("a"));
    }

    #[test]
    fn a_tie_goes_to_the_lowest_node_id_whatever_the_order_of_the_list() {
        let members = [
            m("z", 500, 7, 2.0),
            m("k", 500, 7, 2.0),
            m("q", 500, 7, 2.0),
        ];
        assert_eq!(host(1600, &members), Some("k"));
        let mut reversed = members.clone();
        reversed.reverse();
        assert_eq!(host(1600, &reversed), Some("k"));
        // NaN speeds do not break the order.
        let members = [m("b", 500, 7, f32::NAN), m("a", 500, 7, f32::NAN)];
        assert_eq!(host(1600, &members), Some("a"));
    }

    #[test]
    fn no_member_with_free_memory_elects_no_one() {
        assert_eq!(host(1600, &[]), None);
        assert_eq!(host(1600, &[m("a", 0, 9, 9.0)]), None);
        assert_eq!(
            host(1600, &[m("a", 0, 9, 9.0), m("b", 1, 0, 0.0)]),
            Some("b")
        );
        // A zero need (unknown) still elects deterministically.
        assert_eq!(host(0, &[m("b", 5, 0, 0.0), m("a", 5, 0, 0.0)]), Some("a"));
    }
}
