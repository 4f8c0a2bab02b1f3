//! Mesh offers: the signed Nostr event a mesh is advertised with, and its validation. Pure: build
//! an event from plain data, turn raw event JSON from a relay into a checked [`Offer`] or a
//! counted [`Reject`] — signature, binding, limits, and plausibility ([`check_plausible`]: no
//! more nodes, slots, memory or lifetime than a real mesh can have). docs/PROTOCOL.md
//! ("Discovery") has the format, docs/SECURITY.md ("Hostile publishers") the caps.
//!
//! The event is addressable (kind [`OFFER_KIND`], `d` = mesh id), so a relay keeps only the
//! newest offer per publisher and mesh. Tags relays can filter on: `v` protocol (`mesh/1`), one
//! `m` per model served, one `w` per model wanted, `g` region, and NIP-40 `expiration`. The
//! content is JSON ([`OfferContent`]) carrying a **binding**: the publisher's iroh endpoint key
//! signs (nostr pubkey, mesh id, created_at), so an offer cannot point at someone else's node.

use std::collections::BTreeSet;

use iroh::{EndpointId, SecretKey};
use nostr::{
    Alphabet, Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, SingleLetterTag, Tag, TagKind,
    Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::mesh::proto::ticket::{MeshId, Ticket, MAX_TICKET_CHARS};

/// Nostr kind of a mesh offer (addressable range 30000–39999).
pub const OFFER_KIND: u16 = 38337;
/// Value of the `v` tag: protocol name and major version. Offers of another major are dropped.
pub const PROTOCOL_TAG: &str = "mesh/1";
/// Schema of the content JSON, `major.minor`; a reader accepts any minor of its major.
pub const SCHEMA: &str = "1.0";
pub const SCHEMA_MAJOR: u32 = 1;
/// Largest event accepted (its JSON text, in bytes).
pub const MAX_EVENT_BYTES: usize = 16 * 1024;
/// How far in the future `created_at` may be (clock skew).
pub const MAX_FUTURE_SECS: u64 = 300;
/// Field limits. The mesh name and region, and every model name, come from the mesh's own
/// announcements and configuration, so they share the mesh's limits (one source of truth: an
/// announcement the mesh accepts always fits an offer).
pub use crate::mesh::proto::announce::{MAX_MODEL_CHARS, MAX_NAME_CHARS};
/// Most models an offer lists (served, and separately wanted). Not the announcement's
/// `MAX_MODELS`: that bounds one node, this the whole mesh, whose nodes together may serve more
/// (the publisher keeps the first ones). Same value today, by choice rather than by derivation.
pub const MAX_MODELS: usize = 32;
pub const MAX_VERSION_CHARS: usize = 32;
/// Longest quantization label (`Q4_K_M`, `BF16` …); offers only.
pub const MAX_QUANT_CHARS: usize = 16;

/// Plausibility caps (docs/SECURITY.md, "Hostile publishers"). An offer's figures are the
/// publisher's word; these reject what no real mesh can be, each with its reason
/// ([`Reject::Implausible`]). What a plausible liar gains is bounded by the scorer instead
/// (`score.rs`), and caught after joining (`verify.rs`).
///
/// Serving nodes an offer may claim: more than the membership of one mesh can hold.
pub const MAX_OFFER_NODES: u32 = 1024;
/// Slots one serving node may have per model (`mesh serve --parallel` allows at most 256).
pub const MAX_SLOTS_PER_NODE: u32 = 256;
/// Memory one serving node may have: 4 TiB.
pub const MAX_NODE_MEMORY: u64 = 4 << 40;
/// Longest offer lifetime (expiry − creation): the publisher republishes every minute and its
/// offers live 3 minutes, so 10 minutes leaves room and no more.
pub const MAX_LIFETIME_SECS: u64 = 600;

/// What the binding signature covers, after this prefix: nostr pubkey (32 bytes), mesh id (16),
/// created_at (u64, big endian).
const BINDING_CONTEXT: &[u8] = b"mesh/offer-binding/1";

/// Tag letters (single letters, so relays index them).
pub const TAG_PROTOCOL: Alphabet = Alphabet::V;
pub const TAG_MODEL: Alphabet = Alphabet::M;
pub const TAG_WANTED: Alphabet = Alphabet::W;
pub const TAG_REGION: Alphabet = Alphabet::G;

/// A model served in the mesh, summed over the nodes serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServedModel {
    pub name: String,
    /// Context per sequence, in tokens (the smallest among its hosts).
    pub ctx: u32,
    /// Quantization (e.g. `Q4_K_M`) when the name tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<String>,
    /// Nodes serving it, their slots in all, and the slots free right now.
    pub hosts: u32,
    pub slots: u32,
    pub free_slots: u32,
}

