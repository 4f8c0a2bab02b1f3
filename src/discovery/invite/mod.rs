//! Join codes (`mesh invite`, `mesh join CODE`, `mesh serve --join CODE`): a short code traded
//! for the mesh's ticket through a SPAKE2 rendezvous on the Nostr relays in use, or, with
//! `--lan`, on the LAN (mDNS and a direct iroh connection: no relay, no internet).
//!
//! - [`code`]: the code's form, its wordlist, the channel tag and password (pure).
//! - [`proto`]: the rendezvous messages and both sides' state machines (pure).
//! - [`rendezvous`]: the Nostr channel: ephemeral events between two throwaway keys (IO).
//! - [`lan`]: the LAN channel: an mDNS-advertised endpoint per code, frames on `mesh/invite/1`.
//! - here: [`Invites`], the inviting node's live codes (one driver task each, answering on every
//!   channel the code was opened on, with one state machine: uses and burns count across them),
//!   and [`redeem`] / [`redeem_lan`], the joining side.
//!
//! docs/PROTOCOL.md ("Join codes") has the events; docs/SECURITY.md why guessing does not pay.

pub mod code;
pub mod lan;
pub mod proto;
pub mod rendezvous;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nostr::RelayUrl;
use rand::Rng;
use tokio_util::sync::CancellationToken;

pub use code::{Code, CodeError};
pub use proto::{Closed, JoinError};
pub use rendezvous::INVITE_KIND;

use proto::{Action, Inviter, Joiner, Step};
use rendezvous::{Channel, Incoming};

/// Codes one node keeps open at once (each holds a connection to every relay).
pub const MAX_LIVE_INVITES: usize = 16;
/// Longest `--ttl`.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most uses of one code.
pub const MAX_USES: u32 = 1000;
/// After its code has closed (expired, used up, burned), a driver still answers for this long,
/// so that a late joiner hears why rather than nothing.
pub const CLOSED_GRACE: Duration = Duration::from_secs(600);
/// How long a joiner waits for the inviting node's answers.
pub const REDEEM_TIMEOUT: Duration = Duration::from_secs(20);
/// A joiner with no answer yet sends its first message again this often (a relay between
/// sessions, or a lost event, must not cost the whole wait).
pub const RESEND_EVERY: Duration = Duration::from_secs(2);

/// Why no invite could be made.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("this node has {MAX_LIVE_INVITES} join codes open already; wait for some to end")]
    TooMany,
    #[error("{0}")]
    Relays(String),
    #[error("cannot answer on the LAN: {0}")]
    Lan(String),
}

/// Why a code brought no ticket.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error(transparent)]
    Code(#[from] CodeError),
    #[error(transparent)]
    Refused(#[from] JoinError),
    #[error("{0}")]
    Relays(String),
    #[error(
        "no node answered join code {0} within {1}s: the inviting node is not running, uses \
         other Nostr relays (--relay), or the code ended long ago"
    )]
    NoAnswer(u16, u64),
    #[error("{0}")]
    Lan(String),
    #[error(
        "nobody on the LAN answered join code {0} within {1}s: the inviting node did not run \
         `mesh invite --lan`, is on another network segment (mDNS does not cross routers), or \
         the code ended long ago"
    )]
    NoLanAnswer(u16, u64),
}

/// Where a code answers (`POST /api/invite`'s `lan`): the Nostr relays, the LAN, or both.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    /// Nostr relays to answer on (none: not on Nostr).
    pub relays: Vec<RelayUrl>,
    /// Answer on the LAN too. A LAN code opens even when no relay answers.
    pub lan: bool,
}

/// One open code, as `POST /api/invite` shows it.
#[derive(Debug, Clone)]
pub struct InviteInfo {
    pub code: String,
    pub uses: u32,
    pub ttl: Duration,
    /// Whether it answers on the Nostr relays (a relay took the subscription).
    pub nostr: bool,
    /// Whether it answers on the LAN.
    pub lan: bool,
}

struct Live {
    channel: u16,
    ends: Instant,
    _stop: tokio_util::sync::DropGuard,
}

/// A node's open join codes. Clone freely; dropping the last clone ends every driver.
#[derive(Clone, Default)]
pub struct Invites {
    live: Arc<Mutex<Vec<Live>>>,
}

