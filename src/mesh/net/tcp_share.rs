//! `mesh/tcp/1`: TCP services shared with the mesh's members (`mesh share`) and used through a
//! local port (`mesh connect`). Behind the gate, so only members reach it. One QUIC bi-stream
//! per TCP connection: the opener names the share ([`share::encode_header`]), the sharing node
//! connects to its target and answers one status byte, then [`splice`] carries raw bytes both
//! ways. The policy (names, target rule, header, limits) is in `proto::share` and
//! `state::conns`; this file only moves bytes.
//!
//! Shutdown: removing a share ends its connections; dropping a [`Connector`] ends its listener
//! and connections; the node stopping ends all (the endpoint closes, and every task here also
//! watches the mesh's cancel token).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::splice::splice;
use crate::mesh::proto::share::{self, ShareError};
use crate::mesh::state::conns::ConnCount;

pub use share::ALPN;

/// Events one [`Connector`] keeps for its reader before it drops new ones.
const EVENT_QUEUE: usize = 64;
/// QUIC stream error code: the stream was refused (over a cap) before its header was read.
const STREAM_REFUSED: u32 = 1;

/// A share of this node, as `/api/shares` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub name: String,
    pub target: String,
    /// Members' connections carried to the target now.
    pub active: u32,
}

/// A `mesh connect` listener of this node, as `/api/shares` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectInfo {
    pub name: String,
    pub node_id: String,
    pub bind: String,
    /// Local connections carried to the member now.
    pub active: u32,
}

/// What happens on a `mesh connect` listener (streamed to the CLI as JSON lines).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConnectEvent {
    Listening {
        bind: String,
        name: String,
        node_id: String,
    },
    Opened {
        from: String,
    },
    Closed {
        from: String,
        sent: u64,
        received: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Refused {
        from: String,
        error: String,
    },
}

struct Share {
    target: SocketAddr,
    cancel: CancellationToken,
    active: Arc<AtomicU32>,
}

struct Connect {
    info: ConnectInfo,
    active: Arc<AtomicU32>,
}

#[derive(Default)]
struct Inner {
    shares: BTreeMap<String, Share>,
    connects: BTreeMap<u64, Connect>,
    next_connect: u64,
}

/// This node's shares and connect listeners; cloned into the protocol handler and the handle.
#[derive(Clone)]
pub struct Shares {
    inner: Arc<Mutex<Inner>>,
    conns: Arc<Mutex<ConnCount<EndpointId>>>,
    /// The mesh's cancel token: the node stopping ends everything.
    stop: CancellationToken,
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shares")
    }
}