/// The content JSON of an offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferContent {
    /// `major.minor` of this format ([`SCHEMA`]).
    pub schema: String,
    /// Name of the mesh, for people.
    pub name: String,
    /// Public meshes carry a ticket anyone may use; private ones carry none.
    pub public: bool,
    pub models: Vec<ServedModel>,
    /// Models the mesh would like someone to serve.
    #[serde(default)]
    pub wanted: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Memory of the serving nodes, in bytes, summed.
    pub memory_bytes: u64,
    /// Serving nodes, client nodes, and how many clients the mesh takes.
    pub nodes: u32,
    pub clients: u32,
    pub max_clients: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Software version of the publisher.
    pub version: String,
    /// The publisher's iroh endpoint id, and its signature binding this event to it (hex).
    pub node: String,
    pub binding: String,
}

/// A checked offer: the event's facts and its content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offer {
    pub event_id: String,
    pub publisher: PublicKey,
    pub mesh_id: MeshId,
    pub created_at: u64,
    pub expires_at: u64,
    pub node: EndpointId,
    #[serde(skip)]
    pub ticket: Option<Ticket>,
    pub content: OfferContent,
}

/// Why an event was dropped. Each has a short name for counters ([`Reject::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("event larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    #[error("not a Nostr event: {0}")]
    NotEvent(String),
    #[error("kind {0} is not a mesh offer")]
    WrongKind(u16),
    #[error("bad Nostr id or signature")]
    BadSignature,
    #[error("no expiration tag")]
    NoExpiration,
    #[error("expired")]
    Expired,
    #[error("created {0} s in the future")]
    Future(u64),
    #[error("protocol {0:?} is not {PROTOCOL_TAG}")]
    Protocol(String),
    #[error("schema {0:?} is not {SCHEMA_MAJOR}.x")]
    Schema(String),
    #[error("content is not an offer: {0}")]
    BadContent(String),
    #[error("tags disagree with the content: {0}")]
    BadTags(&'static str),
    #[error("binding signature is not from the named node")]
    BadBinding,
    #[error("ticket: {0}")]
    BadTicket(String),
    #[error("implausible: {0}")]
    Implausible(String),
    /// Handed out over `mesh/offer/1` by a node it is not bound to.
    #[error("bound to another node than the one that handed it out")]
    OtherNode,
}

impl Reject {
    /// Name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::NotEvent(_) => "not_event",
            Reject::WrongKind(_) => "wrong_kind",
            Reject::BadSignature => "bad_signature",
            Reject::NoExpiration => "no_expiration",
            Reject::Expired => "expired",
            Reject::Future(_) => "future",
            Reject::Protocol(_) => "protocol",
            Reject::Schema(_) => "schema",
            Reject::BadContent(_) => "bad_content",
            Reject::BadTags(_) => "bad_tags",
            Reject::BadBinding => "bad_binding",
            Reject::BadTicket(_) => "bad_ticket",
            Reject::Implausible(_) => "implausible",
            Reject::OtherNode => "other_node",
        }
    }
}

fn tag_kind(letter: Alphabet) -> TagKind<'static> {
    TagKind::SingleLetter(SingleLetterTag::lowercase(letter))
}

fn binding_message(publisher: &PublicKey, mesh_id: &MeshId, created_at: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(BINDING_CONTEXT.len() + 56);
    m.extend_from_slice(BINDING_CONTEXT);
    m.extend_from_slice(&publisher.to_bytes());
    m.extend_from_slice(&mesh_id.0);
    m.extend_from_slice(&created_at.to_be_bytes());
    m
}