impl Invites {
    /// Opens a code for `ticket` on `channels`: `uses` joins within `ttl`. Returns once the
    /// rendezvous subscription (and the LAN endpoint) is up, so the code works as soon as it is
    /// printed. With the LAN, relays that do not answer only leave the code LAN-only.
    pub async fn create(
        &self,
        channels: &Channels,
        ticket: String,
        uses: u32,
        ttl: Duration,
    ) -> Result<InviteInfo, InviteError> {
        let (uses, ttl) = (uses.clamp(1, MAX_USES), ttl.min(MAX_TTL));
        let stop = CancellationToken::new();
        let expires = Instant::now() + ttl;
        let ends = expires + CLOSED_GRACE;
        // The channel number is taken (under the lock) before the relays are asked, so two
        // invites made at once never share one.
        let code = {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            live.retain(|l| l.ends > now);
            if live.len() >= MAX_LIVE_INVITES {
                return Err(InviteError::TooMany);
            }
            let mut rng = rand::rng();
            let channel = loop {
                let c = rng.random_range(1..=code::MAX_CHANNEL);
                if !live.iter().any(|l| l.channel == c) {
                    break c;
                }
            };
            live.push(Live {
                channel,
                ends,
                _stop: stop.clone().drop_guard(),
            });
            Code::generate(channel, |n| rng.random_range(0..n))
        };
        let forget = |e: InviteError| {
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.retain(|l| l.channel != code.channel);
            e
        };
        let listener = if channels.lan {
            Some(
                lan::Listener::bind(&code.channel_tag())
                    .await
                    .map_err(|e| forget(InviteError::Lan(e)))?,
            )
        } else {
            None
        };
        let nostr = if channels.relays.is_empty() {
            None
        } else {
            match Channel::open(&channels.relays, &code.channel_tag()).await {
                Ok(c) => Some(c),
                Err(e) if listener.is_some() => {
                    tracing::warn!("join code {}-…: on the LAN only: {e}", code.channel);
                    None
                }
                Err(e) => return Err(forget(InviteError::Relays(e))),
            }
        };
        if nostr.is_none() && listener.is_none() {
            return Err(forget(InviteError::Relays(
                "join codes need Nostr relays (--relay) or the LAN (--lan)".into(),
            )));
        }
        let info = InviteInfo {
            code: code.to_string(),
            uses,
            ttl,
            nostr: nostr.is_some(),
            lan: listener.is_some(),
        };
        let inviter = Inviter::new(&code, ticket, uses, expires);
        let driver = Driver {
            nostr,
            lan: listener,
            inviter,
            number: code.channel,
        };
        tokio::spawn(driver.run(ends, stop));
        Ok(info)
    }
}

/// Who sent a rendezvous message: a Nostr key, or the number of a LAN connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Peer {
    Nostr(nostr::PublicKey),
    Lan(u64),
}

/// One code's driver: its state machine and the channels it answers on.
struct Driver {
    nostr: Option<Channel>,
    lan: Option<lan::Listener>,
    inviter: Inviter<Peer>,
    /// The channel number (all a log line may show of the code).
    number: u16,
}

impl Driver {
    /// Answers the code's joiners until it is over (its grace after closing) or dropped.
    async fn run(mut self, ends: Instant, stop: CancellationToken) {
        let end = tokio::time::sleep_until(ends.into());
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = &mut end => break,
                msg = next_nostr(&mut self.nostr) => match msg {
                    Some(m) => {
                        for body in self.answer(Peer::Nostr(m.from), m.body) {
                            if let Some(ch) = &self.nostr {
                                ch.send(Some(m.from), &body);
                            }
                        }
                    }
                    None => {
                        tracing::warn!(
                            "join code {}-…: every Nostr relay went away; it no longer answers there",
                            self.number
                        );
                        self.nostr = None;
                        if self.lan.is_none() {
                            break;
                        }
                    }
                },
                req = next_lan(&mut self.lan) => match req {
                    Some(r) => {
                        let answers = self.answer(Peer::Lan(r.from), r.body);
                        let _ = r.reply.send(answers);
                    }
                    None => {
                        self.lan = None;
                        if self.nostr.is_none() {
                            break;
                        }
                    }
                },
            }
        }
        if let Some(listener) = self.lan.take() {
            listener.close().await;
        }
    }

    /// Feeds one message to the state machine; the bodies to send back to its sender (every
    /// `Send` goes to the sender of the message that caused it).
    fn answer(&mut self, from: Peer, body: proto::Body) -> Vec<proto::Body> {
        let number = self.number;
        let nonce: [u8; 12] = rand::random();
        let mut out = vec![];
        for action in self.inviter.on_message(from, body, Instant::now(), nonce) {
            match action {
                Action::Send { body, .. } => out.push(body),
                Action::Joined { by } => tracing::info!(
                    "join code {number}-…: a node traded it for the ticket {} ({} uses left)",
                    via(&by),
                    self.inviter.uses_left()
                ),
                Action::Burned { by } => tracing::warn!(
                    "join code {number}-…: a wrong code was tried {}; this code is burned",
                    via(&by)
                ),
            }
        }
        out
    }
}

fn via(peer: &Peer) -> &'static str {
    match peer {
        Peer::Nostr(_) => "over Nostr",
        Peer::Lan(_) => "on the LAN",
    }
}

