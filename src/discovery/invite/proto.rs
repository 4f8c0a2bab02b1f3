//! The join-code rendezvous, sans IO: what the inviter and the joiner send each other, and the
//! two state machines (`message in → actions out`), unit-tested without relays.
//!
//! 1. joiner → all on the channel: `pake` (its SPAKE2 message, side A).
//! 2. inviter → joiner: `pake` (side B, a fresh SPAKE2 run per joiner), or `closed` with the
//!    reason when the code is expired, used up or burned.
//! 3. joiner → inviter: `confirm`, an HMAC under the agreed key (key confirmation).
//! 4. inviter → joiner: `ticket` sealed with ChaCha20-Poly1305 under the agreed key; or, when
//!    the confirmation is wrong (a wrong code), `closed: wrong`, and the code is burned: one
//!    failed confirmation ends it, so each online guess costs the guesser the code.
//!
//! Nothing a relay sees lets it test a guess offline: SPAKE2 messages reveal nothing of the
//! password, and a confirmation can only be checked by a party that ran SPAKE2 with a guess.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use super::code::Code;

/// A joiner's SPAKE2 run not confirmed within this is dropped.
pub const SESSION_TTL: Duration = Duration::from_secs(30);
/// Joiners an inviter talks to at once (more `pake` messages are ignored until some finish).
pub const MAX_SESSIONS: usize = 8;
/// Largest message content read (a ticket with a few addresses is well under 2 KiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024;

const ID_JOINER: &[u8] = b"mesh/invite/1 joiner";
const ID_INVITER: &[u8] = b"mesh/invite/1 inviter";
const LABEL_CONFIRM: &[u8] = b"mesh/invite/1 confirm";
const LABEL_SEAL: &[u8] = b"mesh/invite/1 seal";

/// One rendezvous message (the content of a Nostr event, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    Pake { msg: String },
    Confirm { mac: String },
    Ticket { nonce: String, sealed: String },
    Closed { reason: Closed },
}

impl Body {
    pub fn decode(content: &str) -> Option<Body> {
        if content.len() > MAX_BODY_BYTES {
            return None;
        }
        serde_json::from_str(content).ok()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why a code no longer opens the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Closed {
    Expired,
    UsedUp,
    Burned,
    Wrong,
}

/// What a joiner gets instead of a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("this join code has expired: ask for a new one (`mesh invite`)")]
    Expired,
    #[error("this join code is used up: ask for a new one (`mesh invite`)")]
    UsedUp,
    #[error("this join code was burned by a wrong guess: ask for a new one (`mesh invite`)")]
    Burned,
    #[error("wrong join code (the inviting node has burned it now): check the words and ask for a new one")]
    Wrong,
    #[error("the inviting node's answer did not decrypt (not the node that made this code?)")]
    BadSeal,
}

impl From<Closed> for JoinError {
    fn from(c: Closed) -> Self {
        match c {
            Closed::Expired => JoinError::Expired,
            Closed::UsedUp => JoinError::UsedUp,
            Closed::Burned => JoinError::Burned,
            Closed::Wrong => JoinError::Wrong,
        }
    }
}

/// The keys both sides derive from SPAKE2's shared secret.
struct Keys {
    confirm: [u8; 32],
    seal: [u8; 32],
}

impl Keys {
    fn derive(shared: &[u8]) -> Keys {
        let label = |l: &[u8]| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(shared).expect("any key length");
            mac.update(l);
            mac.finalize().into_bytes().into()
        };
        Keys {
            confirm: label(LABEL_CONFIRM),
            seal: label(LABEL_SEAL),
        }
    }

    fn confirmation(&self) -> String {
        BASE64.encode(&self.confirm)
    }

    fn confirms(&self, mac: &str) -> bool {
        // Constant time: the comparison of a guess must not leak how close it came.
        let Ok(given) = BASE64.decode(mac.as_bytes()) else {
            return false;
        };
        given.len() == 32 && {
            let mut diff = 0u8;
            for (a, b) in given.iter().zip(self.confirm.iter()) {
                diff |= a ^ b;
            }
            diff == 0
        }
    }

    fn seal(&self, plain: &str, nonce: [u8; 12]) -> Body {
        let cipher = ChaCha20Poly1305::new(&self.seal.into());
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        Body::Ticket {
            nonce: BASE64.encode(&nonce),
            sealed: BASE64.encode(&sealed),
        }
    }

