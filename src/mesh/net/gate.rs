//! The gate: iroh endpoint hooks that keep every protocol but admission closed to nodes that
//! have not proven membership (see `admission`). Protocols behind it (gossip, HTTP tunnel) need
//! no knowledge of secrets.
//!
//! - Incoming: after the TLS handshake, a connection on any ALPN other than `mesh/admit/1`,
//!   `mesh/ping/1` and `mesh/offer/1` is closed with code 403 unless its endpoint id is admitted.
//! - Outgoing: before connecting to a node that is not admitted yet, run the admission handshake
//!   with it (through the admitter task, which owns the endpoint: hooks must not hold one).
//! - Banned nodes (they flooded gossip, see `state::flood`): every connection to or from them
//!   is refused, admission included, until the ban ends; [`Gate::ban`] also closes the ones
//!   open now (gossip's among them), which is how a flooder is dropped as a gossip neighbour.
//!
//! Bounded: at most [`MAX_ADMITTED`] admitted nodes (the one admitted longest ago makes room),
//! and [`Gate::prune`] forgets those admitted more than [`ADMITTED_GRACE`] ago that are not
//! peers, bans that ended and connections that closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::endpoint::{
    AfterHandshakeOutcome, BeforeConnectOutcome, Connection, EndpointHooks, Side,
    WeakConnectionHandle,
};
use iroh::{EndpointAddr, EndpointId};
use tokio::sync::{mpsc, oneshot};

use super::{offer, ping};
use crate::mesh::proto::admission;
use crate::mesh::state::flood::MAX_BANNED;
use crate::mesh::state::peers::MAX_PEERS;

/// Close code for connections from nodes that are not admitted.
pub const NOT_ADMITTED: u32 = 403;
/// Close code for connections of a banned node.
pub const BANNED: u32 = 429;
/// Close code for a gossip connection to a peer that is no gossip neighbour (`Member::strays`).
pub const STRAY: u32 = 410;
/// Most nodes admitted at once.
pub const MAX_ADMITTED: usize = 4 * MAX_PEERS;
/// An admitted node that is not in the peer table this long after its admission is forgotten
/// (it must prove membership again for its next connection).
pub const ADMITTED_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Inner {
    /// Nodes that proved membership, and when.
    admitted: HashMap<EndpointId, Instant>,
    /// Banned nodes, and until when.
    banned: HashMap<EndpointId, Instant>,
    /// Open connections of admitted nodes, and when each opened (to close them on a ban, or
    /// gossip's strays).
    conns: HashMap<EndpointId, Vec<(WeakConnectionHandle, Instant)>>,
    /// This node left its mesh (`mesh leave`): nobody is admitted any more.
    closed: bool,
}

/// The set of nodes that proved membership to us (and to which we proved ours), and of those
/// banned.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    inner: Arc<Mutex<Inner>>,
}

impl Gate {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    pub fn admit(&self, id: EndpointId) {
        let now = Instant::now();
        self.with(|g| {
            if g.closed {
                return;
            }
            if g.banned.get(&id).is_some_and(|&until| now < until) {
                return;
            }
            if !g.admitted.contains_key(&id) && g.admitted.len() >= MAX_ADMITTED {
                let oldest = g
                    .admitted
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    g.admitted.remove(&k);
                }
            }
            g.admitted.insert(id, now);
        })
    }

    /// Forgets a node (it left or expired): it must prove membership again to come back.
    pub fn revoke(&self, id: &EndpointId) {
        self.with(|g| {
            g.admitted.remove(id);
            g.conns.remove(id);
        })
    }

    pub fn is_admitted(&self, id: &EndpointId) -> bool {
        self.with(|g| !g.closed && g.admitted.contains_key(id))
    }

    /// This node left its mesh: forgets every admission, refuses all new ones and closes the
    /// members' open connections (`mesh leave`).
    pub fn close_all(&self) {
        let conns = self.with(|g| {
            g.closed = true;
            g.admitted.clear();
            std::mem::take(&mut g.conns)
        });
        for c in conns.values().flatten().filter_map(|(c, _)| c.upgrade()) {
            c.close(NOT_ADMITTED.into(), b"left the mesh");
        }
    }

    /// Whether [`Gate::close_all`] was called.
    pub fn is_closed(&self) -> bool {
        self.with(|g| g.closed)
    }

    pub fn is_banned(&self, id: &EndpointId) -> bool {
        let now = Instant::now();
        self.with(|g| g.banned.get(id).is_some_and(|&until| now < until))
    }

    /// Refuses `id` until `until` and closes its open connections now.
    pub fn ban(&self, id: EndpointId, until: Instant) {
        let conns = self.with(|g| {
            g.admitted.remove(&id);
            if g.banned.len() >= MAX_BANNED {
                let now = Instant::now();
                g.banned.retain(|_, u| now < *u);
            }
            if g.banned.len() < MAX_BANNED {
                g.banned.insert(id, until);
            }
            g.conns.remove(&id).unwrap_or_default()
        });
        for c in conns.iter().filter_map(|(c, _)| c.upgrade()) {
            c.close(BANNED.into(), b"banned: too many gossip messages");
        }
    }

    /// Forgets admissions older than [`ADMITTED_GRACE`] of nodes that are not peers, ended
    /// bans and closed connections.
    pub fn prune(&self, is_peer: impl Fn(&EndpointId) -> bool, now: Instant) {
        self.with(|g| {
            g.admitted.retain(|id, at| {
                is_peer(id) || now.saturating_duration_since(*at) <= ADMITTED_GRACE
            });
            g.banned.retain(|_, until| now < *until);
            let admitted = &g.admitted;
            g.conns.retain(|id, conns| {
                conns.retain(|(c, _)| is_live(c));
                admitted.contains_key(id) && !conns.is_empty()
            });
        })
    }

    /// Closes every tracked connection on `alpn` (all of gossip's, when its actor stalled:
    /// `net::stall`); returns how many.
    pub fn close_alpn(&self, alpn: &[u8], code: u32, reason: &[u8]) -> usize {
        let conns = self.open_on(alpn);
        for (c, _) in &conns {
            c.close(code.into(), reason);
        }
        conns.len()
    }

    /// The open connections on `alpn`, and when each opened.
    pub fn open_on(&self, alpn: &[u8]) -> Vec<(Connection, Instant)> {
        self.with(|g| {
            g.conns
                .values()
                .flatten()
                .filter_map(|(c, at)| Some((c.upgrade()?, *at)))
                .filter(|(c, _)| c.alpn() == alpn && c.close_reason().is_none())
                .collect()
        })
    }

    /// Entries in each table: admitted, banned, nodes with tracked connections.
    pub fn sizes(&self) -> [usize; 3] {
        self.with(|g| [g.admitted.len(), g.banned.len(), g.conns.len()])
    }

    /// Remembers an accepted connection of an admitted node, to close it on a ban.
    fn track(&self, conn: &Connection) {
        let id = conn.remote_id();
        self.with(|g| {
            if g.admitted.contains_key(&id) {
                let conns = g.conns.entry(id).or_default();
                conns.retain(|(c, _)| is_live(c));
                conns.push((conn.weak_handle(), Instant::now()));
            }
        })
    }
}

