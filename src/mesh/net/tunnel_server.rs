//! The serving side of the HTTP tunnel (ALPN `mesh/http/1`): runs the node's own axum router
//! (local models only, so requests never loop) on each accepted stream with hyper's
//! `serve_connection`.
//!
//! Every peer is a stranger in a public mesh, so nothing a peer sends is held without a bound:
//! - a stream over the peer's cap ([`MAX_STREAMS_PER_PEER`], over all its connections) is
//!   refused at once (reset with [`STREAM_REFUSED`]), before anything is read from it;
//! - the request head must arrive within [`HEADER_READ_TIMEOUT`] and fit [`MAX_HEAD_BYTES`];
//! - a body must announce its length (`content-length`), at most [`MAX_BODY_BYTES`] (413), and
//!   fit what the peer ([`MAX_BYTES_IN_FLIGHT_PER_PEER`]: 429) and all peers
//!   ([`MAX_BYTES_IN_FLIGHT`]: 503, so the caller tries another replica) may have in flight,
//!   before a byte of it is read;
//! - the whole body must arrive within [`BODY_READ_DEADLINE`] of the head, or the exchange ends;
//! - the answer must be read: a write that waits longer than [`WRITE_STALL_TIMEOUT`] (the
//!   peer stopped reading and QUIC flow control is full) ends the exchange, so a peer cannot
//!   hold a generator slot, which lives as long as its answer is being written, for ever.
//!
//! The accounting is plain data ([`crate::mesh::state::budget`]); this file only applies it.
//! Each request carries a [`TunnelPeer`] extension naming the peer it came from, so the HTTP
//! layer can queue peers fairly against this node's own users.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::EndpointId;

use crate::mesh::state::budget::{Budget, Limits, Refusal};

/// A request's head (request line and headers) must arrive within this of the stream opening.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes hyper buffers for one stream's head (and reads of its body) at a time.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A request body must have fully arrived this long after its head, or the exchange ends.
/// 4 MiB in 20 s is 1.7 Mbit/s: slower links are served by a closer replica.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(20);
/// Longest one write of an answer may wait for the peer to read (to open QUIC flow control).
/// An honest peer reads as fast as its own client does; a silent one loses the stream.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request body accepted: the OpenAI API's own limit (`http::openai::validate`).
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;
/// Streams one peer may have open on this node at once, over all its connections.
pub const MAX_STREAMS_PER_PEER: u32 = 16;
/// Request-body bytes one peer may have announced and not yet finished with (4 bodies of the
/// largest size).
pub const MAX_BYTES_IN_FLIGHT_PER_PEER: u64 = 4 * MAX_BODY_BYTES;
/// Request-body bytes all peers together may have in flight on this node.
pub const MAX_BYTES_IN_FLIGHT: u64 = 16 * MAX_BODY_BYTES;
/// QUIC error code of a stream refused because its peer has too many open.
pub const STREAM_REFUSED: u32 = 429;

/// The limits above, as the budget takes them.
pub const LIMITS: Limits = Limits {
    streams_per_peer: MAX_STREAMS_PER_PEER,
    bytes_per_peer: MAX_BYTES_IN_FLIGHT_PER_PEER,
    bytes_total: MAX_BYTES_IN_FLIGHT,
};

/// The peer a tunnelled request came from (a request extension; absent on local requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelPeer(pub EndpointId);

type SharedBudget = Arc<Mutex<Budget<EndpointId>>>;

/// The serving side, registered on iroh's router. Clones share one budget.
#[derive(Debug, Clone)]
pub struct TunnelServer {
    app: axum::Router,
    budget: SharedBudget,
}

impl TunnelServer {
    /// Serves `app` to peers within [`LIMITS`].
    pub fn new(app: axum::Router) -> Self {
        Self {
            app,
            budget: Arc::new(Mutex::new(Budget::new(LIMITS))),
        }
    }
}

