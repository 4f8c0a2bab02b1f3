//! Nostr discovery against a real relay on 127.0.0.1: publish → discover with exact fields,
//! deletion on shutdown, hostile offers rejected and counted, `/api/discover` filters, and a
//! relay that is down at first (the node keeps running and publishes once it is up).

use crate::common;

use std::time::Duration;

use common::*;
use mesh::discovery::nostr_io::{self, Query};
use mesh::discovery::offer::{self, OfferContent, ServedModel};
use mesh::mesh::proto::ticket::{MeshId, MeshSecret, Ticket};
use mesh::util::time::unix_secs;
use nostr::{EventBuilder, JsonUtil, Keys, Timestamp};
use nostr_relay_builder::prelude::NostrDatabase;
use serde_json::Value;

async fn wait_published(node: &TestNode) -> Value {
    let url = format!("{}/api/publish", node.api);
    eventually_value(
        Duration::from_secs(15),
        "the offer published",
        || node.get_json(&url),
        |s| s["state"]["published"].as_u64().unwrap_or(0) > 0,
    )
    .await
}

#[tokio::test]
async fn publish_then_discover_returns_exact_fields_and_shutdown_deletes_the_offer() {
    let relay = start_relay().await;
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    cfg.region = Some("eu-west".into());
    // The real model: the offer's exact fields (ctx, quant, slots) are the engine's.
    let a = start_node(
        Some(config()),
        cfg,
        Some(discovery(vec![relay.url.clone()], true, Some("eu-west"))),
    )
    .await
    .unwrap();
    let state = wait_published(&a).await;
    let mesh = a.node.mesh.as_ref().unwrap();

    let found = nostr_io::fetch_offers(
        std::slice::from_ref(&relay.url),
        &Query::default(),
        unix_secs(),
    )
    .await;
    assert!(found.relays[0].ok, "{:?}", found.relays);
    assert!(found.rejected.is_empty(), "{:?}", found.rejected);
    assert_eq!(found.offers.len(), 1);
    let o = &found.offers[0];
    assert_eq!(o.mesh_id, mesh.mesh_id());
    assert_eq!(o.node, mesh.node_id());
    assert_eq!(
        Some(o.event_id.as_str()),
        state["state"]["last_event_id"].as_str()
    );
    assert_eq!(o.expires_at - o.created_at, 180);
    let ticket = o.ticket.as_ref().expect("public offers carry a ticket");
    assert_eq!(ticket.mesh_id, mesh.mesh_id());
    assert_eq!(ticket.peers[0].id, mesh.node_id());
    assert!(ticket.secret.is_none());
    let c = &o.content;
    assert_eq!(
        c.models,
        [ServedModel {
            name: MODEL.into(),
            ctx: 512,
            quant: Some("Q4_1".into()),
            hosts: 1,
            slots: 4,
            free_slots: 4,
        }]
    );
    assert_eq!((c.nodes, c.clients, c.max_clients), (1, 0, 64));
    assert_eq!(c.region.as_deref(), Some("eu-west"));
    assert_eq!(c.name, "test mesh");
    assert!(c.public && c.wanted.is_empty());
    assert_eq!(c.version, env!("CARGO_PKG_VERSION"));
    assert!(c.memory_bytes > 0);

    // The management API shows the same offer, scored, with a measured RTT to its node.
    let d = a
        .get_json(&format!("{}/api/discover?region=eu-west", a.api))
        .await;
    let offers = d["offers"].as_array().unwrap();
    assert_eq!(offers.len(), 1, "{d}");
    assert_eq!(offers[0]["mesh_id"], mesh.mesh_id().to_string());
    assert_eq!(offers[0]["offer"]["models"][0]["name"], MODEL);
    assert!(offers[0]["publisher"]
        .as_str()
        .unwrap()
        .starts_with("npub1"));
    let terms = offers[0]["terms"].as_array().unwrap();
    let rtt = terms.iter().find(|t| t["name"] == "rtt").unwrap();
    assert!(
        rtt["detail"].as_str().unwrap().ends_with("ms measured"),
        "{rtt}"
    );
    let region = terms.iter().find(|t| t["name"] == "region").unwrap();
    assert_eq!(region["points"], 15.0);

    a.node.shutdown().await;
    let after = nostr_io::fetch_offers(
        std::slice::from_ref(&relay.url),
        &Query::default(),
        unix_secs(),
    )
    .await;
    assert!(
        after.offers.is_empty(),
        "deleted on shutdown: {:?}",
        after.offers
    );
}

