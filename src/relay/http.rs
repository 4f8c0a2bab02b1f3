//! The relay's listener: HTTP/1 over hyper, WebSocket upgrades handed to the `LocalRelay`
//! (while a connection slot is free, else 503), and the NIP-11 document for plain requests.
//! Our own listener, rather than `LocalRelay::run`, so port 0 means a port the OS picked, a
//! request head must arrive within [`RelayOptions::header_timeout`] (hyper's timer), and each
//! session is read under our limits (`relay/bridge.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use nostr_relay_builder::LocalRelay;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

use super::bridge::{self, Limits};
use super::RelayOptions;

#[derive(Clone)]
pub(super) struct Server {
    pub(super) relay: LocalRelay,
    /// One permit per open WebSocket session.
    pub(super) slots: Arc<Semaphore>,
    /// The NIP-11 document.
    pub(super) info: Bytes,
    pub(super) limits: Limits,
    /// Time for a request head (the first, and each later one on a kept-alive connection).
    pub(super) header_timeout: std::time::Duration,
}

pub(super) async fn accept_loop(listener: TcpListener, server: Server, cancel: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("relay: cannot accept a connection: {e}");
                    continue;
                }
            },
        };
        let server = server.clone();
        tokio::spawn(async move {
            let header_timeout = server.header_timeout;
            let service =
                hyper::service::service_fn(move |req| std::future::ready(server.answer(req, peer)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "relay: HTTP connection ended: {e}");
            }
        });
    }
}

type Reply = Result<Response<Full<Bytes>>, std::convert::Infallible>;

impl Server {
    /// WebSocket upgrades go to the relay (while a connection slot is free); anything else gets
    /// the NIP-11 document.
    fn answer(&self, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let has = |name, value: &str| {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v: &HeaderValue| v.to_str().ok())
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(value)))
        };
        let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
        let (true, true, Some(key)) = (has(CONNECTION, "upgrade"), has(UPGRADE, "websocket"), key)
        else {
            return Ok(Response::builder()
                .header("content-type", "application/nostr+json")
                .header("access-control-allow-origin", "*")
                .body(Full::new(self.info.clone()))
                .expect("static response"));
        };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "relay: connection refused, too many open");
            return Ok(Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Full::new(Bytes::from_static(b"too many connections\n")))
                .expect("static response"));
        };
        let (relay, limits) = (self.relay.clone(), self.limits);
        tokio::spawn(async move {
            let _permit = permit;
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => bridge::serve(TokioIo::new(upgraded), relay, peer, limits).await,
                Err(e) => tracing::debug!(%peer, "relay: upgrade failed: {e}"),
            }
        });
        Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
            .body(Full::default())
            .expect("static response"))
    }
}

/// NIP-11 relay information.
pub(super) fn relay_info(opts: &RelayOptions) -> serde_json::Value {
    serde_json::json!({
        "name": "mesh relay",
        "description": "Nostr relay for mesh offers",
        "software": "mesh",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": [1, 9, 11, 40],
        "limitation": {
            "max_message_length": super::max_message_bytes(opts.max_event_bytes),
            "max_subscriptions": opts.max_reqs,
            "max_limit": super::MAX_FILTER_LIMIT,
        },
    })
}
