//! Talking to Nostr relays: fetch offers (`REQ` until `EOSE`) and publish events (`EVENT` until
//! `OK`), one bounded attempt per relay, all relays at once.
//!
//! Written on tokio-tungstenite with the `nostr` crate's message types rather than nostr-sdk's
//! `Client`, on purpose: the SDK's relay pool verifies and silently drops invalid or expired
//! events (we validate every event under our own rules and count each rejection), and it keeps
//! reconnecting in the background (a node with unreachable relays must get a clear error within
//! a bounded time, then retry on its own schedule).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nostr::{
    ClientMessage, Event, Filter, JsonUtil, Kind, PublicKey, RelayMessage, RelayUrl,
    SingleLetterTag, SubscriptionId,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::offer::{self, Offer, OFFER_KIND, PROTOCOL_TAG};
use crate::mesh::proto::ticket::MeshId;

/// Time to open a connection (TCP, TLS, WebSocket handshake) to one relay.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole query (after connecting) or for a relay's `OK` to a published event.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest WebSocket message read from a relay (bigger ones end the connection).
const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Most events asked of one relay per query.
pub const MAX_EVENTS: usize = 2000;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What to ask relays for: offers, optionally only those serving a model or in a region (relays
/// filter on the single-letter tags).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub model: Option<String>,
    pub region: Option<String>,
}

impl Query {
    fn filter(&self) -> Filter {
        let mut f = Filter::new()
            .kind(Kind::Custom(OFFER_KIND))
            .custom_tag(
                SingleLetterTag::lowercase(offer::TAG_PROTOCOL),
                PROTOCOL_TAG,
            )
            .limit(MAX_EVENTS);
        if let Some(m) = &self.model {
            f = f.custom_tag(SingleLetterTag::lowercase(offer::TAG_MODEL), m);
        }
        if let Some(r) = &self.region {
            f = f.custom_tag(SingleLetterTag::lowercase(offer::TAG_REGION), r);
        }
        f
    }
}

/// How one relay answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayReport {
    pub url: String,
    pub ok: bool,
    /// Events received (fetch) or 1 when the event was accepted (publish).
    pub events: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Valid offers (newest per publisher and mesh), rejections by reason, and each relay's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FetchReport {
    pub offers: Vec<Offer>,
    pub rejected: BTreeMap<&'static str, u64>,
    pub relays: Vec<RelayReport>,
}

impl FetchReport {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Validates raw events (from any number of relays) into this report.
    pub fn absorb(&mut self, raw_events: &[String], now: u64) {
        let mut newest: HashMap<(PublicKey, MeshId), Offer> = self
            .offers
            .drain(..)
            .map(|o| ((o.publisher, o.mesh_id), o))
            .collect();
        for raw in raw_events {
            match offer::validate(raw, now) {
                Ok(o) => {
                    let key = (o.publisher, o.mesh_id);
                    if newest
                        .get(&key)
                        .is_none_or(|old| old.created_at < o.created_at)
                    {
                        newest.insert(key, o);
                    }
                }
                Err(reject) => {
                    tracing::debug!(reason = reject.as_str(), "offer dropped: {reject}");
                    *self.rejected.entry(reject.as_str()).or_default() += 1;
                }
            }
        }
        self.offers = newest.into_values().collect();
        self.offers.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(a.event_id.cmp(&b.event_id))
        });
    }
}

/// Asks every relay for offers matching `query`; validates and de-duplicates what comes back.
/// Never fails: unreachable relays are reported in `relays`.
pub async fn fetch_offers(relays: &[RelayUrl], query: &Query, now: u64) -> FetchReport {
    let filter = query.filter();
    let answers =
        futures::future::join_all(relays.iter().map(|url| fetch_raw(url, filter.clone()))).await;
    let mut report = FetchReport::default();
    for (url, answer) in relays.iter().zip(answers) {
        match answer {
            Ok(raw) => {
                report.relays.push(RelayReport {
                    url: url.to_string(),
                    ok: true,
                    events: raw.len(),
                    error: None,
                });
                report.absorb(&raw, now);
            }
            Err(e) => report.relays.push(RelayReport {
                url: url.to_string(),
                ok: false,
                events: 0,
                error: Some(e),
            }),
        }
    }
    report
}

/// Sends `event` to every relay and waits for each one's `OK`.
pub async fn publish(relays: &[RelayUrl], event: &Event) -> Vec<RelayReport> {
    let answers = futures::future::join_all(relays.iter().map(|url| publish_one(url, event))).await;
    relays
        .iter()
        .zip(answers)
        .map(|(url, answer)| RelayReport {
            url: url.to_string(),
            ok: answer.is_ok(),
            events: usize::from(answer.is_ok()),
            error: answer.err(),
        })
        .collect()
}

