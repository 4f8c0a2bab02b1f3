//! The rendezvous channel on the LAN (`mesh invite --lan`, `mesh join CODE --lan`): no Nostr
//! relay, no internet. The inviting node binds an iroh endpoint of its own for the code (a key
//! made for this code only, no relay) and advertises it with mDNS under the service
//! [`SERVICE_NAME`], with the code's channel tag (never the words) as its user data. A joiner
//! listens for that service, dials the endpoint that shows its tag on [`ALPN`] and runs the same
//! SPAKE2 messages as on Nostr (`proto`, unchanged) over one bidirectional stream, each message
//! a frame: a 4-byte big-endian length, then the JSON body (at most [`MAX_BODY_BYTES`]).
//!
//! This file only moves frames; `proto` decides. The inviter's connections hand each message to
//! the code's driver (`super`) as a [`Request`] and write back what it answers.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use iroh::address_lookup::UserData;
use iroh::endpoint::{presets, Connection, RecvStream};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, SecretKey};
use iroh_mdns_address_lookup::{DiscoveryEvent, MdnsAddressLookup};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::code::Code;
use super::proto::{Body, JoinError, Joiner, Step, MAX_BODY_BYTES};
use crate::mesh::net::lan::lan_addr;

/// ALPN of the LAN rendezvous.
pub const ALPN: &[u8] = b"mesh/invite/1";
/// mDNS service of open LAN codes (`_mesh-invite._udp.local`): not the nodes' own service, so
/// `--lan` mesh discovery never sees an invite endpoint and the other way round.
pub const SERVICE_NAME: &str = "mesh-invite";
/// Connections one code serves at once; more are closed at once ([`BUSY`]).
pub const MAX_CONNECTIONS: usize = 16;
/// Messages one connection may send (SPAKE2 takes two).
pub const MAX_FRAMES: usize = 4;
/// How long a connection may take, first message to last answer (either side).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A joiner that could not finish with an inviter it found tries it again this often.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Inviters (distinct endpoints showing the code's tag) one joiner remembers.
pub const MAX_CANDIDATES: usize = 8;
/// Connection close code: too many connections at once.
pub const BUSY: u32 = 503;

/// One message from a LAN joiner, for the code's driver: `from` numbers the connection; the
/// driver answers on `reply` (nothing: the connection is closed).
#[derive(Debug)]
pub struct Request {
    pub from: u64,
    pub body: Body,
    pub reply: oneshot::Sender<Vec<Body>>,
}

/// `body` as a frame.
pub fn frame(body: &Body) -> Vec<u8> {
    let json = body.encode();
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// The length a frame header announces, if it is one this side reads.
pub fn frame_len(header: [u8; 4]) -> Option<usize> {
    let n = u32::from_be_bytes(header) as usize;
    (n <= MAX_BODY_BYTES).then_some(n)
}

/// Reads one frame; `Err` on a closed stream, an oversized frame or a body that is not a
/// rendezvous message.
async fn read_body(recv: &mut RecvStream) -> Result<Body, String> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| format!("the other side closed: {e}"))?;
    let n = frame_len(header).ok_or("a frame larger than a rendezvous message")?;
    let mut buf = vec![0u8; n];
    recv.read_exact(&mut buf)
        .await
        .map_err(|e| format!("the other side closed: {e}"))?;
    std::str::from_utf8(&buf)
        .ok()
        .and_then(Body::decode)
        .ok_or_else(|| "not a rendezvous message".to_string())
}

/// The inviting side of one code on the LAN: its endpoint (advertised with mDNS) and the
/// messages its joiners sent. Dropping it stops accepting; [`Listener::close`] also closes
/// the endpoint.
pub struct Listener {
    router: Router,
    requests: mpsc::Receiver<Request>,
}

impl Listener {
    /// Binds a fresh endpoint on every interface and advertises `tag` on the LAN.
    pub async fn bind(tag: &str) -> Result<Listener, String> {
        let user_data: UserData = tag.parse().map_err(|e| format!("bad channel tag: {e}"))?;
        let builder = Endpoint::builder(presets::Minimal)
            .secret_key(SecretKey::generate())
            .relay_mode(RelayMode::Disabled)
            .address_lookup(
                MdnsAddressLookup::builder()
                    .service_name(SERVICE_NAME)
                    .advertise(true),
            )
            .user_data_for_address_lookup(user_data);
        Self::spawn(builder.bind().await.map_err(|e| e.to_string())?)
    }

