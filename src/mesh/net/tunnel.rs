//! HTTP over iroh (ALPN `mesh/http/1`): one QUIC bi-stream carries one HTTP/1.1 exchange.
//!
//! The calling side (here) does a hyper client handshake on a fresh stream of a cached per-peer
//! connection; the serving side is [`super::tunnel_server`]. Bodies stream through unchanged,
//! so SSE chunks arrive as the remote engine produces them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use iroh::endpoint::{Connection, ConnectionError};
use iroh::{Endpoint, EndpointId};

use super::gate::Gate;

pub const ALPN: &[u8] = b"mesh/http/1";
/// Connecting to a peer (admission included) must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer whose connection broke is not dialled again for this long (or until it re-joins):
/// requests go to other replicas at once instead of waiting for a dead node's connect timeout.
pub const DOWN_HOLD: Duration = Duration::from_secs(3);
/// Opening a stream on the connection and the HTTP handshake on it must finish within this (a
/// peer that grants no streams would otherwise hold the request forever).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// From sending a request to its response head. Forwarded requests always stream (the head
/// comes as soon as the replica queued the request), so an honest replica answers at once;
/// the margin is for a replica whose CPU is saturated.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence inside a response body. Replicas send an SSE keep-alive comment every
/// `http::openai::stream::KEEP_ALIVE` (5 s) while a prompt is processed, so a body silent for
/// three of them has stalled.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Streams this node keeps open to one peer at once: the serving side refuses more
/// (`tunnel_server::MAX_STREAMS_PER_PEER`), so further requests wait here for a free one (within
/// [`OPEN_TIMEOUT`]) instead of being refused there.
pub const MAX_STREAMS_TO_PEER: usize = 16;
/// Close code of a tunnel closed for being idle ([`Tunnel::close_idle`]).
pub const IDLE_CLOSE: u32 = 408;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot connect to {peer}: {reason}")]
    Connect { peer: String, reason: String },
    #[error("connecting to {peer} timed out after {CONNECT_TIMEOUT:?}")]
    Timeout { peer: String },
    #[error("stream to {peer} failed: {reason}")]
    Stream { peer: String, reason: String },
    #[error("connection to {peer} was lost: {reason}")]
    Lost { peer: String, reason: String },
    #[error("{peer} was unreachable moments ago; not retrying yet")]
    Down { peer: String },
    #[error("{peer} did not {what} within {after:?}")]
    Deadline {
        peer: String,
        what: &'static str,
        after: Duration,
    },
}

/// The calling side: one cached connection per peer, one stream per request.
#[derive(Debug, Clone)]
pub struct Tunnel {
    endpoint: Endpoint,
    gate: Gate,
    conns: Arc<Mutex<HashMap<EndpointId, Connection>>>,
    /// Peers whose connection broke or could not be made, and since when.
    down: Arc<Mutex<HashMap<EndpointId, Instant>>>,
    /// Open streams per peer, at most [`MAX_STREAMS_TO_PEER`] each.
    streams: Arc<Mutex<HashMap<EndpointId, Arc<tokio::sync::Semaphore>>>>,
    /// Cached connections found closed (not by us) since [`Tunnel::take_lost`] last ran, and
    /// whether each timed out: the membership driver's evidence of death (`state::liveness`).
    lost: Arc<Mutex<HashMap<EndpointId, bool>>>,
    /// When each cached connection was last used (dialled, handed out, or a stream ended).
    used: Arc<Mutex<HashMap<EndpointId, Instant>>>,
}

impl Tunnel {
    pub fn new(endpoint: Endpoint, gate: Gate) -> Self {
        Self {
            endpoint,
            gate,
            conns: Arc::default(),
            down: Arc::default(),
            streams: Arc::default(),
            lost: Arc::default(),
            used: Arc::default(),
        }
    }

