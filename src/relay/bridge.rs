//! One client's WebSocket session, read under our limits and handed to the `LocalRelay` over an
//! in-process pipe.
//!
//! Why by hand: nostr-relay-builder takes an upgraded stream and reads it with tungstenite's
//! defaults (64 MiB messages, 16 MiB frames, no idle timeout) and has no option to change them.
//! So the client's socket is read here by tokio-tungstenite with a message limit
//! ([`Limits::max_message_bytes`], frames over it are refused from their header, before their
//! payload is buffered) and an idle timeout, and each message is passed on to the relay over a
//! `tokio::io::duplex` pipe framed as a second WebSocket; the relay's answers come back the same
//! way, each send to the client bounded by the same timeout (a client that stops reading cannot
//! hold a session forever).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nostr_relay_builder::LocalRelay;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bytes in flight in the pipe between a session and the relay.
const PIPE_BYTES: usize = 64 * 1024;
/// Read buffer of each of our two WebSockets per session (tungstenite's default, 128 KiB, is
/// allocated and zeroed per socket: with 256 sessions that alone would be 64 MiB).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What one session may do.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Largest WebSocket message (and frame) read from a client; a bigger one closes the
    /// session with code 1009 (message too big).
    pub(super) max_message_bytes: usize,
    /// A session with no message either way for this long is closed, and so is one whose client
    /// does not take a message within it.
    pub(super) idle: Duration,
}

type Close = Option<(CloseCode, &'static str)>;

/// Serves one upgraded connection until either side closes, the client breaks a limit, or the
/// relay shuts down.
pub(super) async fn serve<S>(io: S, relay: LocalRelay, peer: SocketAddr, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes));
    let client = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (relay_end, our_end) = tokio::io::duplex(PIPE_BYTES);
    let session = tokio::spawn(async move {
        if let Err(e) = relay.take_connection(relay_end, peer).await {
            tracing::debug!(%peer, "relay: session ended: {e}");
        }
    });
    let pipe_config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let relay_ws = WebSocketStream::from_raw_socket(our_end, Role::Client, Some(pipe_config)).await;
    let (mut to_client, mut from_client) = client.split();
    let (mut to_relay, mut from_relay) = relay_ws.split();
    // Two pumps, one per direction, so neither waits on the other (the relay stops reading
    // while it writes, and the pipe is bounded both ways).
    let last_message = Mutex::new(Instant::now());
    let close = tokio::select! {
        c = up(&mut from_client, &mut to_relay, &last_message, limits, peer) => c,
        c = down(&mut from_relay, &mut to_client, &last_message, limits, peer) => c,
    };
    let _ = timeout(CLOSE_WITHIN, to_relay.close()).await;
    drop((to_relay, from_relay));
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = timeout(CLOSE_WITHIN, to_client.send(Message::Close(Some(frame)))).await;
        if let Ok(ws) = to_client.reunite(from_client) {
            linger(ws).await;
        }
    }
    let _ = session.await;
}

/// Time to send a close frame, and then to read what the client still sends, before the
/// socket is dropped.
const CLOSE_WITHIN: Duration = Duration::from_secs(1);
/// Most bytes read (and discarded) from a client after closing its session.
const LINGER_BYTES: usize = 1024 * 1024;

/// Ends our side and reads what the client had in flight (the rest of a message too big, say)
/// until it closes too, within [`CLOSE_WITHIN`] and [`LINGER_BYTES`]: closing a socket with
/// unread data sends a TCP reset, which can destroy the close frame before the client reads it.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    let io = ws.get_mut();
    let _ = timeout(CLOSE_WITHIN, async {
        let _ = io.shutdown().await;
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// Client to relay, until the client closes, breaks a limit, or nothing moved for
/// `limits.idle` (either way: `down` notes the relay's messages in `last_message`).
async fn up<C, R>(
    from_client: &mut C,
    to_relay: &mut R,
    last_message: &Mutex<Instant>,
    limits: Limits,
    peer: SocketAddr,
) -> Close
where
    C: futures::Stream<Item = Result<Message, WsError>> + Unpin,
    R: futures::Sink<Message> + Unpin,
{
    let touch = || *last_message.lock().expect("not poisoned") = Instant::now();
    loop {
        let idle_until = *last_message.lock().expect("not poisoned") + limits.idle;
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(idle_until) => {
                if *last_message.lock().expect("not poisoned") + limits.idle > Instant::now() {
                    continue;
                }
                tracing::debug!(%peer, "relay: session idle for {:?}, closed", limits.idle);
                return Some((CloseCode::Away, "idle"));
            }
            msg = from_client.next() => msg,
        };
        match msg {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                touch();
                if to_relay.send(msg).await.is_err() {
                    return None;
                }
            }
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Ok(_)) => touch(),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                tracing::debug!(%peer, size, max_size, "relay: message too big, session closed");
                return Some((CloseCode::Size, "message too big"));
            }
            Some(Err(e)) => {
                tracing::debug!(%peer, "relay: session read failed: {e}");
                return None;
            }
        }
    }
}

/// Relay to client, each message within `limits.idle` (a client that stops reading is dropped).
async fn down<R, C>(
    from_relay: &mut R,
    to_client: &mut C,
    last_message: &Mutex<Instant>,
    limits: Limits,
    peer: SocketAddr,
) -> Close
where
    R: futures::Stream<Item = Result<Message, WsError>> + Unpin,
    C: futures::Sink<Message> + Unpin,
{
    while let Some(Ok(msg)) = from_relay.next().await {
        if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
            continue;
        }
        *last_message.lock().expect("not poisoned") = Instant::now();
        match timeout(limits.idle, to_client.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return None,
            Err(_) => {
                tracing::debug!(%peer, "relay: client does not read, session closed");
                return None;
            }
        }
    }
    Some((CloseCode::Away, "relay closing"))
}
