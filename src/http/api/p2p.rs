//! The management API's routes for people at a shell (issue 15):
//! - `POST /api/invite {"uses": 1, "ttl_secs": 600, "lan": false}`: a join code for this node's
//!   mesh (answering on the LAN too with `lan`).
//! - `POST /api/send {"to": "NODE"|null, "all": bool, "text": "…"}`: a message to one member
//!   (node id, a prefix of one, or a name) or to all.
//! - `GET /api/inbox?after=SEQ&wait_secs=S`: messages received after `SEQ`; with `wait_secs`,
//!   waits (at most [`MAX_WAIT`]) for one when there is none yet (`mesh inbox --follow`).
//! - `POST /api/leave`: leave the mesh, stay up as a single node.
//! - `GET /api/logs?after=SEQ&limit=N&wait_secs=S`: recent log lines, the same way.
//!
//! The documents are defined here, shared with the CLI.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{mesh_of, ApiState};
use crate::discovery::invite::{Channels, InviteError, MAX_TTL, MAX_USES};
use crate::http::error::ApiError;
use crate::mesh::{InboxMessage, Mesh, SendReport};
use crate::util::logs::{self, LogLine};

/// Longest a `wait_secs` long poll waits.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Default code lifetime.
pub const DEFAULT_TTL_SECS: u64 = 600;
/// Most log lines one answer carries.
pub const MAX_LOG_LINES: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteRequest {
    #[serde(default = "one")]
    pub uses: u32,
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Answer on the LAN too (mDNS and a direct connection; no relay needed).
    #[serde(default)]
    pub lan: bool,
}

fn one() -> u32 {
    1
}

