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
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::offer::{self, Offer, Reject, OFFER_KIND, PROTOCOL_TAG};
use crate::mesh::proto::ticket::MeshId;

/// Time to open a connection (TCP, TLS, WebSocket handshake) to one relay.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole query (after connecting) or for a relay's `OK` to a published event.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest WebSocket message (and frame) read from a relay. An `EVENT` message is one offer
/// (at most `offer::MAX_EVENT_BYTES` as we write it) in an envelope of < 100 bytes, but a relay
/// may escape non-ASCII text as `\uXXXX` (up to 3 times the UTF-8 bytes): four times the offer
/// limit leaves room for that and little else. A bigger message is refused from its frame
/// header, before its payload is read (tungstenite's limits), and since a WebSocket cannot skip
/// a message unread, that relay's answer ends there (counted in `dropped_oversized`).
pub const MAX_MESSAGE_BYTES: usize = 4 * offer::MAX_EVENT_BYTES;
/// Most events asked of one relay per query, and held from it.
pub const MAX_EVENTS: usize = 2000;
/// Most bytes of event JSON held from one relay per query (offers are typically 1-2 KiB, so
/// this holds about [`MAX_EVENTS`] honest ones); later events are dropped and counted in
/// `dropped_excess`. With [`MAX_MESSAGE_BYTES`] this bounds what a hostile relay can make a
/// reader hold.
pub const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
    /// Events received and held (fetch) or 1 when the event was accepted (publish).
    pub events: usize,
    /// Messages over [`MAX_MESSAGE_BYTES`] (refused unread; the relay's answer ends at the
    /// first) and events over the offer limit (read one at a time, never held).
    #[serde(default)]
    pub dropped_oversized: u64,
    /// Events beyond [`MAX_EVENTS`] or [`MAX_HELD_BYTES`], dropped.
    #[serde(default)]
    pub dropped_excess: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RelayReport {
    fn new(url: &RelayUrl, answer: Result<usize, String>) -> Self {
        RelayReport {
            url: url.to_string(),
            ok: answer.is_ok(),
            events: *answer.as_ref().unwrap_or(&0),
            dropped_oversized: 0,
            dropped_excess: 0,
            error: answer.err(),
        }
    }
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
/// Never fails: unreachable relays are reported in `relays`. What a relay sent before failing
/// (a timeout, an oversized message) is kept: each offer is checked on its own.
pub async fn fetch_offers(relays: &[RelayUrl], query: &Query, now: u64) -> FetchReport {
    let filter = query.filter();
    let answers =
        futures::future::join_all(relays.iter().map(|url| fetch_raw(url, filter.clone()))).await;
    let mut report = FetchReport::default();
    for (url, (answer, end)) in relays.iter().zip(answers) {
        report.relays.push(RelayReport {
            dropped_oversized: answer.dropped_oversized,
            dropped_excess: answer.dropped_excess,
            ..RelayReport::new(url, end.map(|()| answer.raw.len()))
        });
        if answer.too_large > 0 {
            *report
                .rejected
                .entry(Reject::TooLarge.as_str())
                .or_default() += answer.too_large;
        }
        report.absorb(&answer.raw, now);
    }
    report
}

/// Sends `event` to every relay and waits for each one's `OK`.
pub async fn publish(relays: &[RelayUrl], event: &Event) -> Vec<RelayReport> {
    let answers = futures::future::join_all(relays.iter().map(|url| publish_one(url, event))).await;
    relays
        .iter()
        .zip(answers)
        .map(|(url, answer)| RelayReport::new(url, answer.map(|()| 1)))
        .collect()
}

pub(crate) async fn connect(url: &RelayUrl) -> Result<Socket, String> {
    crate::util::tls::install_crypto_provider();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connecting =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(e)) => Err(format!("cannot connect: {e}")),
        Err(_) => Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())),
    }
}

/// The raw JSON of the events a relay returns for `filter`, until `EOSE`, within bounds; `Err`
/// says why the answer ended early (what came before is still in the answer).
async fn fetch_raw(url: &RelayUrl, filter: Filter) -> (Answer, Result<(), String>) {
    let mut answer = Answer::default();
    let mut socket = match connect(url).await {
        Ok(s) => s,
        Err(e) => return (answer, Err(e)),
    };
    let sub = SubscriptionId::generate();
    let req = ClientMessage::req(sub.clone(), vec![filter]).as_json();
    let result = tokio::time::timeout(REPLY_TIMEOUT, async {
        socket
            .send(Message::text(req))
            .await
            .map_err(|e| e.to_string())?;
        while let Some(msg) = socket.next().await {
            let text = match msg {
                Ok(Message::Text(t)) => t,
                Ok(Message::Close(_)) => return Err("relay closed the connection".into()),
                Ok(_) => continue,
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    answer.dropped_oversized += 1;
                    return Err(format!(
                        "relay sent a {size}-byte message, over the {max_size}-byte limit; stopped reading"
                    ));
                }
                Err(e) => return Err(e.to_string()),
            };
            match answer.take(&text, &sub) {
                Step::More => {}
                Step::Done => return Ok(()),
                Step::Refused(why) => return Err(format!("relay refused the query: {why}")),
            }
        }
        Err("relay closed the connection".into())
    })
    .await;
    let _ = socket
        .send(Message::text(ClientMessage::close(sub).as_json()))
        .await;
    let _ = socket.close(None).await;
    let end = result.unwrap_or_else(|_| {
        Err(format!(
            "no end of results within {}s",
            REPLY_TIMEOUT.as_secs()
        ))
    });
    (answer, end)
}