impl ProtocolHandler for TunnelServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Some(stream) = StreamHeld::open(&self.budget, peer) else {
                tracing::debug!(peer = %peer.fmt_short(), "refusing a stream over the peer's cap");
                let _ = send.reset(STREAM_REFUSED.into());
                let _ = recv.stop(STREAM_REFUSED.into());
                continue;
            };
            let (app, budget) = (self.app.clone(), self.budget.clone());
            tokio::spawn(async move {
                let tower = TowerToHyperService::new(app);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    exchange(tower.clone(), budget.clone(), peer, req)
                });
                let mut send = tokio_io_timeout::TimeoutWriter::new(send);
                send.set_timeout(Some(WRITE_STALL_TIMEOUT));
                let io = TokioIo::new(tokio::io::join(recv, Box::pin(send)));
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .keep_alive(false)
                    .serve_connection(io, service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(peer = %peer.fmt_short(), "tunnelled request ended early: {e}");
                }
                drop(stream);
            });
        }
        Ok(())
    }
}

/// One request: checked against the budget, tagged with its peer, its body under a deadline.
async fn exchange(
    app: TowerToHyperService<axum::Router>,
    budget: SharedBudget,
    peer: EndpointId,
    req: Request<Incoming>,
) -> Result<Response<axum::body::Body>, std::convert::Infallible> {
    let declared = match (req.body().size_hint().exact(), req.body().is_end_stream()) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => {
            return Ok(refuse(
                StatusCode::LENGTH_REQUIRED,
                "length_required",
                "a tunnelled request body must have a content-length",
            ))
        }
    };
    if declared > MAX_BODY_BYTES {
        return Ok(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!("request body is {declared} bytes; the limit is {MAX_BODY_BYTES}"),
        ));
    }
    let held = match BytesHeld::reserve(&budget, peer, declared) {
        Ok(h) => h,
        Err(Refusal::TotalBytes) => {
            return Ok(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many request bytes in flight on this node; retry later or elsewhere",
            ))
        }
        Err(_) => {
            return Ok(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "too many request bytes in flight from your node; retry later",
            ))
        }
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(TunnelPeer(peer));
    let req = Request::from_parts(parts, Deadline::new(body, BODY_READ_DEADLINE));
    let response = hyper::service::Service::call(&app, req).await;
    drop(held);
    response
}

/// An error response in OpenAI's shape, for refusals made before the router sees the request.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response<axum::body::Body> {
    let kind = match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::SERVICE_UNAVAILABLE => "server_error",
        _ => "invalid_request_error",
    };
    let body = serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    let mut response = Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A stream counted against its peer's cap until dropped.
struct StreamHeld {
    budget: SharedBudget,
    peer: EndpointId,
}

impl StreamHeld {
    fn open(budget: &SharedBudget, peer: EndpointId) -> Option<Self> {
        let mut b = budget.lock().ok()?;
        b.open_stream(&peer).ok()?;
        Some(Self {
            budget: budget.clone(),
            peer,
        })
    }
}

impl Drop for StreamHeld {
    fn drop(&mut self) {
        if let Ok(mut b) = self.budget.lock() {
            b.close_stream(&self.peer);
        }
    }
}

/// Body bytes counted against their peer until dropped.
struct BytesHeld {
    budget: SharedBudget,
    peer: EndpointId,
    bytes: u64,
}

impl BytesHeld {
    fn reserve(budget: &SharedBudget, peer: EndpointId, bytes: u64) -> Result<Self, Refusal> {
        let mut b = budget.lock().map_err(|_| Refusal::TotalBytes)?;
        b.reserve(&peer, bytes)?;
        Ok(Self {
            budget: budget.clone(),
            peer,
            bytes,
        })
    }
}

impl Drop for BytesHeld {
    fn drop(&mut self) {
        if let Ok(mut b) = self.budget.lock() {
            b.release(&self.peer, self.bytes);
        }
    }
}

/// A request body that fails once `deadline` has passed before its last frame.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
    after: Duration,
}

impl Deadline {
    fn new(inner: Incoming, after: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(after)),
            after,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body not received within {0:?}")]
    Deadline(Duration),
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Deadline(this.after)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