async fn connect(url: &RelayUrl) -> Result<Socket, String> {
    crate::util::tls::install_crypto_provider();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The raw JSON of every event a relay returns for `filter`, until `EOSE`.
async fn fetch_raw(url: &RelayUrl, filter: Filter) -> Result<Vec<String>, String> {
    let mut socket = connect(url).await?;
    let sub = SubscriptionId::generate();
    let req = ClientMessage::req(sub.clone(), vec![filter]).as_json();
    let result = tokio::time::timeout(REPLY_TIMEOUT, async {
        socket
            .send(Message::text(req))
            .await
            .map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        while let Some(msg) = socket.next().await {
            let text = match msg.map_err(|e| e.to_string())? {
                Message::Text(t) => t,
                Message::Close(_) => return Err("relay closed the connection".into()),
                _ => continue,
            };
            match parse_frame(&text, &sub) {
                Frame::Event(raw) if events.len() < MAX_EVENTS => events.push(raw),
                Frame::Event(_) | Frame::Other => {}
                Frame::Eose => return Ok(events),
                Frame::Closed(why) => return Err(format!("relay refused the query: {why}")),
            }
        }
        Err("relay closed the connection".into())
    })
    .await;
    let _ = socket
        .send(Message::text(ClientMessage::close(sub).as_json()))
        .await;
    let _ = socket.close(None).await;
    match result {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no end of results within {}s",
            REPLY_TIMEOUT.as_secs()
        )),
    }
}

enum Frame {
    /// The event's JSON, unparsed: validation (and its counters) happen in `offer::validate`.
    Event(String),
    Eose,
    Closed(String),
    Other,
}

fn parse_frame(text: &str, sub: &SubscriptionId) -> Frame {
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Frame::Other;
    };
    let ours = items.get(1).and_then(|v| v.as_str()) == Some(sub.as_str());
    match (items.first().and_then(|v| v.as_str()), ours) {
        (Some("EVENT"), true) => items
            .get(2)
            .map_or(Frame::Other, |e| Frame::Event(e.to_string())),
        (Some("EOSE"), true) => Frame::Eose,
        (Some("CLOSED"), true) => Frame::Closed(
            items
                .get(2)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
        ),
        _ => Frame::Other,
    }
}

async fn publish_one(url: &RelayUrl, event: &Event) -> Result<(), String> {
    let mut socket = connect(url).await?;
    let msg = ClientMessage::event(event.clone()).as_json();
    let result = tokio::time::timeout(REPLY_TIMEOUT, async {
        socket
            .send(Message::text(msg))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(msg) = socket.next().await {
            let Message::Text(text) = msg.map_err(|e| e.to_string())? else {
                continue;
            };
            if let Ok(RelayMessage::Ok {
                event_id,
                status,
                message,
            }) = RelayMessage::from_json(text.as_str())
            {
                if event_id == event.id {
                    return if status {
                        Ok(())
                    } else {
                        Err(format!("relay refused the event: {message}"))
                    };
                }
            }
        }
        Err("relay closed the connection".to_string())
    })
    .await;
    let _ = socket.close(None).await;
    match result {
        Ok(r) => r,
        Err(_) => Err(format!("no OK within {}s", REPLY_TIMEOUT.as_secs())),
    }
}

/// Relay URLs from `--relay` flags, else `$MESH_RELAYS` (comma or space separated), else the
/// default public list.
pub fn relay_list(flags: &[RelayUrl]) -> Result<Vec<RelayUrl>, String> {
    if !flags.is_empty() {
        return Ok(flags.to_vec());
    }
    if let Ok(env) = std::env::var(RELAYS_ENV) {
        let urls: Result<Vec<_>, _> = env
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|s| RelayUrl::parse(s).map_err(|e| format!("{RELAYS_ENV}: {s:?}: {e}")))
            .collect();
        let urls = urls?;
        if !urls.is_empty() {
            return Ok(urls);
        }
    }
    Ok(DEFAULT_RELAYS
        .iter()
        .map(|u| RelayUrl::parse(u).expect("default relay URLs are valid"))
        .collect())
}

/// Environment variable with relay URLs.
pub const RELAYS_ENV: &str = "MESH_RELAYS";
/// Public relays used when none are given.
pub const DEFAULT_RELAYS: &[&str] = &[
    "wss://relay.damus.io",
    "wss://nos.lol",
    "wss://relay.primal.net",
];
