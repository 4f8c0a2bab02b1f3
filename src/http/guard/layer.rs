//! The guards as axum middleware: each reads the headers [`super::policy`] judges and answers
//! refusals in the APIs' error shape, naming the fix.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::policy::{self, HostVerdict};
use super::{ApiKey, Surface};
use crate::http::error::ApiError;

/// Which server a guard protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    OpenAi,
    Management,
}

/// The settings of [`guard_requests`].
#[derive(Debug, Clone)]
pub struct Guard {
    server: Server,
    key: Option<ApiKey>,
}

impl Guard {
    pub fn openai(s: &Surface) -> Arc<Self> {
        Arc::new(Self {
            server: Server::OpenAi,
            key: s.api_key.clone(),
        })
    }

    pub fn management(s: &Surface) -> Arc<Self> {
        Arc::new(Self {
            server: Server::Management,
            key: s.api_key.clone(),
        })
    }
}

/// Whether the request came over a loopback connection (false when the server was not run
/// with connect info, as in router-only tests: refusing is the safe side).
pub fn peer_is_loopback(ext: &Extensions) -> bool {
    ext.get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback())
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's `Host` (HTTP/1 header, or the authority of an absolute URI). A `Host` that
/// is not text counts as a refused name.
fn host_of(req: &Request) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

/// 403 for a `Host` that is not a loopback name, an IP literal or an `--allow-host` name.
pub async fn guard_host(
    State(allowed): State<Arc<Vec<String>>>,
    req: Request,
    next: Next,
) -> Response {
    if let HostVerdict::Refused(name) = policy::host_allowed(host_of(&req), &allowed) {
        let shown: String = name.chars().filter(|c| !c.is_control()).take(100).collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "host_not_allowed",
            format!(
                "Host '{shown}' is not allowed: this server answers loopback names \
                 (localhost) and IP addresses only, against DNS rebinding; start mesh with \
                 --allow-host {shown} if you reach it by that name"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The key (401), then for state-changing methods JSON (415) and, on the management API, a
/// same-origin `Origin` (403).
pub async fn guard_requests(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Some(key) = &g.key {
        let needed = match g.server {
            Server::OpenAi => true,
            Server::Management => !peer_is_loopback(req.extensions()),
        };
        if needed && !policy::api_key_ok(header_str(headers, header::AUTHORIZATION), &key.0) {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or wrong API key: send `Authorization: Bearer KEY` with the key \
                 this node was started with (--api-key or MESH_API_KEY)",
            )
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    if policy::changes_state(req.method().as_str()) {
        if !policy::is_json(header_str(headers, header::CONTENT_TYPE)) {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
                format!(
                    "{} needs a JSON body sent with `Content-Type: application/json` \
                     (with curl: -H 'Content-Type: application/json')",
                    req.method()
                ),
            )
            .into_response();
        }
        if g.server == Server::Management
            && !policy::origin_allowed(header_str(headers, header::ORIGIN), host_of(&req))
        {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                "cross_site_request",
                "cross-site requests may not change this node: the management API takes \
                 state-changing requests only from pages it serves itself, or from clients \
                 that send no Origin (curl, the mesh CLI)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_count_as_local() {
        let with = |addr: &str| {
            let mut ext = Extensions::new();
            ext.insert(ConnectInfo(addr.parse::<SocketAddr>().unwrap()));
            peer_is_loopback(&ext)
        };
        assert!(with("127.0.0.1:5000") && with("127.9.9.9:1") && with("[::1]:5000"));
        assert!(!with("192.168.1.5:5000") && !with("[fe80::1]:5000") && !with("0.0.0.0:1"));
        assert!(
            !peer_is_loopback(&Extensions::new()),
            "unknown peer: refused"
        );
    }
}
