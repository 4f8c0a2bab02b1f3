//! A local stand-in for the Hugging Face hub, for catalog/download tests and the benchmark.
//!
//! It answers what the downloader calls, the way huggingface.co does for LFS files:
//! `HEAD|GET /{org}/{repo}/resolve/{rev}/{path}` → `302` to `http://127.0.0.2:{port}/cdn/{sha256}`
//! (another host, like the hub's CDN) with `ETag`,
//! `X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size`; `GET /cdn/{sha256}` serves the bytes with
//! `Range`/`206`. Faults on demand: drop the connection midway, corrupt a byte, answer 503,
//! require `Authorization: Bearer <token>` for gated repos (401 otherwise), 404 for unknown
//! files. Every request is logged. Binds 127.0.0.1 port 0; nothing leaves the machine.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One logged request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

#[derive(Default)]
pub struct HubState {
    /// (repo, path) → sha256
    files: Mutex<HashMap<(String, String), String>>,
    /// sha256 → content
    blobs: Mutex<HashMap<String, Bytes>>,
    gated: Mutex<HashSet<String>>,
    /// old repo id → new repo id (answered with a relative 307, as the hub does).
    renamed: Mutex<HashMap<String, String>>,
    token: Mutex<Option<String>>,
    pub requests: Mutex<Vec<Request>>,
    /// GETs of blobs to cut off after `drop_after` bytes.
    pub drops_left: AtomicU32,
    pub drop_after: AtomicU64,
    /// Flip one byte of every blob served.
    pub corrupt: AtomicBool,
    /// HEAD requests to answer with 503 before behaving.
    pub unavailable_left: AtomicU32,
    /// When > 0, blob bodies trickle out this many bytes every 10 ms.
    pub throttle: AtomicU64,
    /// Answer every blob GET with the whole file (200), as servers without range support do.
    pub ignore_range: AtomicBool,
    /// Base URL of the "CDN" the resolve endpoint redirects to: another host, as on the hub
    /// (so clients keep the metadata of the 302 and do not forward the token).
    cdn: Mutex<String>,
}

/// A running fake hub.
pub struct FakeHub {
    pub addr: SocketAddr,
    pub state: Arc<HubState>,
}

