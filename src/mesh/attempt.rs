//! The routing side of the [`Mesh`] handle: the replicas of a model ranked for a request
//! (`state::routing` over the peer table, outstanding counts and `state::health`), and the
//! [`Attempt`] guard through which the forwarder reports how each try went. Outcomes feed the
//! health table; every recorded outcome wakes requests waiting for a host's trial. Which host
//! got which prompt prefix is remembered (`state::affinity`) so the next request sharing it
//! prefers that host's KV cache.

use std::sync::Arc;
use std::time::Instant;

use iroh::EndpointId;
use tokio::sync::watch;

use super::state::affinity::PrefixKey;
use super::state::health::{Outcome, Standing};
use super::state::routing::{self, Candidate, Need, Pick};
use super::{Mesh, Shared};

/// What [`Mesh::pick`] decided.
pub enum Picked {
    /// Send the request to this host (its announced context is `ctx`); report on the guard.
    Host { attempt: Attempt, ctx: u32 },
    /// Every remaining host is half-open with its trial running: wait for
    /// [`Mesh::watch_health`] to change, then pick again.
    Wait,
    /// No host left.
    Nothing,
}

impl Mesh {
    /// Replicas of `model`, best first, leaving out `tried`.
    pub fn hosts_for(&self, model: &str, tried: &[EndpointId], need: &Need) -> Vec<Candidate> {
        let mut candidates = self.candidates(model, tried);
        let now = Instant::now();
        if let Ok(health) = self.shared.health.lock() {
            for c in &mut candidates {
                c.health = health.standing(&c.id, now);
            }
        }
        routing::rank(candidates, need)
    }

    /// Chooses the host for the next try of a request (`state::routing::pick`) and, in the
    /// same step, counts the request against it: two requests never take one trial.
    pub fn pick(
        &self,
        model: &str,
        tried: &[EndpointId],
        need: &Need,
        waited_enough: bool,
    ) -> Picked {
        let mut candidates = self.candidates(model, tried);
        let now = Instant::now();
        let mut health = self.shared.health.lock().unwrap_or_else(|e| e.into_inner());
        for c in &mut candidates {
            c.health = health.standing(&c.id, now);
        }
        let ranked = routing::rank(candidates, need);
        let peer = match routing::pick(&ranked, waited_enough) {
            Pick::Host(peer) => peer,
            Pick::Wait => return Picked::Wait,
            Pick::Nothing => return Picked::Nothing,
        };
        health.begin(peer, now);
        drop(health);
        if let Ok(mut o) = self.shared.outstanding.lock() {
            *o.entry(peer).or_default() += 1;
        }
        let ctx = ranked.iter().find(|c| c.id == peer).map_or(0, |c| c.ctx);
        let attempt = Attempt {
            shared: self.shared.clone(),
            peer,
            started: now,
            answered: false,
            ended: false,
        };
        Picked::Host { attempt, ctx }
    }

    /// The replica of `model` that probably holds the longest prefix of the prompt keyed `key`
    /// in its KV cache (it got the last request with that prefix), if any serves `model` now.
    pub fn prefix_host(&self, model: &str, key: &PrefixKey) -> Option<EndpointId> {
        if key.is_empty() {
            return None;
        }
        let hosts: Vec<EndpointId> = self.candidates(model, &[]).iter().map(|c| c.id).collect();
        let table = self.shared.affinity.lock().ok()?;
        table
            .lookup(key, Instant::now(), |h| hosts.contains(h))
            .map(|(host, _)| host)
    }

    /// The prompt keyed `key` was sent to `host`: later ones sharing its prefix prefer it.
    pub fn remember_prefix(&self, key: &PrefixKey, host: EndpointId) {
        if let Ok(mut table) = self.shared.affinity.lock() {
            table.record(key, host, Instant::now());
        }
    }

    /// Changes (its value counts them) whenever an outcome is recorded or a trial released.
    pub fn watch_health(&self) -> watch::Receiver<u64> {
        self.shared.health_changed.subscribe()
    }

    /// The replicas of `model` not in `tried`, health not yet filled in.
    fn candidates(&self, model: &str, tried: &[EndpointId]) -> Vec<Candidate> {
        let outstanding = self
            .shared
            .outstanding
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        self.shared.with_table(|t| {
            t.hosts_of(model)
                .filter(|p| !tried.contains(&p.ann.node))
                .filter_map(|p| {
                    let offer = p.ann.models.iter().find(|m| m.name == model)?;
                    let id = p.ann.node;
                    Some(Candidate {
                        id,
                        outstanding: outstanding.get(&id).copied().unwrap_or(0),
                        rtt: p.rtt,
                        ctx: offer.ctx,
                        free_slots: offer.free_slots,
                        health: Standing::UNKNOWN,
                    })
                })
                .collect()
        })
    }
}

/// One request to one host. Report [`Attempt::answered`] when its response began properly,
/// then [`Attempt::completed`] or [`Attempt::failed`]; each counts once. Dropped without an
/// outcome (the client went away), it only frees the host's trial.
pub struct Attempt {
    shared: Arc<Shared>,
    peer: EndpointId,
    started: Instant,
    answered: bool,
    ended: bool,
}

impl Attempt {
    pub fn peer(&self) -> EndpointId {
        self.peer
    }

    /// The response began properly (head and first bytes valid): the host is alive.
    pub fn answered(&mut self) {
        if !self.answered && !self.ended {
            self.answered = true;
            let latency = self.started.elapsed();
            self.record(Outcome::Answered { latency });
        }
    }

    /// The response ended properly.
    pub fn completed(&mut self) {
        if !self.ended {
            self.ended = true;
            self.record(Outcome::Completed);
        }
    }

    /// 5xx, a timeout, a broken or stalled stream, or garbage.
    pub fn failed(&mut self) {
        if !self.ended {
            self.ended = true;
            self.record(Outcome::Failed);
        }
    }

    fn record(&self, outcome: Outcome) {
        if let Ok(mut h) = self.shared.health.lock() {
            h.record(self.peer, outcome, Instant::now());
        }
        self.shared
            .health_changed
            .send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Ok(mut o) = self.shared.outstanding.lock() {
            if let Some(n) = o.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.remove(&self.peer);
                }
            }
        }
        if !self.answered && !self.ended {
            if let Ok(mut h) = self.shared.health.lock() {
                h.release_trial(&self.peer);
            }
            self.shared
                .health_changed
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
