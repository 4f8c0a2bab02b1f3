//! Join codes (`mesh invite`, `mesh join CODE`, `mesh serve --join CODE`): a short code traded
//! for the mesh's ticket through a SPAKE2 rendezvous on the Nostr relays in use.
//!
//! - [`code`]: the code's form, its wordlist, the channel tag and password (pure).
//! - [`proto`]: the rendezvous messages and both sides' state machines (pure).
//! - [`rendezvous`]: the channel: ephemeral Nostr events between two throwaway keys (IO).
//! - here: [`Invites`], the inviting node's live codes (one driver task each), and [`redeem`],
//!   the joining side.
//!
//! docs/PROTOCOL.md ("Join codes") has the events; docs/SECURITY.md why guessing does not pay.

pub mod code;
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
use rendezvous::Channel;

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
}

/// One open code, as `POST /api/invite` shows it.
#[derive(Debug, Clone)]
pub struct InviteInfo {
    pub code: String,
    pub uses: u32,
    pub ttl: Duration,
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
    /// Opens a code for `ticket` on `relays`: `uses` joins within `ttl`. Returns once the
    /// rendezvous subscription is up, so the code works as soon as it is printed.
    pub async fn create(
        &self,
        relays: &[RelayUrl],
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
        let channel = match Channel::open(relays, &code.channel_tag()).await {
            Ok(c) => c,
            Err(e) => {
                let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.retain(|l| l.channel != code.channel);
                return Err(InviteError::Relays(e));
            }
        };
        let inviter = Inviter::new(&code, ticket, uses, expires);
        tokio::spawn(drive_inviter(channel, inviter, ends, stop, code.channel));
        Ok(InviteInfo {
            code: code.to_string(),
            uses,
            ttl,
        })
    }
}

/// Answers one code's joiners until it is over (its grace after closing) or dropped.
async fn drive_inviter(
    mut channel: Channel,
    mut inviter: Inviter<nostr::PublicKey>,
    ends: Instant,
    stop: CancellationToken,
    number: u16,
) {
    let end = tokio::time::sleep_until(ends.into());
    tokio::pin!(end);
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut end => break,
            msg = channel.recv() => match msg {
                Some(m) => m,
                None => {
                    tracing::warn!("join code {number}-…: every Nostr relay went away; it no longer answers");
                    break;
                }
            },
        };
        let nonce: [u8; 12] = rand::random();
        for action in inviter.on_message(msg.from, msg.body, Instant::now(), nonce) {
            match action {
                Action::Send { to, body } => channel.send(Some(to), &body),
                Action::Joined { .. } => tracing::info!(
                    "join code {number}-…: a node traded it for the ticket ({} uses left)",
                    inviter.uses_left()
                ),
                Action::Burned { .. } => tracing::warn!(
                    "join code {number}-…: a wrong code was tried; this code is burned"
                ),
            }
        }
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
