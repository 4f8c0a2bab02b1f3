//! Gossip messages: what a node tells the mesh about itself, signed with its node key. Pure:
//! encode, decode and validate bytes, no IO.
//!
//! Wire: `postcard(Envelope { version, signer, body, signature })`, where `body` is
//! `postcard(Message)` and `signature` is the signer's ed25519 signature over `body`. A message is
//! dropped when it is larger than [`MAX_MESSAGE_BYTES`], has another protocol version, a bad
//! signature, a `node` field other than its signer, or fields over their limits.
//!
//! Extensions: fields added after version 1 go into [`Extra`], encoded after the `Message` in
//! the same signed `body`. Nodes that predate a field stop reading at the end of the `Message`
//! and ignore the rest; nodes that know it read it when present (absent: defaults). So older
//! and newer nodes understand each other without a version bump.

use iroh::{EndpointAddr, EndpointId, SecretKey};
use serde::{Deserialize, Serialize};

/// Version of the gossip messages; a node ignores messages of another version. Version 2:
/// announcements on change plus a [`REFRESH`] instead of 1 s heartbeats, and `Down` reports (a
/// version-1 node would expire a version-2 node between two of its announcements).
pub const PROTOCOL_VERSION: u16 = 2;
/// Every node announces itself at least this often, also when nothing changed: at 1,000 nodes
/// of ~250-byte gossip frames each node receives 1000 × 250 B / 600 s ≈ 0.4 KB/s of them, plus
/// gossip's duplicates and `IHave`s. It is the largest part of an idle node's traffic in a big
/// mesh (300 s gave 1.7 KB/s of gossip per node at 1,000 simulated nodes, docs/BENCHMARKS.md),
/// and liveness does not hang on it: it only heals lost messages and expires nodes nobody saw go.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(600);
/// Largest gossip message accepted (also iroh-gossip's `max_message_size`).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most models one node may announce, and the longest name / region / model id.
pub const MAX_MODELS: usize = 32;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_MODEL_CHARS: usize = 128;
/// Most models one node may announce it wants to host split ([`SplitOffer::wants`]).
pub const MAX_SPLIT_WANTS: usize = 4;
/// A message's `seq` (its author's clock at sending) must be within this of the receiver's
/// clock: recorded announcements of a departed node cannot be replayed to newcomers later, and
/// a far-future `seq` cannot lock a node's real messages out. Twice [`REFRESH`]: a member's
/// newest announcement, handed to a newcomer (`mesh/roster/2`), may be a refresh old.
pub const SEQ_WINDOW: std::time::Duration = std::time::Duration::from_secs(2 * REFRESH.as_secs());

/// `host` serves models; `client` serves none (it only uses the mesh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Host,
    Client,
}

impl Role {
    /// The one rule for a node's role: it hosts when it serves at least one model.
    pub fn of(models: &[ModelOffer]) -> Self {
        if models.is_empty() {
            Role::Client
        } else {
            Role::Host
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Client => "client",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOffer {
    pub name: String,
    /// Slots not decoding right now.
    pub free_slots: u32,
    pub slots: u32,
    /// Context per sequence, in tokens.
    pub ctx: u32,
}

/// A node's state, sent whenever it changes and at least every [`REFRESH`]
/// (`state::liveness::Schedule`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub node: EndpointId,
    /// Microseconds since the Unix epoch at sending: orders messages, also across restarts.
    pub seq: u64,
    pub role: Role,
    pub name: String,
    pub region: Option<String>,
    pub models: Vec<ModelOffer>,
    /// Memory of the machine in bytes (0 when unknown).
    pub memory_bytes: u64,
    pub queue_depth: u32,
    /// Decode tokens per second over the last minute.
    pub tokens_per_second: f32,
    /// Where to dial the node (also carried by iroh; repeated so any member can reach any other).
    pub addr: EndpointAddr,
    /// TCP services the node shares (`mesh share`), by name; sent in [`Extra`].
    #[serde(skip)]
    pub shares: Vec<String>,
    /// What split serving reads of the node; sent in [`Extra`] (boxed: rarely set, and
    /// every gossip message would carry its size).
    #[serde(skip)]
    pub split: Box<SplitOffer>,
}

/// What split serving needs to know of a member (`node::split`): whether it lends memory, how
/// much and how fast, and which models it wants to host split (the election's candidates,
/// `catalog::elect`). Absent (an older node): lends nothing, wants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitOffer {
    /// It lends memory to members' splits over `mesh/rpc/1` (`--split-worker`, or a node that
    /// wants a split model and is not its host).
    pub lends: bool,
    /// Bytes it can give a model: its room for models less what its own models use.
    pub free_memory_bytes: u64,
    /// System memory bandwidth it measured, bytes per second (0: not measured).
    pub memory_bandwidth: u64,
    /// Models it was asked to serve that do not fit it alone: it is a candidate host of their
    /// split (at most [`MAX_SPLIT_WANTS`]).
    pub wants: Vec<String>,
}

/// Fields added after version 1, encoded after the `Message` in the signed body (see the
/// module doc). New fields go at the end, each with a default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Extra {
    /// [`Announcement::shares`].
    pub shares: Vec<String>,
    /// [`Announcement::split`].
    pub split: SplitOffer,
}

