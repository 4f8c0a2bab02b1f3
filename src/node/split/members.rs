//! Split serving's view of the members (pure): who may lend memory to a split, and whether this
//! node is the one that hosts an automatic split (`catalog::elect` over the announcements read
//! through the peer table, `Mesh::peers`).

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
/// they want `model` split; a peer serving `model` already settles it.
pub fn verdict(model: &str, need: u64, me: &Member, peers: &[PeerView]) -> Verdict {
    if let Some(p) = peers
        .iter()
        .find(|p| p.models.iter().any(|m| m.name == model))
    {
        return Verdict::ServedBy(p.node_id.clone());
    }
    let mut wanting: Vec<Member> = peers
        .iter()
        .filter(|p| p.node_id != me.id && p.split.wants.iter().any(|w| w == model))
        .map(member)
        .collect();
    wanting.push(me.clone());
    match elect(need, &wanting) {
        Some(m) if m.id == me.id => Verdict::Host,
        Some(m) => Verdict::Elected(m.id.clone()),
        None => Verdict::NoCandidate,
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

    fn me(free: u64) -> Member {
        Member {
            id: "m".into(),
            free_bytes: free,
            tokens_per_second: 0.0,
            memory_bandwidth: 1,
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
        assert_eq!(verdict("big", 1600, &me(500), &peers), Verdict::Host);
        assert_eq!(
            verdict("big", 1600, &me(200), &peers),
            Verdict::Elected("a".into())
        );
        // Wanting another model does not count.
        assert_eq!(verdict("other", 1600, &me(200), &peers), Verdict::Host);
        assert_eq!(verdict("big", 1600, &me(0), &[]), Verdict::NoCandidate);
    }

    #[test]
    fn a_model_served_already_is_not_split_again() {
        let peers = [peer("s", 0, false, &[], &["big"])];
        assert_eq!(
            verdict("big", 1600, &me(900), &peers),
            Verdict::ServedBy("s".into())
        );
    }
}
