//! `mesh/offer/1`: a node that publishes its mesh's offer also hands the signed offer to whoever
//! asks, directly over iroh — how `mesh discover --lan`, `mesh --auto --lan` and `--peers FILE`
//! find meshes with no Nostr relay and no internet. Open to every node (the gate lets this ALPN
//! through like ping); the offer is public anyway.
//!
//! The mesh does not know what an offer is (discovery signs it): it serves the bytes it was
//! last given ([`OfferSlot`], filled by the publisher), or nothing. The dialer opens one
//! bidirectional stream and writes [`REQUEST`]; the acceptor answers with the offer (the Nostr
//! event's JSON, at most [`MAX_OFFER_BYTES`]) and finishes the stream; an empty answer means
//! "no offer". One request per connection, within [`SERVE_TIMEOUT`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr};

pub const ALPN: &[u8] = b"mesh/offer/1";
/// What the dialer writes: the request, and the protocol's name once more.
pub const REQUEST: &[u8] = b"offer?";
/// Largest offer served or read (the same bound as discovery's `MAX_EVENT_BYTES`).
pub const MAX_OFFER_BYTES: usize = 16 * 1024;
/// Stream reset code for a request that is not [`REQUEST`].
pub const BAD_REQUEST: u32 = 400;
/// How long the acceptor gives a connection for its one request and answer.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The offer this node serves now: the signed event's JSON, or none (not publishing).
#[derive(Debug, Clone, Default)]
pub struct OfferSlot(Arc<RwLock<Option<Arc<str>>>>);

impl OfferSlot {
    /// Serves `offer` from now on (`None`: serve nothing). Larger than [`MAX_OFFER_BYTES`] is
    /// not served.
    pub fn set(&self, offer: Option<String>) {
        let offer = offer.filter(|o| o.len() <= MAX_OFFER_BYTES).map(Arc::from);
        if let Ok(mut slot) = self.0.write() {
            *slot = offer;
        }
    }

    pub fn get(&self) -> Option<Arc<str>> {
        self.0.read().ok().and_then(|s| s.clone())
    }
}

/// The acceptor side, registered on the node's router.
#[derive(Debug, Clone)]
pub struct OfferServer {
    pub slot: OfferSlot,
}

impl ProtocolHandler for OfferServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let answer = async {
            let (mut send, mut recv) = conn.accept_bi().await.ok()?;
            let request = recv.read_to_end(REQUEST.len()).await;
            if request.as_deref().ok() != Some(REQUEST) {
                let _ = send.reset(BAD_REQUEST.into());
                return None;
            }
            let offer = self.slot.get();
            send.write_all(offer.as_deref().unwrap_or_default().as_bytes())
                .await
                .ok()?;
            send.finish().ok()
        };
        if tokio::time::timeout(SERVE_TIMEOUT, answer).await.is_ok() {
            // The dialer closes once it has the answer; do not cut the last frame off.
            let _ = tokio::time::timeout(SERVE_TIMEOUT, conn.closed()).await;
        }
        Ok(())
    }
}

/// Asks the node at `addr` for its offer: `Ok(None)` when it serves none. The caller bounds the
/// time (dialling included).
pub async fn fetch(endpoint: &Endpoint, addr: EndpointAddr) -> Result<Option<String>, String> {
    let conn = endpoint
        .connect(addr, ALPN)
        .await
        .map_err(|e| e.to_string())?;
    let answer = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(REQUEST).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(MAX_OFFER_BYTES)
            .await
            .map_err(|e| format!("bad answer: {e}"))
    }
    .await;
    conn.close(0u8.into(), b"done");
    let bytes = answer?;
    if bytes.is_empty() {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "the offer is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::endpoint::presets;
    use iroh::protocol::Router;

    async fn endpoint() -> Endpoint {
        Endpoint::builder(presets::Minimal)
            .relay_mode(iroh::RelayMode::Disabled)
            .bind_addr((std::net::Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .bind()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_the_offer_it_was_given_and_nothing_else() {
        let slot = OfferSlot::default();
        let server = endpoint().await;
        let router = Router::builder(server.clone())
            .accept(ALPN, OfferServer { slot: slot.clone() })
            .spawn();
        let client = endpoint().await;
        let ask = || fetch(&client, server.addr());
        assert_eq!(ask().await, Ok(None), "nothing set: nothing served");
        slot.set(Some("{\"offer\":1}".into()));
        assert_eq!(ask().await, Ok(Some("{\"offer\":1}".into())));
        // Too large to be an offer: not served.
        slot.set(Some("x".repeat(MAX_OFFER_BYTES + 1)));
        assert_eq!(ask().await, Ok(None));
        // A request that is not `offer?` gets no answer.
        let conn = client.connect(server.addr(), ALPN).await.unwrap();
        slot.set(Some("secret-free but unasked".into()));
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"other!").await.unwrap();
        send.finish().unwrap();
        assert!(recv.read_to_end(MAX_OFFER_BYTES).await.is_err());
        router.shutdown().await.unwrap();
    }
}