    fn open(&self, nonce: &str, sealed: &str) -> Option<String> {
        let nonce = BASE64.decode(nonce.as_bytes()).ok()?;
        let sealed = BASE64.decode(sealed.as_bytes()).ok()?;
        if nonce.len() != 12 {
            return None;
        }
        let cipher = ChaCha20Poly1305::new(&self.seal.into());
        let plain = cipher
            .decrypt(Nonce::from_slice(&nonce), sealed.as_slice())
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

fn decode_msg(msg: &str) -> Option<Vec<u8>> {
    BASE64.decode(msg.as_bytes()).ok().filter(|m| m.len() <= 64)
}

/// What the inviter's driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    Send {
        to: P,
        body: Body,
    },
    /// A joiner got the ticket (one use spent).
    Joined {
        by: P,
    },
    /// A wrong confirmation: the code is burned.
    Burned {
        by: P,
    },
}

/// The inviting side of one code. `P` names a joiner (its Nostr key in the driver).
pub struct Inviter<P> {
    password: Vec<u8>,
    ticket: String,
    uses_left: u32,
    expires: Instant,
    burned: bool,
    /// Joiners in a SPAKE2 run: their keys, when it started, and the `pake` answer (sent again
    /// when the joiner repeats its first message because the answer got lost).
    sessions: HashMap<P, (Keys, Instant, Body)>,
}

impl<P: Hash + Eq + Clone> Inviter<P> {
    pub fn new(code: &Code, ticket: String, uses: u32, expires: Instant) -> Self {
        Inviter {
            password: code.password(),
            ticket,
            uses_left: uses,
            expires,
            burned: false,
            sessions: HashMap::new(),
        }
    }

    /// `None` while the code still opens the mesh, else why not.
    pub fn closed(&self, now: Instant) -> Option<Closed> {
        if self.burned {
            Some(Closed::Burned)
        } else if self.uses_left == 0 {
            Some(Closed::UsedUp)
        } else if now >= self.expires {
            Some(Closed::Expired)
        } else {
            None
        }
    }

    pub fn uses_left(&self) -> u32 {
        self.uses_left
    }

    /// One message from `from`; `nonce` is fresh randomness for a sealed ticket.
    pub fn on_message(
        &mut self,
        from: P,
        body: Body,
        now: Instant,
        nonce: [u8; 12],
    ) -> Vec<Action<P>> {
        self.sessions
            .retain(|_, (_, started, _)| now.saturating_duration_since(*started) < SESSION_TTL);
        let closed = |reason| {
            vec![Action::Send {
                to: from.clone(),
                body: Body::Closed { reason },
            }]
        };
        match body {
            Body::Pake { msg } => {
                if let Some(reason) = self.closed(now) {
                    return closed(reason);
                }
                if let Some((_, _, answer)) = self.sessions.get(&from) {
                    return vec![Action::Send {
                        to: from,
                        body: answer.clone(),
                    }];
                }
                if self.sessions.len() >= MAX_SESSIONS {
                    return vec![];
                }
                let Some(theirs) = decode_msg(&msg) else {
                    return vec![];
                };
                let (state, ours) = Spake2::<Ed25519Group>::start_b(
                    &Password::new(&self.password),
                    &Identity::new(ID_JOINER),
                    &Identity::new(ID_INVITER),
                );
                let Ok(shared) = state.finish(&theirs) else {
                    return vec![];
                };
                let answer = Body::Pake {
                    msg: BASE64.encode(&ours),
                };
                self.sessions
                    .insert(from.clone(), (Keys::derive(&shared), now, answer.clone()));
                vec![Action::Send {
                    to: from,
                    body: answer,
                }]
            }
            Body::Confirm { mac } => {
                let Some((keys, _, _)) = self.sessions.remove(&from) else {
                    return vec![];
                };
                if let Some(reason) = self.closed(now) {
                    return closed(reason);
                }
                if !keys.confirms(&mac) {
                    self.burned = true;
                    self.sessions.clear();
                    let mut out = closed(Closed::Wrong);
                    out.push(Action::Burned { by: from });
                    return out;
                }
                self.uses_left -= 1;
                vec![
                    Action::Send {
                        to: from.clone(),
                        body: keys.seal(&self.ticket, nonce),
                    },
                    Action::Joined { by: from },
                ]
            }
            Body::Ticket { .. } | Body::Closed { .. } => vec![],
        }
    }
}