    /// A listener on 127.0.0.1 that advertises nothing (tests: no multicast).
    pub async fn loopback() -> Result<Listener, String> {
        let endpoint = Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| e.to_string())?
            .bind()
            .await
            .map_err(|e| e.to_string())?;
        Self::spawn(endpoint)
    }

    fn spawn(endpoint: Endpoint) -> Result<Listener, String> {
        let (tx, requests) = mpsc::channel(MAX_CONNECTIONS);
        let handler = Handler {
            requests: tx,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            next: Arc::new(AtomicU64::new(0)),
        };
        let router = Router::builder(endpoint).accept(ALPN, handler).spawn();
        Ok(Listener { router, requests })
    }

    /// Where joiners reach this listener.
    pub fn addr(&self) -> EndpointAddr {
        self.router.endpoint().addr()
    }

    /// The next message from a joiner (never `None` while the listener is up).
    pub async fn recv(&mut self) -> Option<Request> {
        self.requests.recv().await
    }

    /// Stops accepting and closes the endpoint (its mDNS advertisement goes with it).
    pub async fn close(self) {
        let _ = self.router.shutdown().await;
    }
}

#[derive(Debug, Clone)]
struct Handler {
    requests: mpsc::Sender<Request>,
    slots: Arc<Semaphore>,
    next: Arc<AtomicU64>,
}

impl ProtocolHandler for Handler {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let Ok(_slot) = self.slots.clone().try_acquire_owned() else {
            conn.close(BUSY.into(), b"busy");
            return Ok(());
        };
        let from = self.next.fetch_add(1, Ordering::Relaxed);
        let talk = async {
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            for _ in 0..MAX_FRAMES {
                let body = read_body(&mut recv).await.ok()?;
                let (reply, answer) = oneshot::channel();
                self.requests
                    .send(Request { from, body, reply })
                    .await
                    .ok()?;
                let answers = answer.await.ok()?;
                if answers.is_empty() {
                    return None;
                }
                for body in &answers {
                    send.write_all(&frame(body)).await.ok()?;
                }
                let last = answers
                    .iter()
                    .any(|b| matches!(b, Body::Ticket { .. } | Body::Closed { .. }));
                if last {
                    return send.finish().ok();
                }
            }
            None
        };
        match tokio::time::timeout(CONNECTION_TIMEOUT, talk).await {
            // The joiner closes once it has read the answer; do not cut the last frame off.
            Ok(Some(())) => {
                let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn.closed()).await;
            }
            _ => conn.close(0u8.into(), b"done"),
        }
        Ok(())
    }
}

/// Why a LAN redemption brought no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LanError {
    #[error("cannot use the LAN: {0}")]
    Setup(String),
    #[error("nobody answered")]
    NoAnswer,
}

/// The joining side on the LAN: listens with mDNS (advertising nothing) for an endpoint showing
/// `code`'s channel tag, runs the rendezvous with it, and gives its answer: the ticket, or why
/// the inviter refused. [`LanError::NoAnswer`] when no inviter finished within `within`.
pub async fn redeem(code: &Code, within: Duration) -> Result<Result<String, JoinError>, LanError> {
    let setup = |e: &dyn std::fmt::Display| LanError::Setup(e.to_string());
    let endpoint = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::generate())
        .relay_mode(RelayMode::Disabled)
        .bind()
        .await
        .map_err(|e| setup(&e))?;
    let mdns = MdnsAddressLookup::builder()
        .service_name(SERVICE_NAME)
        .advertise(false)
        .build(SecretKey::generate().public())
        .map_err(|e| setup(&e));
    let out = match mdns {
        Ok(mdns) => {
            let events = mdns.subscribe().await;
            tokio::time::timeout(within, find_and_ask(&endpoint, events, code))
                .await
                .unwrap_or(Err(LanError::NoAnswer))
        }
        Err(e) => Err(e),
    };
    endpoint.close().await;
    out
}