/// Signs `content` (its `node` and `binding` are filled in here) as an offer event for
/// `mesh_id`, created at `created_at` and expiring `ttl_secs` later.
pub fn build_event(
    keys: &Keys,
    node_key: &SecretKey,
    mesh_id: MeshId,
    mut content: OfferContent,
    created_at: u64,
    ttl_secs: u64,
) -> Result<Event, nostr::event::builder::Error> {
    let sig = node_key.sign(&binding_message(&keys.public_key(), &mesh_id, created_at));
    content.node = node_key.public().to_string();
    content.binding = data_encoding::HEXLOWER.encode(&sig.to_bytes());
    let mut tags = vec![
        Tag::identifier(mesh_id.to_string()),
        Tag::custom(tag_kind(TAG_PROTOCOL), [PROTOCOL_TAG]),
        Tag::expiration(Timestamp::from(created_at + ttl_secs)),
    ];
    tags.extend(
        content
            .models
            .iter()
            .map(|m| Tag::custom(tag_kind(TAG_MODEL), [m.name.clone()])),
    );
    tags.extend(
        content
            .wanted
            .iter()
            .map(|w| Tag::custom(tag_kind(TAG_WANTED), [w.clone()])),
    );
    if let Some(region) = &content.region {
        tags.push(Tag::custom(tag_kind(TAG_REGION), [region.clone()]));
    }
    let json = serde_json::to_string(&content).expect("offer content serializes");
    EventBuilder::new(Kind::Custom(OFFER_KIND), json)
        .tags(tags)
        .custom_created_at(Timestamp::from(created_at))
        .sign_with_keys(keys)
}

/// Checks raw event JSON from a relay; `now` is Unix seconds. Never panics on any input.
pub fn validate(raw: &str, now: u64) -> Result<Offer, Reject> {
    if raw.len() > MAX_EVENT_BYTES {
        return Err(Reject::TooLarge);
    }
    let event = Event::from_json(raw).map_err(|e| Reject::NotEvent(e.to_string()))?;
    validate_event(&event, now)
}

/// [`validate`] for an already parsed event.
pub fn validate_event(event: &Event, now: u64) -> Result<Offer, Reject> {
    if event.kind != Kind::Custom(OFFER_KIND) {
        return Err(Reject::WrongKind(event.kind.as_u16()));
    }
    event.verify().map_err(|_| Reject::BadSignature)?;
    let created_at = event.created_at.as_secs();
    let expires_at = event
        .tags
        .expiration()
        .ok_or(Reject::NoExpiration)?
        .as_secs();
    if expires_at <= now {
        return Err(Reject::Expired);
    }
    if created_at > now + MAX_FUTURE_SECS {
        return Err(Reject::Future(created_at - now));
    }
    if expires_at.saturating_sub(created_at) > MAX_LIFETIME_SECS {
        return Err(Reject::Implausible(format!(
            "lives {} s, more than {MAX_LIFETIME_SECS}",
            expires_at.saturating_sub(created_at)
        )));
    }
    let protocol = tag_values(event, TAG_PROTOCOL).next().unwrap_or_default();
    if protocol != PROTOCOL_TAG {
        return Err(Reject::Protocol(protocol.chars().take(32).collect()));
    }
    let content: OfferContent =
        serde_json::from_str(&event.content).map_err(|e| Reject::BadContent(e.to_string()))?;
    check_schema(&content.schema)?;
    check_limits(&content)?;
    let mesh_id = event
        .tags
        .identifier()
        .and_then(parse_mesh_id)
        .ok_or(Reject::BadTags("`d` is not a mesh id"))?;
    check_tags(event, &content)?;
    let node: EndpointId = content.node.parse().map_err(|_| Reject::BadBinding)?;
    let sig = data_encoding::HEXLOWER_PERMISSIVE
        .decode(content.binding.as_bytes())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| iroh::Signature::from_bytes(&b))
        .ok_or(Reject::BadBinding)?;
    node.verify(&binding_message(&event.pubkey, &mesh_id, created_at), &sig)
        .map_err(|_| Reject::BadBinding)?;
    let ticket = check_ticket(&content, mesh_id, node)?;
    check_plausible(&content).map_err(Reject::Implausible)?;
    Ok(Offer {
        event_id: event.id.to_hex(),
        publisher: event.pubkey,
        mesh_id,
        created_at,
        expires_at,
        node,
        ticket,
        content,
    })
}