/// What the joiner's driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<P> {
    Nothing,
    Send { to: P, body: Body },
    Done(String),
    Failed(JoinError),
}

/// The joining side: one SPAKE2 run, then the ticket.
pub struct Joiner<P> {
    state: Option<Spake2<Ed25519Group>>,
    keys: Option<Keys>,
    inviter: Option<P>,
}

impl<P: PartialEq + Clone> Joiner<P> {
    /// Starts a run for `code`; the body goes to everyone on the channel.
    pub fn start(code: &Code) -> (Self, Body) {
        let (state, msg) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.password()),
            &Identity::new(ID_JOINER),
            &Identity::new(ID_INVITER),
        );
        let joiner = Joiner {
            state: Some(state),
            keys: None,
            inviter: None,
        };
        let body = Body::Pake {
            msg: BASE64.encode(&msg),
        };
        (joiner, body)
    }

    /// Whether no inviter has answered yet (the driver repeats the first message meanwhile:
    /// a relay may have lost it).
    pub fn waiting(&self) -> bool {
        self.inviter.is_none()
    }

    pub fn on_message(&mut self, from: P, body: Body) -> Step<P> {
        let from_inviter = self.inviter.as_ref().is_none_or(|i| *i == from);
        match body {
            Body::Pake { msg } if self.inviter.is_none() => {
                let (Some(theirs), Some(state)) = (decode_msg(&msg), self.state.take()) else {
                    return Step::Nothing;
                };
                let Ok(shared) = state.finish(&theirs) else {
                    return Step::Failed(JoinError::BadSeal);
                };
                let keys = Keys::derive(&shared);
                let mac = keys.confirmation();
                self.keys = Some(keys);
                self.inviter = Some(from.clone());
                Step::Send {
                    to: from,
                    body: Body::Confirm { mac },
                }
            }
            Body::Ticket { nonce, sealed } if self.inviter.as_ref() == Some(&from) => {
                match self.keys.as_ref().and_then(|k| k.open(&nonce, &sealed)) {
                    Some(ticket) => Step::Done(ticket),
                    None => Step::Failed(JoinError::BadSeal),
                }
            }
            Body::Closed { reason } if from_inviter => Step::Failed(reason.into()),
            _ => Step::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> Code {
        Code::parse(s).unwrap()
    }

    const RIGHT: &str = "7-plastic-quit-lemon";
    const WRONG: &str = "7-plastic-quit-lend";

    /// Runs a joiner with `typed` against `inv` until it finishes; what it ends with.
    fn run(inv: &mut Inviter<u8>, who: u8, typed: &str, now: Instant) -> Step<u8> {
        let (mut j, first) = Joiner::<u8>::start(&code(typed));
        let mut inbox: Vec<(u8, Body)> = vec![];
        for a in inv.on_message(who, first, now, [1; 12]) {
            if let Action::Send { to, body } = a {
                assert_eq!(to, who);
                inbox.push((0, body));
            }
        }
        while let Some((from, body)) = inbox.pop() {
            match j.on_message(from, body) {
                Step::Send { to, body } => {
                    assert_eq!(to, 0);
                    for a in inv.on_message(who, body, now, [2; 12]) {
                        if let Action::Send { body, .. } = a {
                            inbox.push((0, body));
                        }
                    }
                }
                Step::Nothing => {}
                end => return end,
            }
        }
        Step::Nothing
    }

    fn inviter(uses: u32, now: Instant) -> Inviter<u8> {
        Inviter::new(
            &code(RIGHT),
            "mesh1ticket".into(),
            uses,
            now + Duration::from_secs(600),
        )
    }

    #[test]
    fn the_right_code_gets_the_ticket_and_spends_a_use() {
        let now = Instant::now();
        let mut inv = inviter(2, now);
        assert_eq!(
            run(&mut inv, 1, RIGHT, now),
            Step::Done("mesh1ticket".into())
        );
        assert_eq!(inv.uses_left(), 1);
        assert_eq!(
            run(&mut inv, 2, RIGHT, now),
            Step::Done("mesh1ticket".into())
        );
        assert_eq!(
            run(&mut inv, 3, RIGHT, now),
            Step::Failed(JoinError::UsedUp)
        );
    }

    #[test]
    fn a_wrong_code_fails_and_burns_the_code_for_the_right_one_too() {
        let now = Instant::now();
        let mut inv = inviter(5, now);
        assert_eq!(run(&mut inv, 1, WRONG, now), Step::Failed(JoinError::Wrong));
        assert_eq!(inv.closed(now), Some(Closed::Burned));
        assert_eq!(
            run(&mut inv, 2, RIGHT, now),
            Step::Failed(JoinError::Burned)
        );
    }

    #[test]
    fn an_expired_code_is_refused_with_its_own_reason() {
        let now = Instant::now();
        let mut inv = inviter(1, now);
        let later = now + Duration::from_secs(601);
        assert_eq!(
            run(&mut inv, 1, RIGHT, later),
            Step::Failed(JoinError::Expired)
        );
    }

    #[test]
    fn the_ticket_travels_sealed_and_a_relay_sees_no_password() {
        let now = Instant::now();
        let mut inv = inviter(1, now);
        let (_, first) = Joiner::<u8>::start(&code(RIGHT));
        let seen = first.encode();
        assert!(!seen.contains("plastic"), "{seen}");
        let (mut j, first) = Joiner::<u8>::start(&code(RIGHT));
        let reply = inv.on_message(1, first, now, [3; 12]);
        let Action::Send { body, .. } = &reply[0] else {
            panic!()
        };
        let Step::Send { body: confirm, .. } = j.on_message(0, body.clone()) else {
            panic!()
        };
        let out = inv.on_message(1, confirm, now, [3; 12]);
        let Action::Send { body: sealed, .. } = &out[0] else {
            panic!()
        };
        assert!(
            !sealed.encode().contains("mesh1ticket"),
            "sealed: {sealed:?}"
        );
        assert!(matches!(out[1], Action::Joined { by: 1 }));
    }

    #[test]
    fn a_confirmation_without_a_pake_run_is_ignored_and_sessions_are_bounded() {
        let now = Instant::now();
        let mut inv = inviter(1, now);
        let forged = Body::Confirm {
            mac: BASE64.encode(&[0u8; 32]),
        };
        assert!(inv.on_message(9, forged, now, [0; 12]).is_empty());
        assert_eq!(inv.closed(now), None, "no run: nothing to burn");
        for who in 0..(MAX_SESSIONS as u8 + 4) {
            let (_, first) = Joiner::<u8>::start(&code(RIGHT));
            inv.on_message(100 + who, first, now, [0; 12]);
        }
        assert_eq!(inv.sessions.len(), MAX_SESSIONS);
        // They time out.
        let later = now + SESSION_TTL;
        let (_, first) = Joiner::<u8>::start(&code(RIGHT));
        assert_eq!(inv.on_message(50, first, later, [0; 12]).len(), 1);
        assert_eq!(inv.sessions.len(), 1);
    }

    #[test]
    fn a_repeated_first_message_gets_the_same_answer_and_spends_nothing() {
        let now = Instant::now();
        let mut inv = inviter(1, now);
        let (mut j, first) = Joiner::<u8>::start(&code(RIGHT));
        let one = inv.on_message(1, first.clone(), now, [0; 12]);
        let two = inv.on_message(1, first, now, [0; 12]);
        assert_eq!(one, two);
        assert!(j.waiting());
        let Action::Send { body, .. } = two[0].clone() else {
            panic!()
        };
        let Step::Send { body: confirm, .. } = j.on_message(0, body) else {
            panic!()
        };
        assert!(!j.waiting());
        let out = inv.on_message(1, confirm, now, [0; 12]);
        assert!(matches!(out[1], Action::Joined { by: 1 }));
    }

    #[test]
    fn junk_and_oversized_bodies_are_not_messages() {
        assert_eq!(Body::decode("{\"type\":\"nope\"}"), None);
        assert_eq!(Body::decode(&"x".repeat(MAX_BODY_BYTES + 1)), None);
        let now = Instant::now();
        let mut inv = inviter(1, now);
        let junk = Body::Pake {
            msg: BASE64.encode(&[7u8; 33]),
        };
        assert!(inv.on_message(1, junk, now, [0; 12]).is_empty());
        assert_eq!(inv.closed(now), None);
    }
}