impl FakeHub {
    pub async fn start() -> Self {
        let state = Arc::new(HubState::default());
        let app = Router::new()
            .route(
                "/{org}/{repo}/resolve/{rev}/{*path}",
                get(resolve).head(resolve),
            )
            .route("/cdn/{sha}", get(cdn).head(cdn))
            .route("/plain/{sha}", get(plain))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The CDN on a second loopback address (Linux routes all of 127/8 to lo); where that
        // address is missing, the same listener under the name `localhost`.
        let cdn = match tokio::net::TcpListener::bind("127.0.0.2:0").await {
            Ok(cdn_listener) => {
                let cdn_addr = cdn_listener.local_addr().expect("addr");
                let cdn_app = app.clone();
                tokio::spawn(async move {
                    let _ = axum::serve(cdn_listener, cdn_app).await;
                });
                format!("http://{cdn_addr}")
            }
            Err(_) => format!("http://localhost:{}", addr.port()),
        };
        *state.cdn.lock().unwrap() = cdn;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publishes `content` as `repo`/`path`; returns its sha256 (the LFS etag).
    pub fn add_file(&self, repo: &str, path: &str, content: Vec<u8>) -> String {
        let sha = sha256_hex(&content);
        self.state
            .files
            .lock()
            .unwrap()
            .insert((repo.into(), path.into()), sha.clone());
        self.state
            .blobs
            .lock()
            .unwrap()
            .insert(sha.clone(), Bytes::from(content));
        sha
    }

    /// Requires `Authorization: Bearer {token}` for `repo`.
    /// Makes `old` a renamed alias of `new`.
    pub fn rename(&self, old: &str, new: &str) {
        self.state
            .renamed
            .lock()
            .unwrap()
            .insert(old.into(), new.into());
    }

    pub fn gate(&self, repo: &str, token: &str) {
        self.state.gated.lock().unwrap().insert(repo.into());
        *self.state.token.lock().unwrap() = Some(token.into());
    }

    /// Cuts the next `times` blob GETs after `after` bytes of body.
    pub fn drop_connections(&self, times: u32, after: u64) {
        self.state.drop_after.store(after, Ordering::SeqCst);
        self.state.drops_left.store(times, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn blob_gets(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/cdn/"))
            .collect()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG state.
pub fn synthetic(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn log(state: &HubState, method: &Method, path: String, headers: &HeaderMap) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    state.requests.lock().unwrap().push(Request {
        method: method.to_string(),
        path,
        range: h("range"),
        auth: h("authorization"),
    });
}

fn status(code: StatusCode, error_code: &str) -> Response {
    Response::builder()
        .status(code)
        .header("x-error-code", error_code)
        .body(Body::empty())
        .unwrap()
}

async fn resolve(
    State(state): State<Arc<HubState>>,
    method: Method,
    Path((org, repo, _rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{org}/{repo}");
    log(
        &state,
        &method,
        format!("/{repo}/resolve/{_rev}/{path}"),
        &headers,
    );
    if method == Method::HEAD
        && state
            .unavailable_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        return status(StatusCode::SERVICE_UNAVAILABLE, "");
    }
    if let Some(new) = state.renamed.lock().unwrap().get(&repo) {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header("location", format!("/{new}/resolve/{_rev}/{path}"))
            .body(Body::empty())
            .unwrap();
    }
    if state.gated.lock().unwrap().contains(&repo) {
        let want = state
            .token
            .lock()
            .unwrap()
            .clone()
            .map(|t| format!("Bearer {t}"));
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if got.is_none() || got != want {
            return status(StatusCode::UNAUTHORIZED, "GatedRepo");
        }
    }
    let Some(sha) = state
        .files
        .lock()
        .unwrap()
        .get(&(repo.clone(), path.clone()))
        .cloned()
    else {
        return status(StatusCode::NOT_FOUND, "EntryNotFound");
    };
    let size = state.blobs.lock().unwrap().get(&sha).map_or(0, |b| b.len());
    let cdn = state.cdn.lock().unwrap().clone();
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", format!("{cdn}/cdn/{sha}"))
        .header("x-repo-commit", COMMIT)
        .header("etag", "\"0000000000000000000000000000000000000000\"")
        .header("x-linked-etag", format!("\"{sha}\""))
        .header("x-linked-size", size.to_string())
        .header("content-length", "0")
        .body(Body::empty())
        .unwrap()
}

async fn cdn(
    State(state): State<Arc<HubState>>,
    method: Method,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> Response {
    log(&state, &method, format!("/cdn/{sha}"), &headers);
    let Some(mut blob) = state.blobs.lock().unwrap().get(&sha).cloned() else {
        return status(StatusCode::NOT_FOUND, "");
    };
    if state.corrupt.load(Ordering::SeqCst) && !blob.is_empty() {
        let mut v = blob.to_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0xff;
        blob = Bytes::from(v);
    }
    let total = blob.len() as u64;
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_range)
        .filter(|_| !state.ignore_range.load(Ordering::SeqCst));
    let (code, start) = match range {
        Some(s) if s >= total => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{total}"))
                .body(Body::empty())
                .unwrap()
        }
        Some(s) => (StatusCode::PARTIAL_CONTENT, s),
        None => (StatusCode::OK, 0),
    };
    let body = blob.slice(start as usize..);
    let mut resp = Response::builder()
        .status(code)
        .header("accept-ranges", "bytes")
        .header("etag", format!("\"{sha}\""))
        .header("content-length", body.len().to_string());
    if code == StatusCode::PARTIAL_CONTENT {
        resp = resp.header(
            "content-range",
            format!("bytes {start}-{}/{total}", total - 1),
        );
    }
    if method == Method::HEAD {
        return resp.body(Body::empty()).unwrap();
    }
    let dropping = state
        .drops_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if dropping {
        // Send part of the body, then fail the stream: hyper aborts the connection.
        let cut = (state.drop_after.load(Ordering::SeqCst) as usize).min(body.len());
        let head = body.slice(..cut);
        // The pause lets hyper flush the head before the error aborts the connection.
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) }).chain(
            futures::stream::once(async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fake hub drops the connection",
                ))
            }),
        );
        return resp.body(Body::from_stream(stream)).unwrap();
    }
    resp.body(paced(&state, body)).unwrap()
}

/// The blob as one plain 200 response: the benchmark's baseline.
async fn plain(State(state): State<Arc<HubState>>, Path(sha): Path<String>) -> Response {
    let blob = state.blobs.lock().unwrap().get(&sha).cloned();
    match blob {
        Some(b) => Response::builder()
            .header("content-length", b.len().to_string())
            .body(paced(&state, b))
            .unwrap(),
        None => status(StatusCode::NOT_FOUND, ""),
    }
}

/// The body as is, or — with `throttle` set — paced to `throttle` bytes per 10 ms by the clock
/// (a link of fixed speed).
fn paced(state: &HubState, body: Bytes) -> Body {
    let per_tick = state.throttle.load(Ordering::SeqCst) as usize;
    if per_tick == 0 {
        return Body::from(body);
    }
    let start = tokio::time::Instant::now();
    let stream = futures::stream::unfold((body, 0u32), move |(rest, tick)| async move {
        if rest.is_empty() {
            return None;
        }
        tokio::time::sleep_until(start + std::time::Duration::from_millis(10) * tick).await;
        let n = per_tick.min(rest.len());
        Some((
            Ok::<Bytes, std::io::Error>(rest.slice(..n)),
            (rest.slice(n..), tick + 1),
        ))
    });
    Body::from_stream(stream)
}

/// `bytes=N-` → N.
fn parse_range(v: &str) -> Option<u64> {
    v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
}