fn is_live(c: &WeakConnectionHandle) -> bool {
    c.upgrade().is_some_and(|c| c.close_reason().is_none())
}

/// Protocols open to nodes outside the mesh: admission itself, discovery's ping, the offer.
fn is_open(alpn: &[u8]) -> bool {
    alpn == admission::ALPN || alpn == ping::ALPN || alpn == offer::ALPN
}

/// A node to admit before connecting to it, and where to say whether that worked.
pub type AdmitRequest = (EndpointAddr, oneshot::Sender<bool>);

/// The hooks to install with `Endpoint::builder(..).hooks(..)`.
#[derive(Debug)]
pub struct GateHooks {
    gate: Gate,
    admitter: mpsc::Sender<AdmitRequest>,
}

/// Creates the hooks and the receiving end that `admit::run_admitter` serves once the endpoint
/// exists.
pub fn hooks(gate: Gate) -> (GateHooks, mpsc::Receiver<AdmitRequest>) {
    let (tx, rx) = mpsc::channel(64);
    (GateHooks { gate, admitter: tx }, rx)
}

impl EndpointHooks for GateHooks {
    async fn before_connect<'a>(
        &'a self,
        remote: &'a EndpointAddr,
        alpn: &'a [u8],
    ) -> BeforeConnectOutcome {
        if self.gate.is_banned(&remote.id) && alpn != ping::ALPN {
            return BeforeConnectOutcome::Reject;
        }
        if is_open(alpn) || self.gate.is_admitted(&remote.id) {
            return BeforeConnectOutcome::Accept;
        }
        if self.gate.is_closed() {
            return BeforeConnectOutcome::Reject;
        }
        let (tx, rx) = oneshot::channel();
        if self.admitter.send((remote.clone(), tx)).await.is_err() {
            return BeforeConnectOutcome::Reject;
        }
        match rx.await {
            Ok(true) => BeforeConnectOutcome::Accept,
            _ => BeforeConnectOutcome::Reject,
        }
    }

    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        let open = is_open(conn.alpn());
        if self.gate.is_banned(&conn.remote_id()) && conn.alpn() != ping::ALPN {
            tracing::debug!(peer = %conn.remote_id().fmt_short(), "closing connection of a banned node");
            AfterHandshakeOutcome::Reject {
                error_code: BANNED.into(),
                reason: b"banned".to_vec(),
            }
        } else if open {
            AfterHandshakeOutcome::Accept
        } else if conn.side() == Side::Client || self.gate.is_admitted(&conn.remote_id()) {
            self.gate.track(conn);
            AfterHandshakeOutcome::Accept
        } else {
            tracing::debug!(peer = %conn.remote_id().fmt_short(), "closing connection from a node that is not admitted");
            AfterHandshakeOutcome::Reject {
                error_code: NOT_ADMITTED.into(),
                reason: b"not admitted".to_vec(),
            }
        }
    }
}
