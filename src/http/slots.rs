//! The local generator's slots, handed out fairly between this node's own users and each peer
//! whose requests arrive over the tunnel ([`crate::mesh::net::tunnel_server::TunnelPeer`]).
//!
//! At most `parallel` requests are in the generator at once; the others wait here, in one queue
//! per [`Origin`] of at most `queue` waiters each (more: 503, as the engine's full queue), and
//! a freed slot goes to the next waiter that [`super::fair::FairQueue`] names. A slot is held by
//! a [`SlotPermit`] for as long as the answer is being produced (until its event stream or SSE
//! body is dropped).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::fair::FairQueue;
use crate::engine::EngineError;
use crate::mesh::net::tunnel_server::TunnelPeer;

/// Whose request it is, for fairness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// This node's own API.
    Local,
    /// A peer, through the tunnel.
    Peer(TunnelPeer),
}

impl Origin {
    /// A request's origin from its tunnel extension (none: local).
    pub fn of(peer: Option<TunnelPeer>) -> Self {
        peer.map_or(Origin::Local, Origin::Peer)
    }
}

type Waiter = oneshot::Sender<SlotPermit>;

struct Inner {
    busy: u32,
    queue: FairQueue<Origin, Waiter>,
}

struct Shared {
    parallel: u32,
    queue: usize,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slots of one generator. Clones share them.
#[derive(Clone)]
pub struct Slots(Arc<Shared>);

/// One slot, held until dropped; then it goes to the next waiter.
pub struct SlotPermit(Option<Arc<Shared>>);

impl Slots {
    /// `parallel` slots, at most `queue` waiters per origin.
    pub fn new(parallel: u32, queue: usize) -> Self {
        Self(Arc::new(Shared {
            parallel,
            queue,
            inner: Mutex::new(Inner {
                busy: 0,
                queue: FairQueue::new(queue),
            }),
        }))
    }

    /// A slot for a request from `origin`: at once when one is free and nobody waits, else
    /// when its turn comes; `Overloaded` when `origin` already has `queue` requests waiting.
    pub async fn acquire(&self, origin: Origin) -> Result<SlotPermit, EngineError> {
        let turn = {
            let mut inner = self.0.lock();
            if inner.busy < self.0.parallel && inner.queue.is_empty() {
                inner.busy += 1;
                return Ok(SlotPermit(Some(self.0.clone())));
            }
            let (tx, rx) = oneshot::channel();
            inner
                .queue
                .push(origin, tx, |w| !w.is_closed())
                .map_err(|_| EngineError::Overloaded {
                    parallel: self.0.parallel,
                    queue: self.0.queue,
                })?;
            rx
        };
        turn.await.map_err(|_| EngineError::ShuttingDown)
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.0.lock().queue.len()
    }

    /// Slots held now.
    pub fn busy(&self) -> u32 {
        self.0.lock().busy
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else { return };
        loop {
            let next = {
                let mut inner = shared.lock();
                match inner.queue.pop() {
                    Some((_, waiter)) => waiter,
                    None => {
                        inner.busy = inner.busy.saturating_sub(1);
                        return;
                    }
                }
            };
            // A waiter that gave up hands the permit back: take it out (so dropping it does
            // not recurse) and try the next.
            match next.send(SlotPermit(Some(shared.clone()))) {
                Ok(()) => return,
                Err(mut unwanted) => drop(unwanted.0.take()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(n: u8) -> Origin {
        Origin::Peer(TunnelPeer(iroh::SecretKey::from_bytes(&[n; 32]).public()))
    }

    async fn no_turn_yet<T>(rx: &mut tokio::task::JoinHandle<T>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), rx)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_freed_slot_goes_round_robin_and_a_local_request_overtakes_a_flood() {
        let slots = Slots::new(1, 8);
        let held = slots.acquire(peer(1)).await.unwrap();
        let mut flood: Vec<_> = (0..5)
            .map(|_| {
                let s = slots.clone();
                tokio::spawn(async move { s.acquire(peer(1)).await })
            })
            .collect();
        tokio::task::yield_now().await;
        while slots.waiting() < 5 {
            tokio::task::yield_now().await;
        }
        let s = slots.clone();
        let mut local = tokio::spawn(async move { s.acquire(Origin::Local).await });
        while slots.waiting() < 6 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let first = (&mut flood[0]).await.unwrap().unwrap();
        assert!(no_turn_yet(&mut local).await);
        drop(first);
        let mine = (&mut local).await.unwrap().unwrap();
        assert!(no_turn_yet(&mut flood[1]).await, "the flood waits its turn");
        assert_eq!((slots.busy(), slots.waiting()), (1, 4));
        drop(mine);
        for f in flood.drain(1..) {
            drop(f.await.unwrap().unwrap());
        }
        assert_eq!((slots.busy(), slots.waiting()), (0, 0));
    }

    #[tokio::test]
    async fn an_origin_with_a_full_queue_is_refused_and_others_still_queue() {
        let slots = Slots::new(1, 1);
        let _held = slots.acquire(peer(1)).await.unwrap();
        let s = slots.clone();
        let _waiting = tokio::spawn(async move { s.acquire(peer(1)).await });
        while slots.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            slots.acquire(peer(1)).await,
            Err(EngineError::Overloaded { .. })
        ));
        let s = slots.clone();
        tokio::spawn(async move { s.acquire(Origin::Local).await });
        while slots.waiting() < 2 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_keep_the_slot() {
        let slots = Slots::new(1, 4);
        let held = slots.acquire(Origin::Local).await.unwrap();
        let s = slots.clone();
        let gone = tokio::spawn(async move { s.acquire(peer(2)).await });
        while slots.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!((slots.busy(), slots.waiting()), (0, 0));
        let _again = slots.acquire(Origin::Local).await.unwrap();
        assert_eq!(slots.busy(), 1);
    }
}
