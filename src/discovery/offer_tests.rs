//! Validation of offers: every rule has a test that breaks exactly it.

use super::*;
use crate::mesh::proto::ticket::MeshSecret;

const NOW: u64 = 1_800_000_000;

fn content(public: bool) -> OfferContent {
    OfferContent {
        name: "test mesh".into(),
        public,
        wanted: vec!["Qwen3-8B-Q4_K_M".into()],
        region: Some("eu-west".into()),
        memory_bytes: 24 << 30,
        clients: 2,
        ..sample_content("SmolLM2-135M-Instruct-Q4_1")
    }
}

struct Fixture {
    keys: Keys,
    node: SecretKey,
    mesh_id: MeshId,
}

impl Fixture {
    fn new() -> Self {
        Self {
            keys: Keys::generate(),
            node: SecretKey::generate(),
            mesh_id: MeshId::random(),
        }
    }

    fn ticket(&self, secret: Option<MeshSecret>, node: EndpointId) -> String {
        match secret {
            None => public_ticket(self.mesh_id, node),
            Some(secret) => Ticket {
                mesh_id: self.mesh_id,
                secret: Some(secret),
                peers: vec![iroh::EndpointAddr::new(node)],
            }
            .encode(),
        }
    }

    fn public_content(&self) -> OfferContent {
        OfferContent {
            ticket: Some(self.ticket(None, self.node.public())),
            ..content(true)
        }
    }

    fn event(&self, c: OfferContent, created_at: u64, ttl: u64) -> Event {
        build_event(&self.keys, &self.node, self.mesh_id, c, created_at, ttl).unwrap()
    }

    fn json(&self, c: OfferContent) -> String {
        self.event(c, NOW, 180).as_json()
    }
}

/// Re-signs `event` with new content (same tags and time): a well-signed Nostr event whose
/// content breaks some rule.
fn with_content(f: &Fixture, event: &Event, content: &str) -> String {
    EventBuilder::new(event.kind, content)
        .tags(event.tags.clone().to_vec())
        .custom_created_at(event.created_at)
        .sign_with_keys(&f.keys)
        .unwrap()
        .as_json()
}

fn reject(raw: &str) -> &'static str {
    validate(raw, NOW).unwrap_err().as_str()
}

#[test]
fn a_built_offer_validates_with_every_field_intact() {
    let f = Fixture::new();
    let c = f.public_content();
    let offer = validate(&f.json(c.clone()), NOW).unwrap();
    assert_eq!(offer.mesh_id, f.mesh_id);
    assert_eq!(offer.node, f.node.public());
    assert_eq!(offer.publisher, f.keys.public_key());
    assert_eq!(offer.created_at, NOW);
    assert_eq!(offer.expires_at, NOW + 180);
    assert_eq!(offer.ticket.as_ref().unwrap().mesh_id, f.mesh_id);
    assert_eq!(offer.content.models, c.models);
    assert_eq!(offer.content.wanted, c.wanted);
    assert_eq!(offer.content.region, c.region);
    assert_eq!(
        (
            offer.content.nodes,
            offer.content.clients,
            offer.content.max_clients
        ),
        (1, 2, 64)
    );
    // A private offer carries no ticket and validates too.
    let private = validate(&f.json(content(false)), NOW).unwrap();
    assert!(private.ticket.is_none() && !private.content.public);
}

#[test]
fn tampered_content_breaks_the_nostr_signature() {
    let f = Fixture::new();
    let json = f.json(f.public_content());
    let tampered = json.replace("test mesh", "evil mesh");
    assert_ne!(json, tampered);
    assert_eq!(reject(&tampered), "bad_signature");
}

#[test]
fn an_offer_naming_someone_elses_endpoint_is_refused() {
    let f = Fixture::new();
    let event = f.event(f.public_content(), NOW, 180);
    let mut c: OfferContent = serde_json::from_str(&event.content).unwrap();
    let victim = SecretKey::generate().public();
    c.node = victim.to_string();
    c.ticket = Some(f.ticket(None, victim));
    let raw = with_content(&f, &event, &serde_json::to_string(&c).unwrap());
    assert_eq!(reject(&raw), "bad_binding");
    // The binding of one publisher does not carry over to another nostr key.
    let thief = Fixture {
        keys: Keys::generate(),
        node: SecretKey::generate(),
        mesh_id: f.mesh_id,
    };
    let raw = with_content(&thief, &event, &event.content);
    assert_eq!(reject(&raw), "bad_binding");
}

