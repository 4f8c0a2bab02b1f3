//! `mesh/rpc/1`: split serving's transport. llama.cpp's RPC connections between a split's host
//! and its workers travel only as iroh bi-streams of this ALPN, behind the gate (admitted
//! members only); no RPC port is ever open beyond loopback.
//!
//! Every stream starts with one request line from the opener (JSON, ≤ [`MAX_LINE`] bytes, within
//! [`REQUEST_TIMEOUT`]) and one answer line from the worker (`{"ok":true}` or
//! `{"ok":false,"error":"…"}`):
//! - `{"op":"lend","model":NAME}`: the host asks this worker to take part in its split. Granted
//!   when the node lends memory (`--split-worker`) and no other host holds its lease
//!   (`state::lease`); the worker starts its RPC server (a child process) before answering.
//! - `{"op":"pipe"}`: the lease holder opens one llama.cpp RPC connection. After the answer the
//!   stream carries raw RPC bytes both ways, spliced to the worker's loopback RPC server
//!   (`splice::splice`, shared with TCP sharing), until either side closes.
//!
//! The host side exposes each worker as a loopback TCP listener ([`listen`]) whose connections
//! become pipes, so llama.cpp's RPC client (in the host's child process) dials `127.0.0.1`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::splice::splice;
use crate::mesh::state::lease::{Lease, Refusal};

/// Bytes buffered in each direction of one pipe.
const PIPE_BUFFER: usize = 64 * 1024;
/// llama.cpp keeps its RPC connections open while the model is loaded, quiet between requests:
/// a pipe has no idle limit (it ends with either side, or with the lease).
const NO_IDLE: Duration = Duration::MAX;

pub const ALPN: &[u8] = b"mesh/rpc/1";
/// Longest request or answer line.
pub const MAX_LINE: usize = 1024;
/// Time for the request line, and for the worker's answer (which may start its RPC server).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts (once) this node's RPC server and says where it listens (`127.0.0.1:PORT`).
pub type LendFn = Arc<dyn Fn() -> BoxFuture<'static, Result<SocketAddr, String>> + Send + Sync>;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Lend { model: String },
    Pipe,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The worker side, registered on the node's router. Clones share the lender and the lease.
#[derive(Clone, Default)]
pub struct RpcServer {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    lender: Option<LendFn>,
    lease: Lease<EndpointId>,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcServer")
    }
}

impl RpcServer {
    /// Lends this node's memory to splits from now on (`Some`), or no longer (`None`).
    pub fn set_lender(&self, lender: Option<LendFn>) {
        self.lock().lender = lender;
    }

    /// Membership saw `id` leave or die: if it holds the lease, the lease is free once its
    /// pipes have closed.
    pub fn holder_left(&self, id: &EndpointId) {
        self.lock().lease.holder_left(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn serve_stream(self, from: EndpointId, mut send: SendStream, mut recv: RecvStream) {
        let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut recv)).await {
            Ok(Ok(line)) => serde_json::from_slice::<Request>(&line).ok(),
            _ => None,
        };
        let Some(request) = request else {
            let _ = answer(&mut send, Err("not a mesh/rpc/1 request".into())).await;
            return;
        };
        let lender = self.lock().lender.clone();
        let Some(lender) = lender else {
            let _ = answer(
                &mut send,
                Err("this node does not lend memory (it runs without --split-worker)".into()),
            )
            .await;
            return;
        };
        match request {
            Request::Lend { model } => {
                let granted = self.lock().lease.lend(&from, Instant::now());
                let result = match granted {
                    Err(_) => Err("busy: this node serves another host's split".to_owned()),
                    Ok(()) => lender().await.map(|_| ()),
                };
                if result.is_ok() {
                    tracing::info!(host = %from.fmt_short(), %model, "lending memory to a split");
                }
                let _ = answer(&mut send, result).await;
            }
            Request::Pipe => {
                let opened = self.lock().lease.open_pipe(&from);
                if let Err(why) = opened {
                    let reason = match why {
                        Refusal::TooManyPipes => "too many pipes open",
                        _ => "no lease: ask to lend first",
                    };
                    let _ = answer(&mut send, Err(reason.into())).await;
                    return;
                }
                let local = match lender().await {
                    Ok(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match local {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        if answer(&mut send, Ok(())).await.is_ok() {
                            let _ =
                                splice(tcp.into_split(), (recv, send), PIPE_BUFFER, NO_IDLE).await;
                        }
                    }
                    Err(e) => {
                        let _ = answer(&mut send, Err(format!("RPC server: {e}"))).await;
                    }
                }
                self.lock().lease.close_pipe(Instant::now());
            }
        }
    }
}

impl ProtocolHandler for RpcServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let from = conn.remote_id();
        while let Ok((send, recv)) = conn.accept_bi().await {
            tokio::spawn(self.clone().serve_stream(from, send, recv));
        }
        Ok(())
    }
}

