//! Split serving, the worker's side: which host may use this node's RPC server (pure). One
//! host at a time (llama.cpp's RPC server serves one client at a time, and holds that client's
//! tensors): a host asks to lend (`mesh/rpc/1` `lend`), then opens pipes. The lease passes to
//! another host only once the holder has no pipe open and has been idle for [`LEASE_IDLE`]
//! (a host that gave up needs no release message), or at once when its pipes are closed and
//! membership saw the holder leave or die ([`Lease::holder_left`]): a split re-planned on
//! another host after its host died need not wait out the idle time.

use std::time::{Duration, Instant};

/// How long a lease with no pipe open stays with its host before another may take it.
pub const LEASE_IDLE: Duration = Duration::from_secs(30);
/// Pipes one host may hold open at once (llama.cpp opens one per server; a few for reconnects).
pub const MAX_PIPES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another host holds the lease.
    Busy,
    /// This host has no lease (or lost it).
    NoLease,
    /// Over [`MAX_PIPES`].
    TooManyPipes,
}

/// The lease of one worker.
#[derive(Debug, Clone)]
pub struct Lease<Id> {
    holder: Option<Id>,
    pipes: usize,
    /// When the last pipe closed or the lease was granted.
    idle_since: Option<Instant>,
    /// Membership saw the holder leave the mesh (or die) since it took the lease.
    left: bool,
}

impl<Id> Default for Lease<Id> {
    fn default() -> Self {
        Self {
            holder: None,
            pipes: 0,
            idle_since: None,
            left: false,
        }
    }
}

impl<Id: PartialEq + Clone> Lease<Id> {
    /// `who` asks to use this worker.
    pub fn lend(&mut self, who: &Id, now: Instant) -> Result<(), Refusal> {
        let free = match &self.holder {
            None => true,
            Some(h) if h == who => true,
            Some(_) => {
                self.pipes == 0
                    && (self.left
                        || self
                            .idle_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= LEASE_IDLE))
            }
        };
        if !free {
            return Err(Refusal::Busy);
        }
        if self.holder.as_ref() != Some(who) {
            self.pipes = 0;
        }
        self.holder = Some(who.clone());
        self.left = false;
        if self.pipes == 0 {
            self.idle_since = Some(now);
        }
        Ok(())
    }

    /// `who` opens a pipe to the RPC server; [`Lease::close_pipe`] when it ends.
    pub fn open_pipe(&mut self, who: &Id) -> Result<(), Refusal> {
        if self.holder.as_ref() != Some(who) {
            return Err(Refusal::NoLease);
        }
        if self.pipes >= MAX_PIPES {
            return Err(Refusal::TooManyPipes);
        }
        self.pipes += 1;
        self.idle_since = None;
        Ok(())
    }

    pub fn close_pipe(&mut self, now: Instant) {
        self.pipes = self.pipes.saturating_sub(1);
        if self.pipes == 0 {
            self.idle_since = Some(now);
        }
    }

    /// `who` left the mesh or died (membership's verdict). Its pipes still count until they
    /// close (a dead host's do when its connection times out); then the lease is free.
    pub fn holder_left(&mut self, who: &Id) {
        if self.holder.as_ref() == Some(who) {
            self.left = true;
        }
    }

    pub fn holder(&self) -> Option<&Id> {
        self.holder.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_at_a_time_and_only_the_holder_opens_pipes() {
        let t = Instant::now();
        let mut l = Lease::default();
        assert_eq!(l.open_pipe(&"a"), Err(Refusal::NoLease));
        l.lend(&"a", t).unwrap();
        l.lend(&"a", t).unwrap();
        assert_eq!(l.lend(&"b", t), Err(Refusal::Busy));
        assert_eq!(l.open_pipe(&"b"), Err(Refusal::NoLease));
        l.open_pipe(&"a").unwrap();
        // Busy while a pipe is open, however long.
        assert_eq!(l.lend(&"b", t + 10 * LEASE_IDLE), Err(Refusal::Busy));
        l.close_pipe(t + LEASE_IDLE);
        assert_eq!(l.lend(&"b", t + LEASE_IDLE), Err(Refusal::Busy));
        l.lend(&"b", t + 2 * LEASE_IDLE).unwrap();
        assert_eq!(l.holder(), Some(&"b"));
        assert_eq!(l.open_pipe(&"a"), Err(Refusal::NoLease));
    }

    #[test]
    fn the_lease_of_a_host_that_left_passes_on_once_its_pipes_close() {
        let t = Instant::now();
        let mut l = Lease::default();
        l.lend(&"a", t).unwrap();
        l.open_pipe(&"a").unwrap();
        l.holder_left(&"b"); // not the holder: nothing changes
        l.holder_left(&"a");
        // Its pipe is still open (its connection has not timed out yet).
        assert_eq!(l.lend(&"b", t), Err(Refusal::Busy));
        l.close_pipe(t);
        // No idle time to wait out.
        l.lend(&"b", t).unwrap();
        assert_eq!(l.holder(), Some(&"b"));
        // The flag went with the old holder: the new one keeps the lease while idle.
        assert_eq!(l.lend(&"a", t), Err(Refusal::Busy));
        // A host that came back and asks again holds it as before.
        l.holder_left(&"b");
        l.lend(&"b", t).unwrap();
        assert_eq!(l.lend(&"a", t), Err(Refusal::Busy));
    }

    #[test]
    fn pipes_per_host_are_bounded() {
        let t = Instant::now();
        let mut l = Lease::default();
        l.lend(&1, t).unwrap();
        for _ in 0..MAX_PIPES {
            l.open_pipe(&1).unwrap();
        }
        assert_eq!(l.open_pipe(&1), Err(Refusal::TooManyPipes));
        l.close_pipe(t);
        l.open_pipe(&1).unwrap();
    }
}
