//! The rendezvous channel over Nostr relays: every relay in use is subscribed to the channel's
//! ephemeral events (kind [`INVITE_KIND`], tag `t` = the channel tag); what one side sends goes
//! to all of them. Events are signed by a key made for this one rendezvous, so they name no
//! node, no mesh and no person. This file only moves events; `proto` decides.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nostr::{
    ClientMessage, Event, EventBuilder, Filter, JsonUtil, Keys, Kind, PublicKey, RelayMessage,
    RelayUrl, SubscriptionId, Tag, Timestamp,
};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::proto::{Body, MAX_BODY_BYTES};
use crate::discovery::nostr_io::{connect, REPLY_TIMEOUT};

/// Kind of rendezvous events: ephemeral (20000-29999), so relays pass them on and keep none.
pub const INVITE_KIND: u16 = 21_337;
/// Messages waiting to be read by the driver; more from a flooding relay are dropped.
const INCOMING_QUEUE: usize = 64;
/// Event ids remembered to drop the copies other relays deliver.
const SEEN_IDS: usize = 256;
/// A WebSocket ping this often keeps a quiet subscription open (relays close idle sessions;
/// `mesh relay` after 120 s).
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Pauses before opening a session again after the relay ended one.
const RECONNECT_MIN: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// A message from the channel: its author (the other side's throwaway key) and whether it is
/// addressed (`p` tag) to us.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub from: PublicKey,
    pub to_us: bool,
    pub body: Body,
}

/// An open rendezvous channel. Dropping it closes the relay connections.
pub struct Channel {
    keys: Keys,
    tag: String,
    out: broadcast::Sender<String>,
    incoming: mpsc::Receiver<Event>,
    seen: VecDeque<nostr::EventId>,
    _stop: DropGuard,
}