/// Reads one line (without its `\n`) of at most [`MAX_LINE`] bytes.
async fn read_line(recv: &mut RecvStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        recv.read_exact(&mut byte)
            .await
            .map_err(|e| e.to_string())?;
        if byte[0] == b'\n' {
            return Ok(line);
        }
        if line.len() == MAX_LINE {
            return Err(format!("line over {MAX_LINE} bytes"));
        }
        line.push(byte[0]);
    }
}

async fn write_line<T: Serialize>(send: &mut SendStream, value: &T) -> Result<(), String> {
    let mut line = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    line.push(b'\n');
    send.write_all(&line).await.map_err(|e| e.to_string())
}

async fn answer(send: &mut SendStream, result: Result<(), String>) -> Result<(), String> {
    let a = match result {
        Ok(()) => Answer {
            ok: true,
            error: None,
        },
        Err(e) => Answer {
            ok: false,
            error: Some(e),
        },
    };
    write_line(send, &a).await
}

/// Sends `request` on a new stream of `conn` and reads the answer.
async fn ask(conn: &Connection, request: &Request) -> Result<(SendStream, RecvStream), String> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_line(&mut send, request).await?;
        let line = read_line(&mut recv).await?;
        let a: Answer = serde_json::from_slice(&line).map_err(|_| "not a mesh/rpc/1 answer")?;
        if a.ok {
            Ok((send, recv))
        } else {
            Err(a.error.unwrap_or_else(|| "refused".into()))
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))
}

async fn connect(endpoint: &Endpoint, peer: EndpointId) -> Result<Connection, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, endpoint.connect(peer, ALPN))
        .await
        .map_err(|_| "cannot connect: timed out".to_owned())?
        .map_err(|e| format!("cannot connect: {e}"))
}

/// Asks `peer` to lend its memory to this node's split of `model`.
pub async fn lend(endpoint: &Endpoint, peer: EndpointId, model: &str) -> Result<(), String> {
    let conn = connect(endpoint, peer).await?;
    let request = Request::Lend {
        model: model.to_owned(),
    };
    let (mut send, _recv) = ask(&conn, &request).await?;
    let _ = send.finish();
    conn.close(0u8.into(), b"lent");
    Ok(())
}

/// A loopback listener standing for `peer`'s RPC server: each connection to it becomes a pipe to
/// `peer` (who must have granted this node its lease), until `cancel`. Returns its address.
pub async fn listen(
    endpoint: Endpoint,
    peer: EndpointId,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut conn: Option<Connection> = None;
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let Ok((mut tcp, _)) = accepted else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if conn.as_ref().is_none_or(|c| c.close_reason().is_some()) {
                conn = connect(&endpoint, peer).await.ok();
            }
            let Some(c) = conn.clone() else {
                tracing::warn!(worker = %peer.fmt_short(), "cannot reach the split's worker");
                let _ = tcp.shutdown().await;
                continue;
            };
            let cancel = cancel.clone();
            tokio::spawn(async move {
                match ask(&c, &Request::Pipe).await {
                    Ok((send, recv)) => {
                        tokio::select! {
                            _ = cancel.cancelled() => {}
                            _ = splice(tcp.into_split(), (recv, send), PIPE_BUFFER, NO_IDLE) => {}
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = %peer.fmt_short(), "RPC pipe refused: {e}");
                    }
                }
            });
        }
        if let Some(c) = conn {
            c.close(0u8.into(), b"split ended");
        }
    });
    Ok(addr)
}