#[test]
fn expiry_and_clock_rules() {
    let f = Fixture::new();
    let old = f.event(f.public_content(), NOW - 200, 180).as_json();
    assert_eq!(reject(&old), "expired");
    let skewed = f.event(f.public_content(), NOW + 200, 180).as_json();
    assert!(validate(&skewed, NOW).is_ok(), "within the allowed skew");
    let future = f.event(f.public_content(), NOW + 600, 180).as_json();
    assert_eq!(reject(&future), "future");
    let no_expiry = EventBuilder::new(Kind::Custom(OFFER_KIND), "{}")
        .custom_created_at(Timestamp::from(NOW))
        .sign_with_keys(&f.keys)
        .unwrap()
        .as_json();
    assert_eq!(reject(&no_expiry), "no_expiration");
}

#[test]
fn size_kind_schema_and_garbage() {
    let f = Fixture::new();
    let mut big = f.public_content();
    big.name = "x".repeat(MAX_EVENT_BYTES);
    assert_eq!(reject(&f.json(big)), "too_large");
    let event = f.event(f.public_content(), NOW, 180);
    assert_eq!(
        reject(&with_content(&f, &event, "not json {")),
        "bad_content"
    );
    assert_eq!(reject(&with_content(&f, &event, "[1,2,3]")), "bad_content");
    let mut v2 = f.public_content();
    v2.schema = "2.0".into();
    assert_eq!(reject(&f.json(v2)), "schema");
    let other_kind = EventBuilder::new(Kind::TextNote, "hi")
        .sign_with_keys(&f.keys)
        .unwrap()
        .as_json();
    assert_eq!(reject(&other_kind), "wrong_kind");
    for garbage in ["", "null", "{", "[]", "{\"id\":1}", "\u{0}\u{1}"] {
        assert_eq!(reject(garbage), "not_event", "{garbage:?}");
    }
}

#[test]
fn tags_must_agree_with_the_content() {
    let f = Fixture::new();
    let event = f.event(f.public_content(), NOW, 180);
    let mut c: OfferContent = serde_json::from_str(&event.content).unwrap();
    c.models[0].name = "another-model".into();
    let raw = with_content(&f, &event, &serde_json::to_string(&c).unwrap());
    assert_eq!(reject(&raw), "bad_tags");
}

#[test]
fn ticket_rules() {
    let f = Fixture::new();
    let with_secret = OfferContent {
        ticket: Some(f.ticket(Some(MeshSecret::random()), f.node.public())),
        ..content(true)
    };
    assert_eq!(reject(&f.json(with_secret)), "bad_ticket");
    let other_node = OfferContent {
        ticket: Some(f.ticket(None, SecretKey::generate().public())),
        ..content(true)
    };
    assert_eq!(reject(&f.json(other_node)), "bad_ticket");
    let garbage = OfferContent {
        ticket: Some("mesh1notaticket".into()),
        ..content(true)
    };
    assert_eq!(reject(&f.json(garbage)), "bad_ticket");
    assert_eq!(
        reject(&f.json(content(true))),
        "bad_ticket",
        "public needs one"
    );
    let private_with = OfferContent {
        public: false,
        ..f.public_content()
    };
    assert_eq!(reject(&f.json(private_with)), "bad_ticket");
}

#[test]
fn arbitrary_bytes_never_panic() {
    let f = Fixture::new();
    let json = f.json(f.public_content());
    let bytes = json.as_bytes();
    let mut rng = rand::rng();
    for _ in 0..2000 {
        let mut b = bytes.to_vec();
        for _ in 0..rand::Rng::random_range(&mut rng, 1..8) {
            let i = rand::Rng::random_range(&mut rng, 0..b.len());
            b[i] = rand::random();
        }
        let text = String::from_utf8_lossy(&b);
        let _ = validate(&text, NOW);
    }
}

