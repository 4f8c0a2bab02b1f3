//! A node back from being cut off checks its table against its new neighbour's roster (pure).
//! While it had no gossip neighbour it heard no `Down` report, and a roster only adds members:
//! a member that died meanwhile would stay in its table until expiry (25 minutes). So the
//! first roster after being cut off (`RosterCue::Back`) is also a list: a member of the table
//! that the roster does not list, other than the roster's sender and this node's neighbours, is
//! dialled (a probe, as for a lost connection, at most `liveness::MAX_PROBES` at once); no
//! answer within `Timers::probe` drops it and tells the mesh. A member only missing from the
//! neighbour's table answers the dial and stays.

use std::collections::BTreeSet;

use iroh::EndpointId;

#[derive(Debug, Default)]
pub struct CatchUp {
    /// The neighbour whose roster is awaited, and the members it listed so far.
    from: Option<EndpointId>,
    listed: BTreeSet<EndpointId>,
}

impl CatchUp {
    /// The roster of `from` was asked for, the node being back from being cut off.
    pub fn asked(&mut self, from: EndpointId) {
        self.from = Some(from);
        self.listed.clear();
    }

    /// A roster after being cut off is awaited (the ask may have failed: a retry of another
    /// neighbour's takes its place).
    pub fn awaiting(&self) -> bool {
        self.from.is_some()
    }

    /// Members listed so far (at most a roster's `proto::roster::MAX_FRAMES`).
    pub fn listed_len(&self) -> usize {
        self.listed.len()
    }

    /// `from`'s roster lists `node` (an announcement whose author is `node`).
    pub fn listed(&mut self, from: EndpointId, node: EndpointId) {
        if self.from == Some(from) {
            self.listed.insert(node);
        }
    }

    /// `from`'s roster has ended: the members of `table` it did not list, except those
    /// `skip` names (this node, its neighbours); nothing when this was not the roster awaited.
    pub fn ended(
        &mut self,
        from: EndpointId,
        table: impl IntoIterator<Item = EndpointId>,
        skip: impl Fn(&EndpointId) -> bool,
    ) -> Vec<EndpointId> {
        if self.from != Some(from) {
            return Vec::new();
        }
        self.from = None;
        let listed = std::mem::take(&mut self.listed);
        table
            .into_iter()
            .filter(|id| *id != from && !listed.contains(id) && !skip(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    fn id() -> EndpointId {
        SecretKey::generate().public()
    }

    #[test]
    fn members_the_awaited_roster_did_not_list_are_named_once_and_other_rosters_name_none() {
        let (n, other) = (id(), id());
        let (a, b, c, neighbour) = (id(), id(), id(), id());
        let table = [n, a, b, c, neighbour];
        let mut cu = CatchUp::default();
        // No roster awaited: nothing.
        assert!(cu.ended(n, table, |_| false).is_empty());
        cu.asked(n);
        cu.listed(n, a);
        cu.listed(other, b); // another neighbour's roster does not count
        assert!(cu.ended(other, table, |_| false).is_empty());
        let mut unlisted = cu.ended(n, table, |id| *id == neighbour);
        unlisted.sort_unstable();
        let mut expected = vec![b, c];
        expected.sort_unstable();
        assert_eq!(unlisted, expected);
        // Once only.
        assert!(cu.ended(n, table, |_| false).is_empty());
    }
}