fn content(node: &iroh::SecretKey, mesh_id: MeshId, model: &str, region: &str) -> OfferContent {
    OfferContent {
        public: true,
        region: Some(region.into()),
        max_clients: 8,
        ticket: Some(offer::public_ticket(mesh_id, node.public())),
        ..offer::sample_content(model)
    }
}

/// A signed offer for a made-up node.
fn offer_event(model: &str, region: &str, created_at: u64) -> nostr::Event {
    offer_event_by(&Keys::generate(), model, region, created_at)
}

fn offer_event_by(keys: &Keys, model: &str, region: &str, created_at: u64) -> nostr::Event {
    let node = iroh::SecretKey::generate();
    let mesh_id = MeshId::random();
    let c = content(&node, mesh_id, model, region);
    offer::build_event(keys, &node, mesh_id, c, created_at, 180).unwrap()
}

/// Re-signs `event` with other content: a valid Nostr event that breaks an offer rule.
fn resigned(event: &nostr::Event, keys: &Keys, content: String) -> nostr::Event {
    EventBuilder::new(event.kind, content)
        .tags(event.tags.clone().to_vec())
        .custom_created_at(event.created_at)
        .sign_with_keys(keys)
        .unwrap()
}

#[tokio::test]
async fn hostile_offers_are_rejected_and_counted() {
    let now = unix_secs();
    let store = relay_store();
    let good = offer_event("good-model", "eu", now);
    store.save_event(&good).await.unwrap();

    // Binding signed by one node, naming another (with a ticket for that other node).
    let keys = Keys::generate();
    let node = iroh::SecretKey::generate();
    let mesh_id = MeshId::random();
    let honest = offer::build_event(
        &keys,
        &node,
        mesh_id,
        content(&node, mesh_id, "m", "eu"),
        now,
        180,
    )
    .unwrap();
    let victim = iroh::SecretKey::generate();
    let mut stolen: OfferContent = serde_json::from_str(&honest.content).unwrap();
    stolen.node = victim.public().to_string();
    stolen.ticket = content(&victim, mesh_id, "m", "eu").ticket;
    let hostile = [
        resigned(&honest, &keys, serde_json::to_string(&stolen).unwrap()),
        // Bad Nostr signature: content changed after signing.
        {
            let mut e = offer_event("tampered", "eu", now);
            e.content = e.content.replace("tampered mesh", "evil mesh");
            e
        },
        offer_event("future", "eu", now + 3600),
        {
            let e = offer_event_by(&keys, "big", "eu", now);
            let mut c: OfferContent = serde_json::from_str(&e.content).unwrap();
            c.name = "x".repeat(offer::MAX_EVENT_BYTES);
            resigned(&e, &keys, serde_json::to_string(&c).unwrap())
        },
        {
            let e = offer_event_by(&keys, "garbage", "eu", now);
            resigned(&e, &keys, "{not json".into())
        },
        {
            let e = offer_event_by(&keys, "v2", "eu", now);
            let c = e
                .content
                .replace("\"schema\":\"1.0\"", "\"schema\":\"2.0\"");
            resigned(&e, &keys, c)
        },
        {
            let e = offer_event_by(&keys, "secret", "eu", now);
            let mut c: OfferContent = serde_json::from_str(&e.content).unwrap();
            let t = Ticket::decode(c.ticket.as_deref().unwrap()).unwrap();
            c.ticket = Some(
                Ticket {
                    secret: Some(MeshSecret::random()),
                    ..t
                }
                .encode(),
            );
            resigned(&e, &keys, serde_json::to_string(&c).unwrap())
        },
    ];
    for e in &hostile {
        store.save_event(e).await.unwrap();
    }
    // An expired offer never reaches a client: the relay's store refuses it (checked here too).
    let expired = EventBuilder::new(good.kind, good.content.clone())
        .tags(
            good.tags
                .clone()
                .to_vec()
                .into_iter()
                .filter(|t| t.as_slice()[0] != "expiration")
                .chain([nostr::Tag::expiration(Timestamp::from(now - 10))]),
        )
        .custom_created_at(Timestamp::from(now - 100))
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let _ = store.save_event(&expired).await;
    assert_eq!(
        offer::validate(&expired.as_json(), now)
            .unwrap_err()
            .as_str(),
        "expired"
    );
    let relay = start_relay_with(store).await;

    let found =
        nostr_io::fetch_offers(std::slice::from_ref(&relay.url), &Query::default(), now).await;
    assert_eq!(found.offers.len(), 1, "{:?}", found.offers);
    assert_eq!(found.offers[0].content.models[0].name, "good-model");
    let counts: Vec<(&str, u64)> = found.rejected.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        counts,
        [
            ("bad_binding", 1),
            ("bad_content", 1),
            ("bad_signature", 1),
            ("bad_ticket", 1),
            ("future", 1),
            ("schema", 1),
            ("too_large", 1),
        ]
    );
}