fn tag_values(event: &Event, letter: Alphabet) -> impl Iterator<Item = &str> {
    event
        .tags
        .filter(tag_kind(letter))
        .filter_map(|t| t.content())
}

pub fn parse_mesh_id(text: &str) -> Option<MeshId> {
    let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).ok()?;
    Some(MeshId(bytes.try_into().ok()?))
}

fn check_schema(schema: &str) -> Result<(), Reject> {
    let major = schema.split('.').next().and_then(|m| m.parse::<u32>().ok());
    if major == Some(SCHEMA_MAJOR) {
        Ok(())
    } else {
        Err(Reject::Schema(schema.chars().take(16).collect()))
    }
}

fn check_limits(c: &OfferContent) -> Result<(), Reject> {
    let too_long = |s: &str, max: usize| s.chars().count() > max;
    let bad = if too_long(&c.name, MAX_NAME_CHARS) {
        Some("name too long")
    } else if c.models.len() > MAX_MODELS || c.wanted.len() > MAX_MODELS {
        Some("too many models")
    } else if c.models.iter().any(|m| {
        m.name.is_empty()
            || too_long(&m.name, MAX_MODEL_CHARS)
            || m.quant
                .as_deref()
                .is_some_and(|q| too_long(q, MAX_QUANT_CHARS))
            || m.free_slots > m.slots
    }) || c
        .wanted
        .iter()
        .any(|w| w.is_empty() || too_long(w, MAX_MODEL_CHARS))
    {
        Some("bad model entry")
    } else if c
        .region
        .as_deref()
        .is_some_and(|r| too_long(r, MAX_NAME_CHARS))
    {
        Some("region too long")
    } else if too_long(&c.version, MAX_VERSION_CHARS) {
        Some("version too long")
    } else {
        None
    };
    match bad {
        Some(why) => Err(Reject::BadContent(why.into())),
        None => Ok(()),
    }
}

/// What no real mesh can be: more serving nodes than a mesh holds, a model on more nodes than
/// serve, more slots or memory per node than one node has, a model listed twice. Pure; the
/// reason names the figures.
pub fn check_plausible(c: &OfferContent) -> Result<(), String> {
    if c.nodes > MAX_OFFER_NODES {
        return Err(format!(
            "claims {} serving nodes, more than {MAX_OFFER_NODES}",
            c.nodes
        ));
    }
    let max_memory = MAX_NODE_MEMORY.saturating_mul(c.nodes as u64);
    if c.memory_bytes > max_memory {
        return Err(format!(
            "claims {} GiB on {} serving nodes, more than {} GiB each",
            c.memory_bytes >> 30,
            c.nodes,
            MAX_NODE_MEMORY >> 30
        ));
    }
    let mut names = BTreeSet::new();
    for m in &c.models {
        if !names.insert(m.name.as_str()) {
            return Err(format!("lists model {:?} twice", short(&m.name)));
        }
        if m.hosts > c.nodes {
            return Err(format!(
                "claims {} hosts of {:?} among {} serving nodes",
                m.hosts,
                short(&m.name),
                c.nodes
            ));
        }
        let max_slots = MAX_SLOTS_PER_NODE.saturating_mul(m.hosts);
        if m.slots > max_slots {
            return Err(format!(
                "claims {} slots of {:?} on {} hosts, more than {MAX_SLOTS_PER_NODE} each",
                m.slots,
                short(&m.name),
                m.hosts
            ));
        }
    }
    let mut wanted = BTreeSet::new();
    if let Some(w) = c.wanted.iter().find(|w| !wanted.insert(w.as_str())) {
        return Err(format!("wants model {:?} twice", short(w)));
    }
    Ok(())
}

/// A name cut for a reason text (the whole of it is in the offer).
fn short(name: &str) -> String {
    name.chars().take(40).collect()
}