fn default_ttl() -> u64 {
    DEFAULT_TTL_SECS
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteDoc {
    pub code: String,
    pub uses: u32,
    pub ttl_secs: u64,
    /// Whether the code answers on the Nostr relays.
    #[serde(default)]
    pub nostr: bool,
    /// Whether the code answers on the LAN.
    #[serde(default)]
    pub lan: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendRequest {
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub all: bool,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendDoc {
    pub sent: Vec<SendReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboxDoc {
    pub messages: Vec<InboxMessage>,
    /// The `seq` to pass as `after` next time.
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaveDoc {
    pub left: bool,
    /// Peers this node had when it left.
    pub peers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsDoc {
    pub lines: Vec<LogLine>,
    pub last_seq: u64,
}

#[derive(Debug, Deserialize)]
pub struct Since {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_secs: u64,
    limit: Option<usize>,
}

fn json<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("expected {shape}: {e}")))
}

pub async fn invite(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<InviteDoc>, ApiError> {
    let req: InviteRequest = if body.is_empty() {
        json(b"{}", "")?
    } else {
        json(&body, "{\"uses\": N, \"ttl_secs\": S}")?
    };
    if req.uses == 0 || req.uses > MAX_USES {
        return Err(ApiError::bad_request(format!(
            "uses must be 1 to {MAX_USES}"
        )));
    }
    if req.ttl_secs == 0 || req.ttl_secs > MAX_TTL.as_secs() {
        return Err(ApiError::bad_request(format!(
            "ttl_secs must be 1 to {}",
            MAX_TTL.as_secs()
        )));
    }
    let mesh = mesh_of(&state)?;
    if mesh.has_left() {
        return Err(ApiError::conflict("left", "this node left its mesh"));
    }
    let relays = state
        .discovery
        .as_ref()
        .map(|d| d.config().settings.relays.clone())
        .unwrap_or_default();
    if relays.is_empty() && !req.lan {
        return Err(ApiError::conflict(
            "no_relays",
            "join codes need Nostr relays (--relay) or the LAN (`mesh invite --lan`)",
        ));
    }
    let channels = Channels {
        relays,
        lan: req.lan,
    };
    let ttl = Duration::from_secs(req.ttl_secs);
    let info = state
        .invites
        .create(&channels, mesh.ticket().encode(), req.uses, ttl)
        .await
        .map_err(|e| match e {
            InviteError::TooMany => ApiError::conflict("too_many_invites", e.to_string()),
            InviteError::Lan(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "lan_unavailable",
                e.to_string(),
            ),
            InviteError::Relays(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                "relays_unreachable",
                e.to_string(),
            ),
        })?;
    Ok(Json(InviteDoc {
        code: info.code,
        uses: info.uses,
        ttl_secs: info.ttl.as_secs(),
        nostr: info.nostr,
        lan: info.lan,
    }))
}

/// The member `to` names: a node id, a prefix of one (4+ characters), or a peer name.
fn resolve(mesh: &Mesh, to: &str) -> Result<iroh::EndpointId, ApiError> {
    let peers = mesh.peers();
    let matches: Vec<&crate::mesh::PeerView> = peers
        .iter()
        .filter(|p| p.node_id == to || p.name == to || (to.len() >= 4 && p.node_id.starts_with(to)))
        .collect();
    match matches.as_slice() {
        [one] => one
            .node_id
            .parse()
            .map_err(|_| ApiError::bad_request("bad node id")),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_such_peer",
            format!("no member named {to:?} (see `mesh peers`)"),
        )),
        _ => Err(ApiError::bad_request(format!(
            "{to:?} names {} members: give more of the node id",
            matches.len()
        ))),
    }
}

pub async fn send(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<SendDoc>, ApiError> {
    let req: SendRequest = json(&body, "{\"to\": \"NODE\", \"text\": \"…\"}")?;
    let mesh = mesh_of(&state)?;
    if req.text.is_empty() || req.text.len() > crate::mesh::net::msg::MAX_MESSAGE_BYTES {
        return Err(ApiError::bad_request(format!(
            "text must be 1 to {} bytes",
            crate::mesh::net::msg::MAX_MESSAGE_BYTES
        )));
    }
    let targets = match (&req.to, req.all) {
        (Some(_), true) | (None, false) => {
            return Err(ApiError::bad_request(
                "name one member (\"to\") or all (\"all\": true)",
            ))
        }
        (Some(to), false) => vec![resolve(mesh, to)?],
        (None, true) => mesh.peer_ids(),
    };
    Ok(Json(SendDoc {
        sent: mesh.send_message(&targets, &req.text).await,
    }))
}

/// Waits at most `wait_secs` (capped) until `rx` passes `after`.
async fn wait_past(mut rx: watch::Receiver<u64>, after: u64, wait_secs: u64) {
    if wait_secs == 0 {
        return;
    }
    let wait = Duration::from_secs(wait_secs).min(MAX_WAIT);
    let _ = tokio::time::timeout(wait, rx.wait_for(|seq| *seq > after)).await;
}

pub async fn inbox(
    State(state): State<ApiState>,
    Query(q): Query<Since>,
) -> Result<Json<InboxDoc>, ApiError> {
    let mesh = mesh_of(&state)?;
    wait_past(mesh.watch_inbox(), q.after, q.wait_secs).await;
    let messages = mesh.inbox(q.after);
    let last_seq = messages.last().map_or(q.after, |m| m.seq);
    Ok(Json(InboxDoc { messages, last_seq }))
}

pub async fn leave(State(state): State<ApiState>) -> Result<Json<LeaveDoc>, ApiError> {
    let mesh = mesh_of(&state)?;
    if mesh.has_left() {
        return Err(ApiError::conflict(
            "left",
            "this node left its mesh already",
        ));
    }
    let peers = mesh.leave().await;
    Ok(Json(LeaveDoc { left: true, peers }))
}

pub async fn logs(Query(q): Query<Since>) -> Json<LogsDoc> {
    let ring = logs::ring();
    wait_past(ring.watch(), q.after, q.wait_secs).await;
    let limit = q.limit.unwrap_or(200).min(MAX_LOG_LINES);
    let lines = ring.after(q.after, limit);
    let last_seq = lines.last().map_or(q.after, |l| l.seq);
    Json(LogsDoc { lines, last_seq })
}
