//! Who gets the engine's next free slot: round-robin across the classes that have someone
//! waiting ("local", i.e. this node's own users, and each peer of the mesh), oldest first within a
//! class. A peer flooding requests therefore costs a local request at most one turn per other
//! class waiting, however many it queues. Plain data; [`super::slots`] applies it.

use std::collections::VecDeque;

/// Waiters by class, and the order classes take their turns in.
#[derive(Debug)]
pub struct FairQueue<K, W> {
    /// Classes with at least one waiter, the next to be served first; each with its waiters,
    /// oldest first.
    ring: VecDeque<(K, VecDeque<W>)>,
    /// Most waiters one class may have.
    per_class: usize,
}

impl<K: PartialEq, W> FairQueue<K, W> {
    pub fn new(per_class: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            per_class,
        }
    }

    /// Queues `waiter` behind the others of its class; a class new to the ring takes its turn
    /// after every class already waiting. When the class is full, waiters for which `live` is
    /// false are dropped first; if it is still full, `waiter` is handed back.
    pub fn push(&mut self, class: K, waiter: W, live: impl Fn(&W) -> bool) -> Result<(), W> {
        let Some((_, waiters)) = self.ring.iter_mut().find(|(k, _)| *k == class) else {
            if self.per_class == 0 {
                return Err(waiter);
            }
            self.ring.push_back((class, VecDeque::from([waiter])));
            return Ok(());
        };
        if waiters.len() >= self.per_class {
            waiters.retain(&live);
        }
        if waiters.len() >= self.per_class {
            return Err(waiter);
        }
        waiters.push_back(waiter);
        Ok(())
    }

    /// The next waiter: the oldest of the class whose turn it is; that class then goes to the
    /// back of the ring (or leaves it, when it has no one left).
    pub fn pop(&mut self) -> Option<(K, W)>
    where
        K: Clone,
    {
        let (class, mut waiters) = self.ring.pop_front()?;
        let waiter = waiters.pop_front()?;
        let served = class.clone();
        if !waiters.is_empty() {
            self.ring.push_back((class, waiters));
        }
        Some((served, waiter))
    }

    /// Waiters in all classes.
    pub fn len(&self) -> usize {
        self.ring.iter().map(|(_, w)| w.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Waiters of `class`.
    pub fn waiting(&self, class: &K) -> usize {
        self.ring
            .iter()
            .find(|(k, _)| k == class)
            .map_or(0, |(_, w)| w.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: fn(&u32) -> bool = |_| true;

    fn drain(q: &mut FairQueue<&'static str, u32>) -> Vec<(&'static str, u32)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn classes_take_turns_and_each_class_is_served_oldest_first() {
        let mut q = FairQueue::new(10);
        for i in 0..3 {
            q.push("peer-a", i, LIVE).unwrap();
        }
        q.push("local", 10, LIVE).unwrap();
        q.push("peer-b", 20, LIVE).unwrap();
        q.push("local", 11, LIVE).unwrap();
        assert_eq!(
            drain(&mut q),
            [
                ("peer-a", 0),
                ("local", 10),
                ("peer-b", 20),
                ("peer-a", 1),
                ("local", 11),
                ("peer-a", 2)
            ]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn a_local_request_behind_a_flooding_peer_waits_at_most_one_turn_per_waiting_class() {
        let mut q = FairQueue::new(1000);
        for i in 0..1000 {
            q.push("flooder", i, LIVE).unwrap();
        }
        q.push("local", 7, LIVE).unwrap();
        let turns = std::iter::from_fn(|| q.pop())
            .position(|(class, _)| class == "local")
            .unwrap();
        assert_eq!(turns, 1, "one flooder turn, then local");
        // With many peers flooding, the bound is the number of classes ahead of it.
        let mut q = FairQueue::new(1000);
        for peer in ["p1", "p2", "p3"] {
            for i in 0..100 {
                q.push(peer, i, LIVE).unwrap();
            }
        }
        q.push("local", 0, LIVE).unwrap();
        let turns = std::iter::from_fn(|| q.pop())
            .position(|(class, _)| class == "local")
            .unwrap();
        assert_eq!(turns, 3);
    }

    #[test]
    fn a_full_class_is_refused_without_affecting_the_others() {
        let mut q = FairQueue::new(2);
        q.push("flooder", 1, LIVE).unwrap();
        q.push("flooder", 2, LIVE).unwrap();
        assert_eq!(q.push("flooder", 3, LIVE), Err(3));
        assert_eq!(q.push("local", 4, LIVE), Ok(()));
        assert_eq!(
            (q.waiting(&"flooder"), q.waiting(&"local"), q.len()),
            (2, 1, 3)
        );
    }

    #[test]
    fn waiters_that_gave_up_make_room_in_a_full_class() {
        let mut q = FairQueue::new(2);
        q.push("local", 1, LIVE).unwrap();
        q.push("local", 2, LIVE).unwrap();
        assert_eq!(q.push("local", 3, |w| *w != 1), Ok(()));
        assert_eq!(drain(&mut q), [("local", 2), ("local", 3)]);
    }

    #[test]
    fn no_room_means_every_waiter_is_refused() {
        let mut q = FairQueue::new(0);
        assert_eq!(q.push("local", 1, LIVE), Err(1));
        assert_eq!(q.pop(), None);
    }
}