fn check_tags(event: &Event, c: &OfferContent) -> Result<(), Reject> {
    let set = |it: &mut dyn Iterator<Item = &str>| it.map(str::to_owned).collect::<BTreeSet<_>>();
    let served = set(&mut c.models.iter().map(|m| m.name.as_str()));
    if set(&mut tag_values(event, TAG_MODEL)) != served {
        return Err(Reject::BadTags("`m` tags are not the models served"));
    }
    if set(&mut tag_values(event, TAG_WANTED)) != set(&mut c.wanted.iter().map(String::as_str)) {
        return Err(Reject::BadTags("`w` tags are not the models wanted"));
    }
    if tag_values(event, TAG_REGION).next() != c.region.as_deref() {
        return Err(Reject::BadTags("`g` tag is not the region"));
    }
    Ok(())
}

/// A public offer carries a ticket for its own mesh, without a secret, naming only the bound
/// node; a private offer carries none.
fn check_ticket(
    c: &OfferContent,
    mesh_id: MeshId,
    node: EndpointId,
) -> Result<Option<Ticket>, Reject> {
    let bad = |why: &str| Err(Reject::BadTicket(why.into()));
    let Some(text) = &c.ticket else {
        return if c.public {
            bad("a public offer needs a ticket")
        } else {
            Ok(None)
        };
    };
    if !c.public {
        return bad("a private offer must not carry a ticket");
    }
    if text.len() > MAX_TICKET_CHARS {
        return bad("too long");
    }
    let ticket = Ticket::decode(text).map_err(|e| Reject::BadTicket(e.to_string()))?;
    if ticket.mesh_id != mesh_id {
        return bad("for another mesh");
    }
    if ticket.secret.is_some() {
        return bad("holds a mesh secret");
    }
    if ticket.peers.iter().any(|p| p.id != node) {
        return bad("names a node other than the publisher's");
    }
    Ok(Some(ticket))
}

/// A served model for tests and benchmarks: 4 slots, all free, on one node, 4096 tokens.
#[doc(hidden)]
pub fn sample_model(name: &str) -> ServedModel {
    ServedModel {
        name: name.into(),
        ctx: 4096,
        quant: quant_from_name(name),
        hosts: 1,
        slots: 4,
        free_slots: 4,
    }
}

/// Offer content for tests and benchmarks: [`sample_model`] on one node with 8 GiB, private
/// (no ticket), no region, 64 clients at most. Callers change what they need.
#[doc(hidden)]
pub fn sample_content(model: &str) -> OfferContent {
    OfferContent {
        schema: SCHEMA.into(),
        name: format!("{model} mesh"),
        public: false,
        models: vec![sample_model(model)],
        wanted: Vec::new(),
        region: None,
        memory_bytes: 8 << 30,
        nodes: 1,
        clients: 0,
        max_clients: 64,
        ticket: None,
        version: env!("CARGO_PKG_VERSION").into(),
        node: String::new(),
        binding: String::new(),
    }
}

/// The ticket a public offer carries: mesh `mesh_id`, no secret, naming only `node`.
#[doc(hidden)]
pub fn public_ticket(mesh_id: MeshId, node: EndpointId) -> String {
    Ticket {
        mesh_id,
        secret: None,
        peers: vec![iroh::EndpointAddr::new(node)],
    }
    .encode()
}

/// Quantization from a model name or file name (`...-Q4_K_M`, `...Q8_0.gguf`, `-F16`): the last
/// `-`/`.`-separated piece that looks like one.
pub fn quant_from_name(name: &str) -> Option<String> {
    let upper = name.trim_end_matches(".gguf").to_ascii_uppercase();
    upper.split(['-', '.']).rev().find_map(|p| {
        let digit_after = |prefix: &str| {
            p.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        };
        let is_quant =
            digit_after("IQ") || digit_after("Q") || matches!(p, "BF16" | "F16" | "F32" | "FP16");
        // A longer label would make the whole offer invalid (`check_limits`): leave it out.
        (is_quant && p.chars().count() <= MAX_QUANT_CHARS).then(|| p.to_owned())
    })
}

#[cfg(test)]
#[path = "offer_tests.rs"]
mod tests;