impl Extra {
    /// Reads the fields present, in order; those a sender's older version did not send yet
    /// (the bytes end before them) are their defaults.
    fn read(mut rest: &[u8]) -> Result<Self, AnnounceError> {
        Ok(Self {
            shares: next_field(&mut rest)?,
            split: next_field(&mut rest)?,
        })
    }
}

/// The next field of [`Extra`]: its default when no bytes are left, else decoded (an error
/// when it is malformed).
fn next_field<T: serde::de::DeserializeOwned + Default>(
    rest: &mut &[u8],
) -> Result<T, AnnounceError> {
    if rest.is_empty() {
        return Ok(T::default());
    }
    let (value, tail) = postcard::take_from_bytes(rest).map_err(|_| AnnounceError::Decode)?;
    *rest = tail;
    Ok(value)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    Announce(Announcement),
    /// Graceful leave (Ctrl-C): drop the node at once.
    Leave {
        node: EndpointId,
        seq: u64,
    },
    /// `node` found `about` gone (its connection timed out, or it did not answer a dial) when
    /// `about`'s newest announcement was `about_seq`. Members hold `about` as suspected and
    /// drop it unless it announces again meanwhile; `about` itself refutes it at once.
    Down {
        node: EndpointId,
        seq: u64,
        about: EndpointId,
        about_seq: u64,
    },
}

impl Message {
    pub fn node(&self) -> EndpointId {
        match self {
            Message::Announce(a) => a.node,
            Message::Leave { node, .. } | Message::Down { node, .. } => *node,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Message::Announce(a) => a.seq,
            Message::Leave { seq, .. } | Message::Down { seq, .. } => *seq,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    version: u16,
    signer: EndpointId,
    body: Vec<u8>,
    signature: iroh::Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("message of {0} bytes is over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("cannot decode message")]
    Decode,
    #[error("protocol version {0} (we speak {PROTOCOL_VERSION})")]
    Version(u16),
    #[error("bad signature")]
    Signature,
    #[error("message about node {about} signed by {signer}")]
    WrongSender { about: String, signer: String },
    #[error("field over its limit: {0}")]
    Limit(&'static str),
}

/// Signs and encodes a message with the node key.
pub fn encode(key: &SecretKey, msg: &Message) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    let mut body = postcard::to_stdvec(msg).unwrap_or_default();
    if let Message::Announce(a) = msg {
        let extra = Extra {
            shares: a.shares.clone(),
            split: (*a.split).clone(),
        };
        if extra != Extra::default() {
            body.extend(postcard::to_stdvec(&extra).unwrap_or_default());
        }
    }
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        signer: key.public(),
        signature: key.sign(&body),
        body,
    };
    postcard::to_stdvec(&envelope).unwrap_or_default()
}

/// Decodes and checks a message; returns it only when every check passes.
pub fn decode(bytes: &[u8]) -> Result<Message, AnnounceError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(AnnounceError::TooLarge(bytes.len()));
    }
    #[cfg(feature = "sim")]
    if let Some(msg) = sim_memo::decoded(bytes) {
        return Ok(msg);
    }
    let msg = decode_checked(bytes)?;
    #[cfg(feature = "sim")]
    sim_memo::remember(bytes, &msg);
    Ok(msg)
}