impl Shares {
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            inner: Arc::default(),
            conns: Arc::new(Mutex::new(ConnCount::new(
                share::CONNS_PER_PEER,
                share::CONNS_TOTAL,
            ))),
            stop,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }

    /// Offers `target` under `name` (replacing a share of that name: its connections end).
    pub fn add(&self, name: &str, target: SocketAddr) -> Result<(), ShareError> {
        if !share::valid_name(name) {
            return Err(ShareError::BadName);
        }
        self.with(|g| {
            if !g.shares.contains_key(name) && g.shares.len() >= share::MAX_SHARES {
                return Err(ShareError::TooMany);
            }
            let new = Share {
                target,
                cancel: self.stop.child_token(),
                active: Arc::default(),
            };
            if let Some(old) = g.shares.insert(name.to_owned(), new) {
                old.cancel.cancel();
            }
            Ok(())
        })
    }

    /// Stops offering `name`; its connections end.
    pub fn remove(&self, name: &str) -> Result<(), ShareError> {
        let gone = self.with(|g| g.shares.remove(name));
        let share = gone.ok_or_else(|| ShareError::NoSuchShare(name.to_owned()))?;
        share.cancel.cancel();
        Ok(())
    }

    /// The names to announce.
    pub fn names(&self) -> Vec<String> {
        self.with(|g| g.shares.keys().cloned().collect())
    }

    pub fn list(&self) -> Vec<ShareInfo> {
        self.with(|g| {
            g.shares
                .iter()
                .map(|(name, s)| ShareInfo {
                    name: name.clone(),
                    target: s.target.to_string(),
                    active: s.active.load(Ordering::Relaxed),
                })
                .collect()
        })
    }

    pub fn connects(&self) -> Vec<ConnectInfo> {
        self.with(|g| {
            g.connects
                .values()
                .map(|c| ConnectInfo {
                    active: c.active.load(Ordering::Relaxed),
                    ..c.info.clone()
                })
                .collect()
        })
    }

    fn lookup(&self, name: &str) -> Option<(SocketAddr, CancellationToken, Arc<AtomicU32>)> {
        self.with(|g| {
            g.shares
                .get(name)
                .map(|s| (s.target, s.cancel.clone(), s.active.clone()))
        })
    }

    /// One stream of a member: header, target, then bytes (the stream's slot already taken).
    async fn serve_stream(&self, peer: EndpointId, mut send: SendStream, mut recv: RecvStream) {
        let opened = tokio::time::timeout(share::OPEN_TIMEOUT, async {
            let name = read_name(&mut recv).await.ok_or(share::BAD_HEADER)?;
            let (target, cancel, active) = self.lookup(&name).ok_or(share::NO_SUCH_SHARE)?;
            let tcp = TcpStream::connect(target)
                .await
                .map_err(|_| share::TARGET_DOWN)?;
            Ok::<_, u8>((name, tcp, cancel, active))
        })
        .await
        .unwrap_or(Err(share::BAD_HEADER));
        let (name, tcp, cancel, active) = match opened {
            Ok(o) => o,
            Err(status) => {
                let _ = send.write_all(&[status]).await;
                let _ = send.finish();
                let _ = tokio::time::timeout(share::OPEN_TIMEOUT, send.stopped()).await;
                return;
            }
        };
        if send.write_all(&[share::OK]).await.is_err() {
            return;
        }
        let _ = tcp.set_nodelay(true);
        active.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %peer.fmt_short(), share = %name, "share connection opened");
        let carried = tokio::select! {
            r = splice((recv, send), tcp.into_split(), share::COPY_BUF_BYTES, share::IDLE_TIMEOUT) => r,
            () = cancel.cancelled() => Err(std::io::Error::other("share removed")),
        };
        active.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(peer = %peer.fmt_short(), share = %name, ?carried, "share connection ended");
    }

    /// Listens on `bind` and carries each accepted connection to `peer`'s share `name`.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        peer: EndpointId,
        name: &str,
        bind: SocketAddr,
    ) -> Result<Connector, ShareError> {
        if !share::valid_name(name) {
            return Err(ShareError::BadName);
        }
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| ShareError::Io(format!("cannot listen on {bind}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ShareError::Io(e.to_string()))?;
        let cancel = self.stop.child_token();
        let active = Arc::new(AtomicU32::new(0));
        let info = ConnectInfo {
            name: name.to_owned(),
            node_id: peer.to_string(),
            bind: addr.to_string(),
            active: 0,
        };
        let id = self.with(|g| {
            g.next_connect += 1;
            g.connects.insert(
                g.next_connect,
                Connect {
                    info: info.clone(),
                    active: active.clone(),
                },
            );
            g.next_connect
        });
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let _ = tx.try_send(ConnectEvent::Listening {
            bind: info.bind,
            name: info.name,
            node_id: info.node_id,
        });
        let carrier = Carrier {
            endpoint,
            peer,
            name: name.to_owned(),
            conn: Arc::default(),
            events: tx,
            active,
            cancel: cancel.clone(),
        };
        tokio::spawn(carrier.run(listener));
        Ok(Connector {
            addr,
            events,
            cancel,
            id,
            shares: self.clone(),
        })
    }
}

/// Reads the stream header: the length byte, then the name.
async fn read_name(recv: &mut RecvStream) -> Option<String> {
    let len = recv.read_u8().await.ok()? as usize;
    if len == 0 || len > share::MAX_NAME_BYTES {
        return None;
    }
    let mut name = [0u8; share::MAX_NAME_BYTES];
    recv.read_exact(&mut name[..len]).await.ok()?;
    share::decode_name(&name[..len]).map(str::to_owned)
}

/// A `mesh connect` listener: its address and events. Dropping it stops the listener and ends
/// its connections.
pub struct Connector {
    pub addr: SocketAddr,
    pub events: mpsc::Receiver<ConnectEvent>,
    cancel: CancellationToken,
    id: u64,
    shares: Shares,
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.shares.with(|g| g.connects.remove(&self.id));
    }
}

/// The listener's task and what each of its connections needs.
#[derive(Clone)]
struct Carrier {
    endpoint: Endpoint,
    peer: EndpointId,
    name: String,
    /// The QUIC connection to the peer, reused by the streams while it is open.
    conn: Arc<tokio::sync::Mutex<Option<Connection>>>,
    events: mpsc::Sender<ConnectEvent>,
    active: Arc<AtomicU32>,
    cancel: CancellationToken,
}

