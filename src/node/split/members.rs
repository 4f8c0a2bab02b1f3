//! Split serving's view of the members (pure): who may lend memory to a split, and whether this
//! node is the one that hosts an automatic split (`catalog::elect` over the announcements read
//! through the peer table, `Mesh::peers`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::catalog::elect::elect;
use crate::catalog::split::Member;
use crate::mesh::PeerView;

/// A peer as the plan and the election see it: its announced free memory and speed.
pub fn member(p: &PeerView) -> Member {
    Member {
        id: p.node_id.clone(),
        free_bytes: p.split.free_memory_bytes,
        tokens_per_second: p.tokens_per_second,
        memory_bandwidth: p.split.memory_bandwidth,
        rtt: p.rtt_ms.map(|ms| ms / 1000.0),
    }
}

/// Peers that lend memory to splits, except those in `skip` (they refused lately).
pub fn lenders(peers: &[PeerView], skip: impl Fn(&str) -> bool) -> Vec<Member> {
    peers
        .iter()
        .filter(|p| p.split.lends && p.split.free_memory_bytes > 0 && !skip(&p.node_id))
        .map(member)
        .collect()
}

/// Whether this node (`me`) hosts the split of `model` (needing `need` bytes) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This node is elected: it plans and starts the split.
    Host,
    /// Another node serves the model already (a split is never pre-empted).
    ServedBy(String),
    /// Another member that wants the model is elected.
    Elected(String),
    /// No candidate has free memory.
    NoCandidate,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Host => f.write_str("this node is elected to host it"),
            Verdict::ServedBy(id) => write!(f, "{} serves it", short(id)),
            Verdict::Elected(id) => write!(f, "{} is elected to host it", short(id)),
            Verdict::NoCandidate => f.write_str("no member that wants it has free memory"),
        }
    }
}

/// The election as this node sees it: the candidates are `me` and the peers that announce
/// they want `model` split, except those in `passed_over` (elected before and did not serve
/// it); a peer serving `model` already settles it.
pub fn verdict(
    model: &str,
    need: u64,
    me: &Member,
    peers: &[PeerView],
    passed_over: impl Fn(&str) -> bool,
) -> Verdict {
    if let Some(p) = peers
        .iter()
        .find(|p| p.models.iter().any(|m| m.name == model))
    {
        return Verdict::ServedBy(p.node_id.clone());
    }
    let mut wanting: Vec<Member> = peers
        .iter()
        .filter(|p| p.node_id != me.id && !passed_over(&p.node_id))
        .filter(|p| p.split.wants.iter().any(|w| w == model))
        .map(member)
        .collect();
    wanting.push(me.clone());
    match elect(need, &wanting) {
        Some(m) if m.id == me.id => Verdict::Host,
        Some(m) => Verdict::Elected(m.id.clone()),
        None => Verdict::NoCandidate,
    }
}

/// An elected host that has not served the model this long after its election is passed
/// over (left out of this node's elections for [`PASSED_OVER_FOR`]): a member that claims
/// much memory but never hosts cannot hold the model back. Generous: a split's first load
/// on slow machines takes minutes.
pub const HOST_GRACE: Duration = Duration::from_secs(300);
pub const PASSED_OVER_FOR: Duration = Duration::from_secs(3600);

/// What this node remembers of the elections it saw (see [`HOST_GRACE`]).
#[derive(Debug, Default)]
pub struct Election {
    /// The member elected now, and since when (while it does not serve the model).
    waiting_for: Option<(String, Instant)>,
    /// Members passed over, and since when.
    passed_over: HashMap<String, Instant>,
}

impl Election {
    /// Drops members passed over longer than [`PASSED_OVER_FOR`] ago.
    pub fn forget(&mut self, now: Instant) {
        self.passed_over
            .retain(|_, at| now.saturating_duration_since(*at) < PASSED_OVER_FOR);
    }

    pub fn is_passed_over(&self, id: &str) -> bool {
        self.passed_over.contains_key(id)
    }

    /// Notes the verdict at `now`; the member passed over now, if any (elected for
    /// [`HOST_GRACE`] without serving the model).
    pub fn observe(&mut self, verdict: &Verdict, now: Instant) -> Option<String> {
        let Verdict::Elected(id) = verdict else {
            self.waiting_for = None;
            return None;
        };
        let since = match &self.waiting_for {
            Some((who, at)) if who == id => *at,
            _ => {
                self.waiting_for = Some((id.clone(), now));
                now
            }
        };
        if now.saturating_duration_since(since) < HOST_GRACE {
            return None;
        }
        self.waiting_for = None;
        self.passed_over.insert(id.clone(), now);
        Some(id.clone())
    }
}