#[tokio::test]
async fn api_discover_filters_by_model_region_and_memory() {
    let relay = start_relay().await;
    let now = unix_secs();
    for (model, region) in [("alpha", "eu"), ("beta", "us"), ("alpha", "us")] {
        let reports = nostr_io::publish(
            std::slice::from_ref(&relay.url),
            &offer_event(model, region, now),
        )
        .await;
        assert!(reports[0].ok, "{reports:?}");
    }
    let client = start_node(
        None,
        mesh_config(vec![]),
        Some(discovery(vec![relay.url.clone()], false, None)),
    )
    .await
    .unwrap();
    let get = |q: &'static str| {
        let url = format!("{}/api/discover?probe=false&{q}", client.api);
        let client = &client;
        async move { client.get_json(&url).await }
    };
    let models = |v: &Value| -> Vec<(String, String)> {
        let mut m: Vec<_> = v["offers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["offer"]["models"][0]["name"].as_str().unwrap().to_owned(),
                    o["offer"]["region"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(models(&get("").await).len(), 3);
    assert_eq!(
        models(&get("model=alpha").await),
        [pair("alpha", "eu"), pair("alpha", "us")]
    );
    assert_eq!(
        models(&get("region=us").await),
        [pair("alpha", "us"), pair("beta", "us")]
    );
    assert_eq!(
        models(&get("model=alpha&region=eu").await),
        [pair("alpha", "eu")]
    );
    let big = get("min_memory=1000").await;
    let big_offers = big["offers"].as_array().unwrap();
    assert_eq!(
        big_offers.len(),
        3,
        "excluded offers are still listed: {big}"
    );
    for o in big_offers {
        let why = o["excluded"].as_str().unwrap();
        assert!(why.contains("less than asked"), "{why}");
    }
    let fits = get("min_memory=8").await;
    let fit_offers = fits["offers"].as_array().unwrap();
    assert_eq!(fit_offers.len(), 3, "{fits}");
    assert!(fit_offers.iter().all(|o| o["excluded"].is_null()), "{fits}");
    client.node.shutdown().await;
}

#[tokio::test]
async fn a_relay_that_is_down_does_not_stop_the_node_and_gets_the_offer_once_up() {
    // Refuses connections, and stays ours until the relay binds it.
    let closed = ClosedPort::new();
    let port = closed.port;
    let url = nostr::RelayUrl::parse(&format!("ws://127.0.0.1:{port}")).unwrap();
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    let a = start_node_fake(fake(), cfg, Some(discovery(vec![url.clone()], true, None)))
        .await
        .unwrap();
    // The first round fails with a clear per-relay error; the node serves regardless.
    let url_publish = format!("{}/api/publish", a.api);
    let state = eventually_value(
        Duration::from_secs(15),
        "a publish round",
        || a.get_json(&url_publish),
        |s| {
            s["state"]["relays"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    )
    .await;
    let r = &state["state"]["relays"][0];
    assert_eq!(r["ok"], false, "{state}");
    assert!(
        r["error"].as_str().unwrap().contains("cannot connect"),
        "{r}"
    );
    assert_eq!(state["state"]["published"], 0);
    assert_eq!(a.model_ids().await, [MODEL]);

    // The relay comes up on that port: the retry with backoff delivers the offer.
    closed.release();
    let relay = nostr_relay_builder::prelude::LocalRelay::new(
        nostr_relay_builder::prelude::RelayBuilder::default()
            .addr(std::net::Ipv4Addr::LOCALHOST.into())
            .port(port)
            .database(relay_store()),
    );
    relay.run().await.unwrap();
    wait_published(&a).await;
    let found = nostr_io::fetch_offers(&[url], &Query::default(), unix_secs()).await;
    assert_eq!(found.offers.len(), 1);
    a.node.shutdown().await;
    relay.shutdown();
}