impl Carrier {
    async fn run(self, listener: TcpListener) {
        let slots = Arc::new(Semaphore::new(share::CONNS_PER_CONNECT));
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                () = self.cancel.cancelled() => break,
            };
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = self.cancel.cancelled() => break,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("mesh connect: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.carry(tcp, from).await;
                drop(permit);
            });
        }
        if let Some(c) = self.conn.lock().await.take() {
            c.close(0u8.into(), b"mesh connect stopped");
        }
    }

    async fn carry(&self, tcp: TcpStream, from: SocketAddr) {
        let from = from.to_string();
        let streams = tokio::select! {
            s = self.open() => s,
            () = self.cancel.cancelled() => return,
        };
        let (send, recv) = match streams {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(share = %self.name, "mesh connect: {e}");
                let _ = self.events.try_send(ConnectEvent::Refused {
                    from,
                    error: e.to_string(),
                });
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let _ = self
            .events
            .try_send(ConnectEvent::Opened { from: from.clone() });
        self.active.fetch_add(1, Ordering::Relaxed);
        let carried = tokio::select! {
            r = splice(tcp.into_split(), (recv, send), share::COPY_BUF_BYTES, share::IDLE_TIMEOUT) => r,
            () = self.cancel.cancelled() => Err(std::io::Error::other("mesh connect stopped")),
        };
        self.active.fetch_sub(1, Ordering::Relaxed);
        let ((sent, received), error) = match carried {
            Ok(n) => (n, None),
            Err(e) => ((0, 0), Some(e.to_string())),
        };
        let _ = self.events.try_send(ConnectEvent::Closed {
            from,
            sent,
            received,
            error,
        });
    }

    /// A stream to the peer's share, after its `OK`.
    async fn open(&self) -> Result<(SendStream, RecvStream), ShareError> {
        let conn = self.connection().await?;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(io)?;
            let header = share::encode_header(&self.name)?;
            send.write_all(&header).await.map_err(io)?;
            let status = recv.read_u8().await.map_err(io)?;
            share::answer_result(status, &self.name)?;
            Ok((send, recv))
        };
        tokio::time::timeout(share::OPEN_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(ShareError::Io("the member did not answer in time".into())))
    }

    async fn connection(&self) -> Result<Connection, ShareError> {
        let mut cached = self.conn.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(
            share::OPEN_TIMEOUT,
            self.endpoint.connect(self.peer, share::ALPN),
        )
        .await
        .map_err(|_| ShareError::Io("cannot reach the member in time".into()))?
        .map_err(|e| ShareError::Io(format!("cannot reach the member: {e}")))?;
        *cached = Some(c.clone());
        Ok(c)
    }
}

fn io(e: impl std::fmt::Display) -> ShareError {
    ShareError::Io(e.to_string())
}

/// The serving side, registered on the node's router.
#[derive(Clone, Debug)]
pub struct ShareServer {
    pub shares: Shares,
}

impl ProtocolHandler for ShareServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        loop {
            let next = tokio::select! {
                n = conn.accept_bi() => n,
                () = self.shares.stop.cancelled() => break,
            };
            let Ok((mut send, mut recv)) = next else {
                break;
            };
            let Some(held) = Held::take(&self.shares.conns, peer) else {
                tracing::debug!(peer = %peer.fmt_short(), "refusing a share stream over the caps");
                let _ = send.write_all(&[share::BUSY]).await;
                let _ = send.finish();
                let _ = recv.stop(STREAM_REFUSED.into());
                continue;
            };
            let shares = self.shares.clone();
            tokio::spawn(async move {
                shares.serve_stream(peer, send, recv).await;
                drop(held);
            });
        }
        Ok(())
    }
}

/// One connection slot of a peer, given back on drop.
struct Held {
    conns: Arc<Mutex<ConnCount<EndpointId>>>,
    peer: EndpointId,
}

impl Held {
    fn take(conns: &Arc<Mutex<ConnCount<EndpointId>>>, peer: EndpointId) -> Option<Self> {
        let mut c = conns.lock().ok()?;
        c.open(&peer).then(|| Self {
            conns: conns.clone(),
            peer,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conns.lock() {
            c.close(&self.peer);
        }
    }
}