/// The first ten characters of a node id, for logs.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::state::peers::ConnType;
    use crate::mesh::{ModelOffer, Role, SplitOffer};

    fn peer(id: &str, free: u64, lends: bool, wants: &[&str], serves: &[&str]) -> PeerView {
        PeerView {
            node_id: id.into(),
            name: id.into(),
            role: Role::Client,
            region: None,
            models: serves
                .iter()
                .map(|m| ModelOffer {
                    name: (*m).into(),
                    free_slots: 1,
                    slots: 1,
                    ctx: 512,
                })
                .collect(),
            connection: ConnType::Direct,
            rtt_ms: None,
            trying_direct: false,
            queue_depth: 0,
            tokens_per_second: 0.0,
            memory_bytes: free,
            last_seen_ms: 0,
            shares: vec![],
            split: SplitOffer {
                lends,
                free_memory_bytes: free,
                memory_bandwidth: 1,
                wants: wants.iter().map(|w| (*w).into()).collect(),
            },
        }
    }

    fn none(_: &str) -> bool {
        false
    }

    fn me(free: u64) -> Member {
        Member {
            id: "m".into(),
            free_bytes: free,
            tokens_per_second: 0.0,
            memory_bandwidth: 1,
            rtt: None,
        }
    }

    #[test]
    fn only_lending_peers_with_free_memory_are_workers_and_refusers_are_skipped() {
        let peers = [
            peer("a", 10, true, &[], &[]),
            peer("b", 10, false, &[], &[]),
            peer("c", 0, true, &[], &[]),
            peer("d", 10, true, &[], &[]),
        ];
        let ids: Vec<_> = lenders(&peers, |id| id == "d")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn the_member_wanting_the_model_with_most_memory_hosts_and_the_others_stand_by() {
        let peers = [
            peer("a", 300, true, &["big"], &[]),
            peer("b", 900, true, &[], &[]),
        ];
        // b has more memory but does not want the model: it is no candidate.
        assert_eq!(verdict("big", 1600, &me(500), &peers, none), Verdict::Host);
        assert_eq!(
            verdict("big", 1600, &me(200), &peers, none),
            Verdict::Elected("a".into())
        );
        // Wanting another model does not count.
        assert_eq!(
            verdict("other", 1600, &me(200), &peers, none),
            Verdict::Host
        );
        assert_eq!(
            verdict("big", 1600, &me(0), &[], none),
            Verdict::NoCandidate
        );
    }

    #[test]
    fn a_member_passed_over_is_no_candidate_so_a_liar_cannot_hold_the_model_back() {
        // "a" claims the most memory and wants the model, but never serves it.
        let peers = [
            peer("a", 1600, true, &["big"], &[]),
            peer("b", 700, true, &["big"], &[]),
        ];
        assert_eq!(
            verdict("big", 1600, &me(500), &peers, none),
            Verdict::Elected("a".into())
        );
        assert_eq!(
            verdict("big", 1600, &me(500), &peers, |id| id == "a"),
            Verdict::Elected("b".into())
        );
        assert_eq!(
            verdict("big", 1600, &me(500), &peers, |id| id != "m"),
            Verdict::Host
        );
    }

    #[test]
    fn an_elected_member_that_does_not_serve_within_the_grace_is_passed_over_for_a_while() {
        let t = Instant::now();
        let mut e = Election::default();
        let a = Verdict::Elected("a".into());
        assert_eq!(e.observe(&a, t), None);
        assert_eq!(e.observe(&a, t + HOST_GRACE / 2), None);
        // Serving it (or another verdict) restarts the wait.
        assert_eq!(
            e.observe(&Verdict::ServedBy("a".into()), t + HOST_GRACE / 2),
            None
        );
        assert_eq!(e.observe(&a, t + HOST_GRACE), None);
        assert_eq!(e.observe(&a, t + 2 * HOST_GRACE), Some("a".into()));
        assert!(e.is_passed_over("a") && !e.is_passed_over("b"));
        e.forget(t + 2 * HOST_GRACE + PASSED_OVER_FOR);
        assert!(!e.is_passed_over("a"));
    }

    #[test]
    fn a_model_served_already_is_not_split_again() {
        let peers = [peer("s", 0, false, &[], &["big"])];
        assert_eq!(
            verdict("big", 1600, &me(900), &peers, none),
            Verdict::ServedBy("s".into())
        );
    }
}
