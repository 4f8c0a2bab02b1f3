//! The management API's routes for TCP sharing (`mesh share`, `mesh connect`):
//! - `GET /api/shares`: this node's shares (name, target, active connections) and its
//!   `mesh connect` listeners.
//! - `POST /api/shares {"name": "db", "target": "127.0.0.1:5432", "allow_remote_target": false}`:
//!   share a local TCP service with the members under a name (loopback targets only unless
//!   `allow_remote_target`).
//! - `DELETE /api/shares/{name}`: stop sharing it; its connections end.
//! - `POST /api/connect {"name": "db", "node": null, "bind": "127.0.0.1:0"}`: listen on `bind`
//!   and carry each connection to the member sharing `name` (`node`: a node id, a prefix of one,
//!   or a name, when several share it). The answer streams JSON lines (`listening` first, then
//!   `opened`, `closed`, `refused`; an empty line every [`KEEP_ALIVE`]) and the listener lives as
//!   long as the answer is read: the client closing it stops the listener and its connections.
//!
//! The documents are defined here, shared with the CLI.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{mesh_of, ApiState};
use crate::http::error::ApiError;
use crate::mesh::{ConnectInfo, Mesh, PeerView, ShareError, ShareInfo};

/// How often a `POST /api/connect` answer carries an empty line, so a client that went away is
/// noticed (the write fails) and its listener closed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharesDoc {
    pub shares: Vec<ShareInfo>,
    pub connects: Vec<ConnectInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRequest {
    pub name: String,
    pub target: SocketAddr,
    #[serde(default)]
    pub allow_remote_target: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectRequest {
    pub name: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default = "loopback_any")]
    pub bind: SocketAddr,
}

fn loopback_any() -> SocketAddr {
    (std::net::Ipv4Addr::LOCALHOST, 0).into()
}

fn share_error(e: ShareError) -> ApiError {
    match e {
        ShareError::NoSuchShare(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_such_share",
            e.to_string(),
        ),
        ShareError::TooMany => ApiError::conflict("too_many_shares", e.to_string()),
        ShareError::Io(_) => ApiError::conflict("cannot_listen", e.to_string()),
        _ => ApiError::bad_request(e.to_string()),
    }
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<SharesDoc>, ApiError> {
    let mesh = mesh_of(&state)?;
    Ok(Json(SharesDoc {
        shares: mesh.shares(),
        connects: mesh.connects(),
    }))
}

pub async fn add(State(state): State<ApiState>, body: Bytes) -> Result<Json<ShareInfo>, ApiError> {
    let req: ShareRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"name\": \"NAME\", \"target\": \"127.0.0.1:PORT\"}}: {e}"
        ))
    })?;
    let mesh = mesh_of(&state)?;
    mesh.share(&req.name, req.target, req.allow_remote_target)
        .map_err(share_error)?;
    Ok(Json(ShareInfo {
        name: req.name,
        target: req.target.to_string(),
        active: 0,
    }))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    mesh_of(&state)?.unshare(&name).map_err(share_error)?;
    Ok(Json(serde_json::json!({ "removed": name })))
}

/// The member whose share `name` to use: the one sharing it, or the one `node` names.
fn pick(mesh: &Mesh, name: &str, node: Option<&str>) -> Result<iroh::EndpointId, ApiError> {
    let peers = mesh.peers();
    let named = |p: &PeerView, n: &str| {
        p.node_id == n || p.name == n || (n.len() >= 4 && p.node_id.starts_with(n))
    };
    let sharing: Vec<&PeerView> = peers
        .iter()
        .filter(|p| p.shares.iter().any(|s| s == name))
        .filter(|p| node.is_none_or(|n| named(p, n)))
        .collect();
    match sharing.as_slice() {
        [one] => one
            .node_id
            .parse()
            .map_err(|_| ApiError::bad_request("bad node id")),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_such_share",
            match node {
                Some(n) => format!("no member {n:?} shares {name:?} (see `mesh peers`)"),
                None => format!("no member shares {name:?} (see `mesh peers`)"),
            },
        )),
        many => Err(ApiError::bad_request(format!(
            "{} members share {name:?}: pick one with --node",
            many.len()
        ))),
    }
}

pub async fn connect(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ConnectRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"name\": \"NAME\"}}: {e}")))?;
    let mesh = mesh_of(&state)?;
    let peer = pick(mesh, &req.name, req.node.as_deref())?;
    let connector = mesh
        .connect_share(peer, &req.name, req.bind)
        .await
        .map_err(share_error)?;
    let mut tick = tokio::time::interval(KEEP_ALIVE);
    tick.reset();
    let lines = futures::stream::unfold((connector, tick), |(mut c, mut tick)| async move {
        let line = tokio::select! {
            ev = c.events.recv() => {
                let mut line = serde_json::to_vec(&ev?).unwrap_or_default();
                line.push(b'\n');
                line
            }
            _ = tick.tick() => b"\n".to_vec(),
        };
        Some((Ok::<_, Infallible>(Bytes::from(line)), (c, tick)))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_defaults_to_an_ephemeral_loopback_port() {
        let r: ConnectRequest = serde_json::from_str(r#"{"name": "db"}"#).unwrap();
        assert_eq!(r.bind, loopback_any());
        assert!(r.node.is_none());
        let s: ShareRequest =
            serde_json::from_str(r#"{"name": "db", "target": "127.0.0.1:5432"}"#).unwrap();
        assert!(!s.allow_remote_target);
    }
}