/// The next message on the Nostr channel; never, when there is none.
async fn next_nostr(channel: &mut Option<Channel>) -> Option<Incoming> {
    match channel {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// The next message from a LAN joiner; never, when the code is not on the LAN.
async fn next_lan(listener: &mut Option<lan::Listener>) -> Option<lan::Request> {
    match listener {
        Some(l) => l.recv().await,
        None => std::future::pending().await,
    }
}

/// Trades `code` for a ticket through `relays` (the joining side).
pub async fn redeem(relays: &[RelayUrl], code: &str) -> Result<String, RedeemError> {
    let code = Code::parse(code)?;
    let mut channel = Channel::open(relays, &code.channel_tag())
        .await
        .map_err(RedeemError::Relays)?;
    let (mut joiner, first) = Joiner::start(&code);
    channel.send(None, &first);
    let run = async {
        let mut resend = tokio::time::interval(RESEND_EVERY);
        resend.tick().await;
        loop {
            let msg = tokio::select! {
                msg = channel.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = resend.tick() => {
                    if joiner.waiting() {
                        channel.send(None, &first);
                    }
                    continue;
                }
            };
            if !msg.to_us {
                continue;
            }
            match joiner.on_message(msg.from, msg.body) {
                Step::Nothing => {}
                Step::Send { to, body } => channel.send(Some(to), &body),
                Step::Done(ticket) => return Ok(ticket),
                Step::Failed(e) => return Err(RedeemError::Refused(e)),
            }
        }
        Err(RedeemError::Relays("every Nostr relay went away".into()))
    };
    match tokio::time::timeout(REDEEM_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(RedeemError::NoAnswer(
            code.channel,
            REDEEM_TIMEOUT.as_secs(),
        )),
    }
}

/// Trades `code` for a ticket on the LAN (the joining side of `--lan`): no relay, no internet.
pub async fn redeem_lan(code: &str) -> Result<String, RedeemError> {
    let code = Code::parse(code)?;
    match lan::redeem(&code, REDEEM_TIMEOUT).await {
        Ok(Ok(ticket)) => Ok(ticket),
        Ok(Err(e)) => Err(RedeemError::Refused(e)),
        Err(lan::LanError::NoAnswer) => Err(RedeemError::NoLanAnswer(
            code.channel,
            REDEEM_TIMEOUT.as_secs(),
        )),
        Err(e) => Err(RedeemError::Lan(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const RIGHT: &str = "7-plastic-quit-lemon";
    const WRONG: &str = "7-plastic-quit-lend";

    /// A driver answering `RIGHT` on a loopback LAN listener (no mDNS, no multicast): where
    /// joiners reach it, and the token that stops it.
    async fn lan_driver(uses: u32, ttl: Duration) -> (iroh::EndpointAddr, CancellationToken) {
        let code = Code::parse(RIGHT).unwrap();
        let listener = lan::Listener::loopback().await.unwrap();
        let addr = listener.addr();
        let now = Instant::now();
        let driver = Driver {
            nostr: None,
            lan: Some(listener),
            inviter: Inviter::new(&code, "mesh1ticket".into(), uses, now + ttl),
            number: code.channel,
        };
        let stop = CancellationToken::new();
        tokio::spawn(driver.run(now + ttl + CLOSED_GRACE, stop.clone()));
        (addr, stop)
    }

    async fn joiner() -> iroh::Endpoint {
        iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_ip_transports()
            .bind_addr((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .bind()
            .await
            .unwrap()
    }

    async fn ask(
        ep: &iroh::Endpoint,
        addr: &iroh::EndpointAddr,
        typed: &str,
    ) -> Result<String, JoinError> {
        lan::exchange(ep, addr.clone(), &Code::parse(typed).unwrap())
            .await
            .expect("an answer")
    }

    #[tokio::test]
    async fn on_the_lan_the_right_code_gets_the_ticket_until_it_is_used_up() {
        let (addr, stop) = lan_driver(2, Duration::from_secs(60)).await;
        let ep = joiner().await;
        assert_eq!(ask(&ep, &addr, RIGHT).await, Ok("mesh1ticket".into()));
        assert_eq!(ask(&ep, &addr, RIGHT).await, Ok("mesh1ticket".into()));
        assert_eq!(ask(&ep, &addr, RIGHT).await, Err(JoinError::UsedUp));
        stop.cancel();
        // A stopped code's endpoint is closed: nothing answers any more.
        let gone = tokio::time::timeout(
            Duration::from_secs(3),
            lan::exchange(&ep, addr.clone(), &Code::parse(RIGHT).unwrap()),
        )
        .await;
        assert!(!matches!(gone, Ok(Ok(_))), "{gone:?}");
        ep.close().await;
    }

    #[tokio::test]
    async fn on_the_lan_a_wrong_code_burns_it_and_an_expired_one_is_refused() {
        let (addr, stop) = lan_driver(5, Duration::from_secs(60)).await;
        let ep = joiner().await;
        assert_eq!(ask(&ep, &addr, WRONG).await, Err(JoinError::Wrong));
        assert_eq!(ask(&ep, &addr, RIGHT).await, Err(JoinError::Burned));
        stop.cancel();

        let (addr, stop) = lan_driver(5, Duration::ZERO).await;
        assert_eq!(ask(&ep, &addr, RIGHT).await, Err(JoinError::Expired));
        stop.cancel();
        ep.close().await;
    }
}