    /// The open connection to `peer`, if there is one.
    pub fn cached(&self, peer: &EndpointId) -> Option<Connection> {
        let conns = self.conns.lock().ok()?;
        conns
            .get(peer)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Closes and forgets the connection to `peer` (it left): its in-flight requests fail.
    pub fn forget(&self, peer: &EndpointId) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(peer);
        }
        let conn = self.conns.lock().ok().and_then(|mut c| c.remove(peer));
        if let Some(conn) = conn {
            conn.close(0u8.into(), b"peer left the mesh");
        }
        if let Ok(mut used) = self.used.lock() {
            used.remove(peer);
        }
        self.clear_down(peer);
    }

    /// Closes the connections that have had no stream open and no use for `idle`, and returns
    /// how many. Each open connection costs keep-alives both ways, so a node of a grown mesh
    /// keeps only the tunnels it uses (the membership sweep calls this once the mesh is past
    /// eager tunnels); the next request to such a peer dials again. Closing them here says
    /// nothing of the peers' health ([`Tunnel::take_lost`] ignores local closes).
    pub fn close_idle(&self, now: Instant, idle: Duration) -> usize {
        let busy: Vec<EndpointId> = self
            .streams
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(_, sem)| sem.available_permits() < MAX_STREAMS_TO_PEER)
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let is_idle = |id: &EndpointId| {
            !busy.contains(id)
                && used
                    .get(id)
                    .is_none_or(|t| now.saturating_duration_since(*t) >= idle)
        };
        let closing: Vec<(EndpointId, Connection)> = match self.conns.lock() {
            Ok(mut conns) => {
                let ids: Vec<EndpointId> = conns.keys().filter(|id| is_idle(id)).copied().collect();
                ids.into_iter()
                    .filter_map(|id| Some((id, conns.remove(&id)?)))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        if let Ok(mut used) = self.used.lock() {
            for (id, _) in &closing {
                used.remove(id);
            }
        }
        for (id, conn) in &closing {
            tracing::debug!(peer = %id.fmt_short(), "closing an idle tunnel");
            conn.close(IDLE_CLOSE.into(), b"idle");
        }
        closing.len()
    }

    /// Forgets closed connections and peers down for longer than [`DOWN_HOLD`] (called with the
    /// peer table's sweep, so neither table outgrows the peers).
    /// A closed connection counts as the peer going down, as [`Tunnel::connection`] would find.
    pub fn prune(&self, now: Instant) {
        if let Ok(mut down) = self.down.lock() {
            down.retain(|_, since| now.saturating_duration_since(*since) < DOWN_HOLD);
        }
        let mut closed = Vec::new();
        if let Ok(mut conns) = self.conns.lock() {
            conns.retain(|id, c| match c.close_reason() {
                None => true,
                Some(reason) => {
                    closed.push((*id, reason));
                    false
                }
            });
            if let Ok(mut used) = self.used.lock() {
                used.retain(|id, _| conns.contains_key(id));
            }
        }
        for (id, reason) in closed {
            self.gate.revoke(&id);
            self.mark_down(id);
            self.note_lost(id, &reason);
        }
    }

    /// Peers whose cached connection closed since the last call (closed here first, see
    /// [`Tunnel::prune`]), each with whether it timed out: heard nothing for the endpoint's
    /// idle timeout, so its keep-alives stopped.
    pub fn take_lost(&self, now: Instant) -> Vec<(EndpointId, bool)> {
        self.prune(now);
        self.lost
            .lock()
            .map(|mut l| l.drain().collect())
            .unwrap_or_default()
    }

    /// Notes a peer the tunnel could not reach at all (the eager dial when it joined): the
    /// membership sweep dials it once more and drops it when that fails too. A peer learnt
    /// from a roster or a relayed announcement may be gone already, and no connection of ours
    /// would ever time out to tell.
    pub fn note_unreachable(&self, peer: EndpointId) {
        if let Ok(mut lost) = self.lost.lock() {
            if lost.len() < 4 * crate::mesh::state::peers::MAX_PEERS {
                lost.entry(peer).or_insert(false);
            }
        }
    }

    /// Notes a cached connection that closed; one this node closed itself says nothing.
    fn note_lost(&self, peer: EndpointId, reason: &ConnectionError) {
        if matches!(reason, ConnectionError::LocallyClosed) {
            return;
        }
        let timed_out = matches!(reason, ConnectionError::TimedOut);
        if let Ok(mut lost) = self.lost.lock() {
            // Bounded: it holds only cached connections, which are peers'.
            if lost.len() < 4 * crate::mesh::state::peers::MAX_PEERS {
                lost.insert(peer, timed_out);
            }
        }
    }

    /// Entries in the connection cache and the down set.
    pub fn sizes(&self) -> [usize; 2] {
        [
            self.conns.lock().map(|c| c.len()).unwrap_or(0),
            self.down.lock().map(|d| d.len()).unwrap_or(0),
        ]
    }

    /// A peer (re-)joined: dial it again whenever needed.
    pub fn clear_down(&self, peer: &EndpointId) {
        if let Ok(mut down) = self.down.lock() {
            down.remove(peer);
        }
    }

    fn mark_down(&self, peer: EndpointId) {
        if let Ok(mut down) = self.down.lock() {
            down.insert(peer, Instant::now());
        }
    }

    /// The connection to `peer`, opening one when needed. A cached connection found closed
    /// (the peer went away) marks the peer down for [`DOWN_HOLD`] instead of being redialled.
    pub async fn connection(&self, peer: EndpointId) -> Result<Connection, TunnelError> {
        let name = peer.fmt_short().to_string();
        let cached = self.conns.lock().ok().and_then(|c| c.get(&peer).cloned());
        if let Some(conn) = cached {
            match conn.close_reason() {
                None => {
                    touch(&self.used, peer);
                    return Ok(conn);
                }
                Some(reason) => {
                    if let Ok(mut conns) = self.conns.lock() {
                        conns.remove(&peer);
                    }
                    self.gate.revoke(&peer);
                    self.mark_down(peer);
                    self.note_lost(peer, &reason);
                    return Err(TunnelError::Lost {
                        peer: name,
                        reason: reason.to_string(),
                    });
                }
            }
        }
        let down_since = self.down.lock().ok().and_then(|d| d.get(&peer).copied());
        if down_since.is_some_and(|t| t.elapsed() < DOWN_HOLD) {
            return Err(TunnelError::Down { peer: name });
        }
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(peer, ALPN)).await;
        let conn = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                // Perhaps the peer restarted and forgot us: prove membership again next time.
                self.gate.revoke(&peer);
                self.mark_down(peer);
                return Err(TunnelError::Connect {
                    peer: name,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                self.mark_down(peer);
                return Err(TunnelError::Timeout { peer: name });
            }
        };
        self.clear_down(&peer);
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(peer, conn.clone());
        }
        touch(&self.used, peer);
        Ok(conn)
    }

    /// Sends one request to `peer` and returns its response head; the body streams on (read it
    /// with [`next_chunk`], which bounds its silences). Each step has its deadline: connect
    /// ([`CONNECT_TIMEOUT`]), open a stream ([`OPEN_TIMEOUT`]), response head ([`HEAD_TIMEOUT`]).
    pub async fn request(
        &self,
        peer: EndpointId,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, TunnelError> {
        let conn = self.connection(peer).await?;
        let name = peer.fmt_short().to_string();
        let broke = |e: &dyn std::fmt::Display| TunnelError::Stream {
            peer: name.clone(),
            reason: e.to_string(),
        };
        let late = |what, after| TunnelError::Deadline {
            peer: name.clone(),
            what,
            after,
        };
        let streams = self
            .streams
            .lock()
            .map(|mut s| {
                s.entry(peer)
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS_TO_PEER)))
                    .clone()
            })
            .map_err(|e| broke(&e))?;
        let open = async {
            let permit = streams.acquire_owned().await.map_err(|e| broke(&e))?;
            let (send, recv) = conn.open_bi().await.map_err(|e| broke(&e))?;
            let io = TokioIo::new(tokio::io::join(recv, send));
            hyper::client::conn::http1::handshake(io)
                .await
                .map(|opened| (opened, permit))
                .map_err(|e| broke(&e))
        };
        let ((mut sender, driver), permit) = tokio::time::timeout(OPEN_TIMEOUT, open)
            .await
            .map_err(|_| late("open a stream", OPEN_TIMEOUT))??;
        // The stream counts against the peer's limit as long as its HTTP exchange lives.
        let used = self.used.clone();
        let driver = tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = driver.await {
                tracing::debug!("tunnel stream closed: {e}");
            }
            touch(&used, peer);
        });
        match tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(broke(&e)),
            Err(_) => {
                // Drop the stream rather than leave a task waiting on a silent peer.
                driver.abort();
                Err(late("answer", HEAD_TIMEOUT))
            }
        }
    }
}

/// Notes a use of a peer's cached connection (it stays open at least `tunnel_idle` from now).
/// Bounded: entries are for peers with a cached connection, or that had one a moment ago;
/// [`Tunnel::prune`] keeps only the former.
fn touch(used: &Mutex<HashMap<EndpointId, Instant>>, peer: EndpointId) {
    if let Ok(mut used) = used.lock() {
        used.insert(peer, Instant::now());
    }
}

/// The next piece of a response body from `peer`; `None` at its end. A body silent for
/// [`IDLE_TIMEOUT`] is an error.
pub async fn next_chunk(
    body: &mut Incoming,
    peer: &EndpointId,
) -> Result<Option<Bytes>, TunnelError> {
    use http_body_util::BodyExt;
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| TunnelError::Deadline {
                peer: peer.fmt_short().to_string(),
                what: "send more of its answer",
                after: IDLE_TIMEOUT,
            })?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => {
                return Err(TunnelError::Stream {
                    peer: peer.fmt_short().to_string(),
                    reason: e.to_string(),
                })
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}