#[test]
fn quantization_is_read_from_names() {
    assert_eq!(
        quant_from_name("Qwen3-8B-Q4_K_M").as_deref(),
        Some("Q4_K_M")
    );
    assert_eq!(
        quant_from_name("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
        Some("Q4_1")
    );
    assert_eq!(quant_from_name("model-IQ4_XS").as_deref(), Some("IQ4_XS"));
    assert_eq!(
        quant_from_name("gemma-3-1b-it-BF16").as_deref(),
        Some("BF16")
    );
    assert_eq!(quant_from_name("Qwen3-8B"), None);
}

#[test]
fn a_quantization_label_too_long_for_an_offer_is_left_out() {
    // A peer may announce any model name up to the mesh's limit; the label read from it must
    // not make this node's whole offer invalid.
    let long = format!("m-Q4{}", "K".repeat(MAX_QUANT_CHARS));
    assert_eq!(quant_from_name(&long), None);
    let mut c = sample_content("m");
    c.models[0].quant = quant_from_name(&long);
    assert!(check_limits(&c).is_ok());
    assert_eq!(
        quant_from_name(&format!("m-Q8_0-Q4{}", "K".repeat(MAX_QUANT_CHARS))).as_deref(),
        Some("Q8_0")
    );
}

/// The reason text of an implausible offer (panics on any other outcome).
fn implausible(f: &Fixture, c: OfferContent) -> String {
    match validate(&f.json(c), NOW) {
        Err(Reject::Implausible(why)) => why,
        other => panic!("not implausible: {other:?}"),
    }
}

#[test]
fn the_issue_s_inflated_offer_is_implausible() {
    // A live node re-signing its own offer (same binding) with the figures of issue 12.
    let f = Fixture::new();
    let mut c = f.public_content();
    c.nodes = u32::MAX;
    c.memory_bytes = 1 << 53;
    c.models[0].hosts = u32::MAX;
    c.models[0].slots = u32::MAX;
    c.models[0].free_slots = u32::MAX;
    let why = implausible(&f, c);
    assert_eq!(why, "claims 4294967295 serving nodes, more than 1024");
    assert_eq!(
        Reject::Implausible(why.clone()).to_string(),
        format!("implausible: {why}")
    );
}

#[test]
fn an_offer_at_every_cap_is_still_valid() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.nodes = MAX_OFFER_NODES;
    c.memory_bytes = MAX_NODE_MEMORY * MAX_OFFER_NODES as u64;
    c.models[0].hosts = MAX_OFFER_NODES;
    c.models[0].slots = MAX_SLOTS_PER_NODE * MAX_OFFER_NODES;
    let json = f.event(c, NOW, MAX_LIFETIME_SECS).as_json();
    assert!(validate(&json, NOW).is_ok());
}

#[test]
fn more_serving_nodes_than_a_mesh_holds_are_implausible() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.nodes = MAX_OFFER_NODES + 1;
    assert!(implausible(&f, c).contains("1025 serving nodes"));
}

#[test]
fn more_memory_per_serving_node_than_the_cap_is_implausible() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.nodes = 2;
    c.memory_bytes = 2 * MAX_NODE_MEMORY + 1;
    assert_eq!(
        implausible(&f, c),
        "claims 8192 GiB on 2 serving nodes, more than 4096 GiB each"
    );
    // No serving node, no memory.
    let mut c = content(false);
    c.nodes = 0;
    c.models.clear();
    c.memory_bytes = 1;
    assert!(implausible(&f, c).contains("on 0 serving nodes"));
}

#[test]
fn a_model_on_more_hosts_than_serving_nodes_is_implausible() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.models[0].hosts = 2;
    c.models[0].slots = 8;
    assert_eq!(
        implausible(&f, c),
        "claims 2 hosts of \"SmolLM2-135M-Instruct-Q4_1\" among 1 serving nodes"
    );
}

#[test]
fn more_slots_than_max_per_host_are_implausible() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.models[0].slots = MAX_SLOTS_PER_NODE + 1;
    assert!(implausible(&f, c).contains("257 slots"));
    let mut c = f.public_content();
    c.models[0].slots = MAX_SLOTS_PER_NODE;
    assert!(validate(&f.json(c), NOW).is_ok());
}

#[test]
fn a_model_listed_twice_is_implausible() {
    let f = Fixture::new();
    let mut c = f.public_content();
    c.nodes = 2;
    c.models.push(c.models[0].clone());
    assert!(implausible(&f, c).contains("lists model \"SmolLM2-135M-Instruct-Q4_1\" twice"));
    let mut c = f.public_content();
    c.wanted = vec!["w".into(), "w".into()];
    assert!(implausible(&f, c).contains("wants model \"w\" twice"));
}

#[test]
fn an_offer_living_longer_than_ten_minutes_is_implausible() {
    let f = Fixture::new();
    let ok = f
        .event(f.public_content(), NOW, MAX_LIFETIME_SECS)
        .as_json();
    assert!(validate(&ok, NOW).is_ok());
    let long = f
        .event(f.public_content(), NOW, MAX_LIFETIME_SECS + 1)
        .as_json();
    assert_eq!(
        validate(&long, NOW).unwrap_err(),
        Reject::Implausible("lives 601 s, more than 600".into())
    );
}
