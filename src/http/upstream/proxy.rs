//! Forwards one OpenAI request to an upstream engine and streams its answer back unchanged
//! (status, content type and body; a stream stays a stream). The client's body was validated by
//! the OpenAI handlers and goes as it came. An engine that cannot be reached, or stays silent
//! longer than [`IDLE_TIMEOUT`], is a 502 (before the answer began), or the stream's end: an
//! SSE stream ends with an error chunk.

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;

use super::{endpoint, Route};
use crate::http::error::ApiError;
use crate::util::http::{client, ClientOptions};

/// Longest wait to connect to an upstream engine.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence from an upstream engine: before its answer begins (a long prompt, a model
/// it loads first) and between two pieces of it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The one client for every upstream (connections are kept and reused).
fn http() -> Result<&'static reqwest::Client, ApiError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            client(ClientOptions {
                redirects: 0,
                connect_timeout: CONNECT_TIMEOUT,
                read_timeout: IDLE_TIMEOUT,
                total_timeout: None,
            })
            .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| unavailable(format!("cannot build the HTTP client: {e}")))
}

/// Sends `body` to the upstream's `path` (`/chat/completions`, `/completions`) and answers with
/// what it answers.
pub async fn forward(route: Route, path: &str, body: Bytes) -> Result<Response, ApiError> {
    let url = endpoint(&route.base, path);
    let held = route.start();
    let answer = http()?
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| unavailable(format!("the upstream engine at {url} failed: {e}")))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let sse = content_type
        .as_ref()
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let chunks = answer.bytes_stream().scan(false, move |broke, piece| {
        let _held = &held; // in flight until the answer ends or the client goes
        let next = match piece {
            _ if *broke => None,
            Ok(bytes) => Some(Ok(bytes)),
            // A stream that breaks off (the engine died) ends with an error chunk, as a
            // relayed one does, so clients see why.
            Err(e) if sse => {
                *broke = true;
                tracing::warn!("upstream stream from {url} broke off: {e}");
                let err = ApiError::generation_failed(format!(
                    "the engine serving this model went away: {e}"
                ));
                Some(Ok(Bytes::from(err.sse_chunk())))
            }
            Err(e) => Some(Err(std::io::Error::other(e))),
        };
        futures::future::ready(next)
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    Ok(response)
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "server_error",
        "upstream_unavailable",
        message,
    )
}