fn decode_checked(bytes: &[u8]) -> Result<Message, AnnounceError> {
    let env: Envelope = postcard::from_bytes(bytes).map_err(|_| AnnounceError::Decode)?;
    if env.version != PROTOCOL_VERSION {
        return Err(AnnounceError::Version(env.version));
    }
    env.signer
        .verify(&env.body, &env.signature)
        .map_err(|_| AnnounceError::Signature)?;
    let (mut msg, rest): (Message, &[u8]) =
        postcard::take_from_bytes(&env.body).map_err(|_| AnnounceError::Decode)?;
    if let Message::Announce(a) = &mut msg {
        if !rest.is_empty() {
            let extra = Extra::read(rest)?;
            a.shares = extra.shares;
            *a.split = extra.split;
        }
    }
    if msg.node() != env.signer {
        return Err(AnnounceError::WrongSender {
            about: msg.node().fmt_short().to_string(),
            signer: env.signer.fmt_short().to_string(),
        });
    }
    match &msg {
        Message::Announce(a) => check_limits(a)?,
        Message::Down { node, about, .. } if node == about => {
            return Err(AnnounceError::Limit("down about itself"))
        }
        _ => {}
    }
    Ok(msg)
}

/// For the membership simulation (`mesh::sim`), which runs every node in one process: there a
/// message gossiped to 1,000 nodes would be decoded and its signature and keys checked 1,000
/// times on one CPU, where each real node checks it once on its own. Once the simulation
/// switches this on, envelope bytes (their SHA-256) that passed every check once in this
/// process decode to the same message without a second check; any other bytes are checked as
/// always. Compiled only with feature `sim`.
#[cfg(feature = "sim")]
pub mod sim_memo {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use sha2::{Digest, Sha256};

    use super::Message;

    static ON: AtomicBool = AtomicBool::new(false);
    static DECODED: Mutex<Option<HashMap<[u8; 32], Message>>> = Mutex::new(None);
    /// Forgets everything past this many messages (bounded memory in long runs).
    const MAX: usize = 1 << 20;

    pub fn switch_on() {
        ON.store(true, Ordering::Relaxed);
    }

    pub(super) fn decoded(bytes: &[u8]) -> Option<Message> {
        if !ON.load(Ordering::Relaxed) {
            return None;
        }
        let memo = DECODED.lock().ok()?;
        memo.as_ref()?.get(&digest(bytes)).cloned()
    }

    pub(super) fn remember(bytes: &[u8], msg: &Message) {
        if !ON.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut memo) = DECODED.lock() {
            let memo = memo.get_or_insert_with(HashMap::new);
            if memo.len() >= MAX {
                memo.clear();
            }
            memo.insert(digest(bytes), msg.clone());
        }
    }

    fn digest(bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(bytes).into()
    }
}

fn check_limits(a: &Announcement) -> Result<(), AnnounceError> {
    if a.models.len() > MAX_MODELS {
        return Err(AnnounceError::Limit("models"));
    }
    if a.name.chars().count() > MAX_NAME_CHARS {
        return Err(AnnounceError::Limit("name"));
    }
    if a.region
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_NAME_CHARS)
    {
        return Err(AnnounceError::Limit("region"));
    }
    if a.models
        .iter()
        .any(|m| m.name.is_empty() || m.name.chars().count() > MAX_MODEL_CHARS)
    {
        return Err(AnnounceError::Limit("model name"));
    }
    if a.addr.id != a.node {
        return Err(AnnounceError::Limit("addr"));
    }
    if !a.tokens_per_second.is_finite() {
        return Err(AnnounceError::Limit("tokens_per_second"));
    }
    if !super::share::valid_list(&a.shares) {
        return Err(AnnounceError::Limit("shares"));
    }
    let wants = &a.split.wants;
    if wants.len() > MAX_SPLIT_WANTS
        || wants
            .iter()
            .any(|m| m.is_empty() || m.chars().count() > MAX_MODEL_CHARS)
    {
        return Err(AnnounceError::Limit("split wants"));
    }
    Ok(())
}

/// A message that came straight from its author (not relayed) must come over the author's own
/// connection: `delivered_from` is the neighbour iroh authenticated.
pub fn sender_matches(signer: EndpointId, delivered_from: EndpointId, direct: bool) -> bool {
    !direct || signer == delivered_from
}

