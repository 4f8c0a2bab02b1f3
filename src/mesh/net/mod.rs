//! The mesh's IO: the iroh endpoint and the tasks that drive the pure pieces of `proto` and
//! `state` with real connections.
//! - [`endpoint`]: building the iroh endpoint (relays, bind address, TLS roots).
//! - [`gate`]: endpoint hooks that close every protocol to nodes not admitted.
//! - [`admit`]: the admission handshake's two IO sides and the outgoing admitter task.
//! - [`membership`]: the iroh-gossip driver (announcements, receive, liveness, sweep, paths).
//! - [`roster`]: `mesh/roster/2`, a neighbour's signed announcements for a newcomer.
//! - [`tunnel`]: `mesh/http/1`, HTTP/1.1 over QUIC streams (the calling side).
//! - [`tunnel_server`]: the serving side of `mesh/http/1`.
//! - [`ping`]: `mesh/ping/1`, the echo discovery's RTT probe times.
//! - [`offer`]: `mesh/offer/1`, the mesh's signed offer handed out directly (LAN, `--peers`).
//! - [`lan`]: `--lan`, mDNS: advertising this node and finding others on the LAN.
//! - [`msg`]: `mesh/msg/1`, text messages between members.
//! - [`tcp_share`]: `mesh/tcp/1`, TCP services shared with members (`mesh share`, `connect`).
//! - [`splice`]: carrying bytes both ways between two streams (half-close, backpressure, idle).
//! - [`rpc`]: `mesh/rpc/1`, split serving: llama.cpp RPC connections carried to a worker.
//! - [`report`]: `mesh network`: what the relays see of this machine.

pub mod admit;
pub mod endpoint;
pub mod gate;
pub mod lan;
pub(crate) mod membership;
pub mod msg;
pub mod offer;
pub mod ping;
pub mod report;
pub mod roster;
pub mod rpc;
pub mod splice;
pub(crate) mod stall;
pub mod tcp_share;
pub mod tunnel;
pub mod tunnel_server;

/// Dials `peer` on `alpn`, opens one bidirectional stream and sends `request` on it, finished:
/// the first half of every one-question exchange between members (`msg`, `roster`). Returns
/// the connection (to close once answered) and the stream to read the answer from.
pub(crate) async fn ask(
    endpoint: &iroh::Endpoint,
    peer: iroh::EndpointId,
    alpn: &[u8],
    request: &[u8],
) -> Result<(iroh::endpoint::Connection, iroh::endpoint::RecvStream), String> {
    let conn = endpoint
        .connect(peer, alpn)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(request).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    Ok((conn, recv))
}