/// Asks every endpoint that shows the code's tag, as they appear; one that could not be
/// finished with (it was busy, a frame got lost) is asked again every [`RETRY_EVERY`].
async fn find_and_ask(
    endpoint: &Endpoint,
    mut events: impl futures::Stream<Item = DiscoveryEvent> + Unpin,
    code: &Code,
) -> Result<Result<String, JoinError>, LanError> {
    let tag = code.channel_tag();
    let mut candidates: HashMap<EndpointId, EndpointAddr> = HashMap::new();
    let mut retry = tokio::time::interval(RETRY_EVERY);
    retry.tick().await;
    loop {
        let ask: Vec<EndpointAddr> = tokio::select! {
            event = events.next() => {
                let Some(DiscoveryEvent::Discovered { endpoint_info, .. }) = event else {
                    if event.is_none() {
                        return Err(LanError::NoAnswer);
                    }
                    continue;
                };
                if endpoint_info.data.user_data().map(|u| u.as_ref()) != Some(tag.as_str()) {
                    continue;
                }
                let addr = lan_addr(&endpoint_info);
                if addr.is_empty()
                    || (candidates.len() >= MAX_CANDIDATES && !candidates.contains_key(&addr.id))
                {
                    continue;
                }
                candidates.insert(addr.id, addr.clone());
                vec![addr]
            }
            _ = retry.tick() => candidates.values().cloned().collect(),
        };
        for addr in ask {
            let id = addr.id;
            match tokio::time::timeout(CONNECTION_TIMEOUT, exchange(endpoint, addr, code)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => tracing::debug!("join code on the LAN: {}: {e}", id.fmt_short()),
                Err(_) => tracing::debug!("join code on the LAN: {}: timed out", id.fmt_short()),
            }
        }
    }
}

/// One rendezvous with the inviter at `addr`: `Ok` with its answer, `Err` when the connection
/// failed before there was one.
pub async fn exchange(
    endpoint: &Endpoint,
    addr: EndpointAddr,
    code: &Code,
) -> Result<Result<String, JoinError>, String> {
    let conn = endpoint
        .connect(addr, ALPN)
        .await
        .map_err(|e| e.to_string())?;
    let talk = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let (mut joiner, first) = Joiner::<()>::start(code);
        send.write_all(&frame(&first))
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..MAX_FRAMES {
            match joiner.on_message((), read_body(&mut recv).await?) {
                Step::Nothing => {}
                Step::Send { body, .. } => send
                    .write_all(&frame(&body))
                    .await
                    .map_err(|e| e.to_string())?,
                Step::Done(ticket) => return Ok(Ok(ticket)),
                Step::Failed(e) => return Ok(Err(e)),
            }
        }
        Err("too many messages from the inviter".to_string())
    };
    let out = talk.await;
    conn.close(0u8.into(), b"done");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_json_body_behind_its_length_and_oversized_ones_are_refused() {
        let body = Body::Pake { msg: "AAAA".into() };
        let f = frame(&body);
        let n = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, f.len() - 4);
        assert_eq!(
            Body::decode(std::str::from_utf8(&f[4..]).unwrap()),
            Some(body)
        );
        assert_eq!(
            frame_len((MAX_BODY_BYTES as u32).to_be_bytes()),
            Some(MAX_BODY_BYTES)
        );
        assert_eq!(frame_len((MAX_BODY_BYTES as u32 + 1).to_be_bytes()), None);
        assert_eq!(frame_len([0xff; 4]), None);
    }

    #[tokio::test]
    async fn a_listener_closes_connections_beyond_its_limit_and_oversized_frames() {
        let mut listener = Listener::loopback().await.unwrap();
        let client = Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .bind()
            .await
            .unwrap();
        // An oversized frame: the connection is closed at once (not after its timeout), with
        // no answer, and nothing reaches the driver.
        let conn = client.connect(listener.addr(), ALPN).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        send.write_all(&[b'x'; 64]).await.unwrap();
        let read = tokio::time::timeout(CONNECTION_TIMEOUT / 2, read_body(&mut recv)).await;
        assert!(
            matches!(read, Ok(Err(_))),
            "closed before its timeout: {read:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), listener.recv())
                .await
                .is_err(),
            "no request from a bad frame"
        );
        // Connections that say nothing hold their slots; the next one is closed as busy.
        let mut held = vec![];
        for _ in 0..MAX_CONNECTIONS {
            let c = client.connect(listener.addr(), ALPN).await.unwrap();
            let (mut s, _r) = c.open_bi().await.unwrap();
            s.write_all(&[0]).await.unwrap();
            held.push((c, s, _r));
        }
        let extra = client.connect(listener.addr(), ALPN).await.unwrap();
        let reason = tokio::time::timeout(CONNECTION_TIMEOUT / 2, extra.closed())
            .await
            .expect("the connection beyond the limit is closed at once");
        assert!(
            format!("{reason:?}").contains("503") || format!("{reason}").contains("503"),
            "{reason:?}"
        );
        drop(held);
        client.close().await;
        listener.close().await;
    }
}