/// Whether `seq` (µs since the Unix epoch) is within [`SEQ_WINDOW`] of `now_micros`, the
/// receiver's clock, either way.
pub fn seq_in_window(seq: u64, now_micros: u64) -> bool {
    seq.abs_diff(now_micros) <= SEQ_WINDOW.as_micros() as u64
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn announcement(key: &SecretKey, models: &[&str], seq: u64) -> Announcement {
        Announcement {
            node: key.public(),
            seq,
            role: if models.is_empty() {
                Role::Client
            } else {
                Role::Host
            },
            name: "test".into(),
            region: None,
            models: models
                .iter()
                .map(|m| ModelOffer {
                    name: (*m).into(),
                    free_slots: 4,
                    slots: 4,
                    ctx: 512,
                })
                .collect(),
            memory_bytes: 0,
            queue_depth: 0,
            tokens_per_second: 0.0,
            addr: EndpointAddr::new(key.public()),
            shares: vec![],
            split: Box::default(),
        }
    }

    #[test]
    fn round_trips_a_signed_announcement() {
        let key = SecretKey::generate();
        let msg = Message::Announce(announcement(&key, &["m"], 1));
        assert_eq!(decode(&encode(&key, &msg)).unwrap(), msg);
    }

    #[test]
    fn a_message_about_another_node_is_dropped() {
        let (key, other) = (SecretKey::generate(), SecretKey::generate());
        let msg = Message::Leave {
            node: other.public(),
            seq: 1,
        };
        assert!(matches!(
            decode(&encode(&key, &msg)),
            Err(AnnounceError::WrongSender { .. })
        ));
    }

    #[test]
    fn tampered_oversized_and_foreign_version_messages_are_dropped() {
        let key = SecretKey::generate();
        let msg = Message::Announce(announcement(&key, &["m"], 1));
        let mut bytes = encode(&key, &msg);
        let n = bytes.len();
        bytes[n - 70] ^= 1; // inside the body
        assert!(decode(&bytes).is_err());
        assert_eq!(
            decode(&vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(AnnounceError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let body = postcard::to_stdvec(&msg).unwrap();
        let env = Envelope {
            version: 99,
            signer: key.public(),
            signature: key.sign(&body),
            body,
        };
        assert_eq!(
            decode(&postcard::to_stdvec(&env).unwrap()),
            Err(AnnounceError::Version(99))
        );
        assert_eq!(decode(b"garbage"), Err(AnnounceError::Decode));
    }

    #[test]
    fn fields_over_their_limits_are_dropped() {
        let key = SecretKey::generate();
        let mut a = announcement(&key, &["m"], 1);
        a.name = "x".repeat(MAX_NAME_CHARS + 1);
        assert_eq!(
            decode(&encode(&key, &Message::Announce(a))),
            Err(AnnounceError::Limit("name"))
        );
    }

    #[test]
    fn shares_travel_after_the_message_and_old_and_new_nodes_read_each_other() {
        let key = SecretKey::generate();
        let mut a = announcement(&key, &["m"], 1);
        a.shares = vec!["db".into(), "notebook".into()];
        let msg = Message::Announce(a.clone());
        assert_eq!(decode(&encode(&key, &msg)).unwrap(), msg);
        // A node that predates shares reads the message and ignores them.
        let env: Envelope = postcard::from_bytes(&encode(&key, &msg)).unwrap();
        let old: Message = postcard::from_bytes(&env.body).unwrap();
        let Message::Announce(old) = old else {
            panic!("an announcement")
        };
        assert_eq!((old.name.as_str(), old.shares.len()), ("test", 0));
        // A message from such a node (no extension) reads as sharing nothing.
        a.shares.clear();
        let plain = Message::Announce(a);
        let body = postcard::to_stdvec(&plain).unwrap();
        let env = Envelope {
            version: PROTOCOL_VERSION,
            signer: key.public(),
            signature: key.sign(&body),
            body,
        };
        assert_eq!(decode(&postcard::to_stdvec(&env).unwrap()).unwrap(), plain);
    }

    #[test]
    fn the_split_offer_travels_after_the_shares_and_old_and_new_nodes_read_each_other() {
        let key = SecretKey::generate();
        let mut a = announcement(&key, &[], 1);
        *a.split = SplitOffer {
            lends: true,
            free_memory_bytes: 5 << 30,
            memory_bandwidth: 20_000_000_000,
            wants: vec!["big".into()],
        };
        let msg = Message::Announce(a.clone());
        assert_eq!(decode(&encode(&key, &msg)).unwrap(), msg);
        // A node whose Extra ends at the shares reads the shares and ignores the rest.
        #[derive(Deserialize)]
        struct SharesOnly {
            shares: Vec<String>,
        }
        a.shares = vec!["db".into()];
        let env: Envelope =
            postcard::from_bytes(&encode(&key, &Message::Announce(a.clone()))).unwrap();
        let (_, rest): (Message, &[u8]) = postcard::take_from_bytes(&env.body).unwrap();
        let old: SharesOnly = postcard::from_bytes(rest).unwrap();
        assert_eq!(old.shares, ["db"]);
        // A message from such a node (shares, no split offer) reads as lending nothing.
        let mut body = postcard::to_stdvec(&Message::Announce(a.clone())).unwrap();
        body.extend(postcard::to_stdvec(&a.shares).unwrap());
        let env = Envelope {
            version: PROTOCOL_VERSION,
            signer: key.public(),
            signature: key.sign(&body),
            body,
        };
        let Message::Announce(got) = decode(&postcard::to_stdvec(&env).unwrap()).unwrap() else {
            panic!("an announcement")
        };
        assert_eq!(got.shares, ["db"]);
        assert_eq!(*got.split, SplitOffer::default());
    }

    #[test]
    fn too_many_or_bad_split_wants_are_dropped() {
        let key = SecretKey::generate();
        let mut a = announcement(&key, &[], 1);
        a.split.wants = (0..=MAX_SPLIT_WANTS).map(|i| format!("m{i}")).collect();
        assert_eq!(
            decode(&encode(&key, &Message::Announce(a.clone()))),
            Err(AnnounceError::Limit("split wants"))
        );
        a.split.wants = vec![String::new()];
        assert_eq!(
            decode(&encode(&key, &Message::Announce(a))),
            Err(AnnounceError::Limit("split wants"))
        );
    }

    #[test]
    fn too_many_or_bad_share_names_are_dropped() {
        let key = SecretKey::generate();
        let mut a = announcement(&key, &[], 1);
        a.shares = (0..=super::super::share::MAX_SHARES)
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(
            decode(&encode(&key, &Message::Announce(a.clone()))),
            Err(AnnounceError::Limit("shares"))
        );
        a.shares = vec!["no spaces".into()];
        assert_eq!(
            decode(&encode(&key, &Message::Announce(a))),
            Err(AnnounceError::Limit("shares"))
        );
    }

    #[test]
    fn a_down_report_round_trips_but_not_about_its_own_author() {
        let (key, other) = (SecretKey::generate(), SecretKey::generate());
        let down = |about| Message::Down {
            node: key.public(),
            seq: 2,
            about,
            about_seq: 1,
        };
        let msg = down(other.public());
        assert_eq!(decode(&encode(&key, &msg)).unwrap(), msg);
        assert_eq!(
            decode(&encode(&key, &down(key.public()))),
            Err(AnnounceError::Limit("down about itself"))
        );
        // Signed by the reporter, not by the node it is about.
        assert!(matches!(
            decode(&encode(&other, &msg)),
            Err(AnnounceError::WrongSender { .. })
        ));
    }

    #[test]
    fn direct_messages_must_come_from_their_signer() {
        let (a, b) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        assert!(sender_matches(a, a, true));
        assert!(!sender_matches(a, b, true));
        assert!(sender_matches(a, b, false));
    }

    #[test]
    fn seq_must_be_within_the_window_of_the_receivers_clock() {
        let now = 1_800_000_000_000_000u64;
        let w = SEQ_WINDOW.as_micros() as u64;
        assert!(seq_in_window(now, now));
        assert!(seq_in_window(now - w, now) && seq_in_window(now + w, now));
        // A heartbeat recorded more than the window ago, or stamped far ahead, is dropped.
        assert!(!seq_in_window(now - w - 1, now));
        assert!(!seq_in_window(now + w + 1, now));
        assert!(!seq_in_window(0, now) && !seq_in_window(u64::MAX, now));
        // A receiver whose clock is not set (0) accepts nothing from a set clock.
        assert!(!seq_in_window(now, 0));
    }
}