/// One relay's answer as it arrives, held within [`MAX_EVENTS`] and [`MAX_HELD_BYTES`]. Pure:
/// fed one message at a time.
#[derive(Debug, Default)]
struct Answer {
    raw: Vec<String>,
    held_bytes: usize,
    /// Events over the offer limit (also counted in `dropped_oversized`).
    too_large: u64,
    dropped_oversized: u64,
    dropped_excess: u64,
}

#[derive(Debug, PartialEq)]
enum Step {
    More,
    Done,
    Refused(String),
}

impl Answer {
    fn take(&mut self, text: &str, sub: &SubscriptionId) -> Step {
        match parse_frame(text, sub) {
            Frame::Event(raw) => {
                self.hold(raw);
                Step::More
            }
            Frame::Other => Step::More,
            Frame::Eose => Step::Done,
            Frame::Closed(why) => Step::Refused(why),
        }
    }

    fn hold(&mut self, raw: String) {
        if raw.len() > offer::MAX_EVENT_BYTES {
            self.too_large += 1;
            self.dropped_oversized += 1;
        } else if self.raw.len() >= MAX_EVENTS || self.held_bytes + raw.len() > MAX_HELD_BYTES {
            self.dropped_excess += 1;
        } else {
            self.held_bytes += raw.len();
            self.raw.push(raw);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event_frame(sub: &SubscriptionId, content_bytes: usize) -> String {
        let event = serde_json::json!({ "content": "x".repeat(content_bytes) });
        serde_json::json!(["EVENT", sub.as_str(), event]).to_string()
    }

    #[test]
    fn events_over_the_offer_limit_are_counted_and_not_held() {
        let sub = SubscriptionId::new("s");
        let mut a = Answer::default();
        assert_eq!(a.take(&event_frame(&sub, 100), &sub), Step::More);
        assert_eq!(
            a.take(&event_frame(&sub, offer::MAX_EVENT_BYTES), &sub),
            Step::More
        );
        assert_eq!(a.raw.len(), 1);
        assert_eq!((a.too_large, a.dropped_oversized), (1, 1));
    }

    #[test]
    fn events_beyond_the_held_bytes_are_dropped_as_excess() {
        let sub = SubscriptionId::new("s");
        let mut a = Answer::default();
        let frame = event_frame(&sub, offer::MAX_EVENT_BYTES - 100);
        // Twice as many as fit.
        let n = 2 * MAX_HELD_BYTES / (offer::MAX_EVENT_BYTES - 100);
        for _ in 0..n {
            a.take(&frame, &sub);
        }
        assert!(a.held_bytes <= MAX_HELD_BYTES);
        assert_eq!(a.raw.len() as u64 + a.dropped_excess, n as u64);
        assert!(
            a.dropped_excess as usize >= n / 2 - 1,
            "{}",
            a.dropped_excess
        );
    }

    #[test]
    fn events_beyond_max_events_are_dropped_as_excess() {
        let sub = SubscriptionId::new("s");
        let mut a = Answer::default();
        let frame = event_frame(&sub, 10);
        for _ in 0..MAX_EVENTS + 5 {
            a.take(&frame, &sub);
        }
        assert_eq!((a.raw.len(), a.dropped_excess), (MAX_EVENTS, 5));
    }

    #[test]
    fn eose_ends_closed_refuses_and_other_subscriptions_are_ignored() {
        let sub = SubscriptionId::new("s");
        let mut a = Answer::default();
        let other = SubscriptionId::new("t");
        assert_eq!(a.take(&event_frame(&other, 10), &sub), Step::More);
        assert!(a.raw.is_empty());
        assert_eq!(a.take("not json", &sub), Step::More);
        assert_eq!(a.take(r#"["EOSE","s"]"#, &sub), Step::Done);
        assert_eq!(
            a.take(r#"["CLOSED","s","error: no"]"#, &sub),
            Step::Refused("error: no".into())
        );
    }
}