impl Channel {
    /// Subscribes on every relay; ready when at least one has answered the subscription
    /// (`EOSE`), so nothing sent after this returns is missed. `Err` when no relay answered.
    pub async fn open(relays: &[RelayUrl], tag: &str) -> Result<Channel, String> {
        let stop = CancellationToken::new();
        let (out, _) = broadcast::channel(16);
        let (in_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let (ready_tx, mut ready_rx) = mpsc::channel(relays.len().max(1));
        for url in relays {
            tokio::spawn(relay_task(
                url.clone(),
                tag.to_string(),
                out.subscribe(),
                in_tx.clone(),
                ready_tx.clone(),
                stop.clone(),
            ));
        }
        drop(ready_tx);
        let mut errors = vec![];
        while let Some(answer) = ready_rx.recv().await {
            match answer {
                Ok(()) => {
                    return Ok(Channel {
                        keys: Keys::generate(),
                        tag: tag.to_string(),
                        out,
                        incoming,
                        seen: VecDeque::new(),
                        _stop: stop.drop_guard(),
                    })
                }
                Err(e) => errors.push(e),
            }
        }
        // Nobody will hold the channel: its relay tasks end now.
        stop.cancel();
        Err(format!(
            "no Nostr relay took the rendezvous subscription: {}",
            errors.join("; ")
        ))
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// Sends `body` on the channel, to `to` when given (a `p` tag).
    pub fn send(&self, to: Option<PublicKey>, body: &Body) {
        let mut tags = vec![Tag::hashtag(self.tag.clone())];
        tags.extend(to.map(Tag::public_key));
        let event = EventBuilder::new(Kind::Custom(INVITE_KIND), body.encode())
            .tags(tags)
            .custom_created_at(Timestamp::now())
            .sign_with_keys(&self.keys);
        match event {
            Ok(e) => {
                let _ = self.out.send(ClientMessage::event(e).as_json());
            }
            Err(e) => tracing::warn!("cannot sign a rendezvous event: {e}"),
        }
    }

    /// The next valid message from someone else; `None` when every relay is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        let me = self.keys.public_key();
        loop {
            let event = self.incoming.recv().await?;
            if event.pubkey == me || self.seen.contains(&event.id) {
                continue;
            }
            if self.seen.len() >= SEEN_IDS {
                self.seen.pop_front();
            }
            self.seen.push_back(event.id);
            let to: Vec<&PublicKey> = event.tags.public_keys().collect();
            if !to.is_empty() && !to.contains(&&me) {
                continue;
            }
            let Some(body) = Body::decode(&event.content) else {
                continue;
            };
            return Some(Incoming {
                from: event.pubkey,
                to_us: !to.is_empty(),
                body,
            });
        }
    }
}

/// One relay: subscribe, report readiness (first session only), then pass events both ways
/// until stopped; a session the relay ends (idle timeout, restart) is opened again after a
/// growing pause, so a code keeps working for its whole lifetime.
async fn relay_task(
    url: RelayUrl,
    tag: String,
    mut out: broadcast::Receiver<String>,
    incoming: mpsc::Sender<Event>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    let mut pause = RECONNECT_MIN;
    loop {
        let was_up = session(&url, &tag, &mut out, &incoming, &mut ready, &stop).await;
        if let Some(tx) = ready.take() {
            let _ = tx.try_send(Err(format!("{url}: closed before the subscription was up")));
        }
        if stop.is_cancelled() {
            return;
        }
        pause = if was_up {
            RECONNECT_MIN
        } else {
            (pause * 2).min(RECONNECT_MAX)
        };
        tracing::debug!("rendezvous: {url}: session ended; again in {pause:?}");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One session with a relay; `true` when it got as far as the subscription's `EOSE`.
async fn session(
    url: &RelayUrl,
    tag: &str,
    out: &mut broadcast::Receiver<String>,
    incoming: &mpsc::Sender<Event>,
    ready: &mut Option<mpsc::Sender<Result<(), String>>>,
    stop: &CancellationToken,
) -> bool {
    let report = |ready: &mut Option<mpsc::Sender<Result<(), String>>>, r: Result<(), String>| {
        if let Some(tx) = ready.take() {
            let _ = tx.try_send(r);
        }
    };
    let mut socket = match connect(url).await {
        Ok(s) => s,
        Err(e) => {
            report(ready, Err(format!("{url}: {e}")));
            return false;
        }
    };
    let sub = SubscriptionId::generate();
    let filter = Filter::new()
        .kind(Kind::Custom(INVITE_KIND))
        .hashtag(tag.to_string())
        .since(Timestamp::from(
            Timestamp::now().as_secs().saturating_sub(5),
        ));
    let req = ClientMessage::req(sub.clone(), vec![filter]).as_json();
    if let Err(e) = socket.send(Message::text(req)).await {
        report(ready, Err(format!("{url}: {e}")));
        return false;
    }
    let mut up = false;
    let deadline = tokio::time::sleep(REPLY_TIMEOUT);
    tokio::pin!(deadline);
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut deadline, if !up => {
                report(ready, Err(format!("{url}: no answer to the subscription")));
                break;
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            sent = out.recv() => match sent {
                Ok(json) => {
                    if let Err(e) = socket.send(Message::text(json)).await {
                        tracing::debug!("rendezvous: {url}: {e}");
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = socket.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                if text.len() > 4 * MAX_BODY_BYTES {
                    continue;
                }
                match RelayMessage::from_json(text.as_str()) {
                    Ok(RelayMessage::EndOfStoredEvents(id)) if *id == sub => {
                        up = true;
                        report(ready, Ok(()));
                    }
                    Ok(RelayMessage::Event { subscription_id, event }) if *subscription_id == sub => {
                        let event = event.into_owned();
                        if event.kind == Kind::Custom(INVITE_KIND) && event.verify().is_ok() {
                            // Full queue: a flood; the driver sees what it can keep up with.
                            let _ = incoming.try_send(event);
                        }
                    }
                    Ok(RelayMessage::Ok { status: false, message, .. }) => {
                        tracing::debug!("rendezvous: {url} refused an event: {message}");
                    }
                    Ok(RelayMessage::Closed { subscription_id, message }) if *subscription_id == sub => {
                        report(ready, Err(format!("{url}: refused: {message}")));
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = socket.close(None).await;
    up
}
