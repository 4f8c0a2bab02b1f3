//! The scorer's tests: each rule, and what an inflated or untrusted offer can and cannot win.

pub(crate) use super::synthetic_offer as offer;
use super::*;

fn prefs() -> Preferences {
    Preferences {
        joinable_only: true,
        now: 1_000,
        ..Preferences::default()
    }
}

fn best(offers: &[Offer], probes: &HashMap<EndpointId, Probe>, p: &Preferences) -> u8 {
    let ranked = rank(offers, probes, p);
    assert!(ranked[0].eligible(), "{ranked:?}");
    offers[ranked[0].index].mesh_id.0[0]
}

#[test]
fn region_match_wins_when_all_else_is_equal() {
    let offers = [offer(1, "m", 4, Some("us")), offer(2, "m", 4, Some("eu"))];
    let p = Preferences {
        region: Some("eu".into()),
        ..prefs()
    };
    assert_eq!(best(&offers, &HashMap::new(), &p), 2);
    let p = Preferences {
        region: Some("us".into()),
        ..prefs()
    };
    assert_eq!(best(&offers, &HashMap::new(), &p), 1);
}

#[test]
fn free_capacity_and_low_load_win() {
    let offers = [offer(1, "m", 0, None), offer(2, "m", 4, None)];
    assert_eq!(best(&offers, &HashMap::new(), &prefs()), 2);
}

#[test]
fn measured_rtt_decides_between_equal_offers_and_unreachable_is_out() {
    let offers = [offer(1, "m", 4, None), offer(2, "m", 4, None)];
    let mut probes = HashMap::new();
    probes.insert(offers[0].node, Probe::Rtt(Duration::from_millis(150)));
    probes.insert(offers[1].node, Probe::Rtt(Duration::from_millis(5)));
    assert_eq!(best(&offers, &probes, &prefs()), 2);
    probes.insert(offers[1].node, Probe::Unreachable);
    let ranked = rank(&offers, &probes, &prefs());
    assert_eq!(offers[ranked[0].index].mesh_id.0[0], 1);
    assert_eq!(
        ranked[1].excluded.as_deref(),
        Some("did not answer a probe")
    );
}

#[test]
fn sticky_mesh_gets_its_bonus() {
    let offers = [offer(1, "m", 4, None), offer(2, "m", 4, None)];
    let p = Preferences {
        last_mesh: Some(MeshId([2; 16])),
        ..prefs()
    };
    let ranked = rank(&offers, &HashMap::new(), &p);
    assert_eq!(offers[ranked[0].index].mesh_id.0[0], 2);
    assert_eq!(ranked[0].score - ranked[1].score, 10.0);
}

#[test]
fn hard_filters_exclude_with_a_reason() {
    let mut full = offer(3, "m", 4, None);
    full.content.clients = 64;
    let mut private = offer(4, "m", 4, None);
    private.ticket = None;
    let mut small = offer(5, "m", 4, None);
    small.content.memory_bytes = 1 << 30;
    let offers = [offer(1, "other", 4, None), full, private, small];
    let p = Preferences {
        model: Some("m".into()),
        client: true,
        min_memory_bytes: 8 << 30,
        ..prefs()
    };
    let ranked = rank(&offers, &HashMap::new(), &p);
    let why: Vec<_> = ranked.iter().map(|s| s.excluded.clone().unwrap()).collect();
    assert!(why.contains(&"does not serve m".to_string()), "{why:?}");
    assert!(
        why.contains(&"full (64 of 64 clients)".to_string()),
        "{why:?}"
    );
    assert!(why.iter().any(|w| w.starts_with("private mesh")), "{why:?}");
    assert!(why.iter().any(|w| w.contains("less than asked")), "{why:?}");
    assert!(pick(&ranked, &mut rand::rng()).is_none());
    // A serving node may join a mesh that only wants the model, and a full one.
    let mut wanting = offer(6, "x", 4, None);
    wanting.content.wanted = vec!["m".into()];
    let p = Preferences {
        model: Some("m".into()),
        ..prefs()
    };
    assert_eq!(best(&[wanting], &HashMap::new(), &p), 6);
}

#[test]
fn a_wanted_model_this_node_can_serve_attracts_it() {
    let mut wanting = offer(2, "x", 4, None);
    wanting.content.wanted = vec!["small".into()];
    let offers = [offer(1, "x", 4, None), wanting];
    let p = Preferences {
        servable: vec!["small".into()],
        ..prefs()
    };
    assert_eq!(best(&offers, &HashMap::new(), &p), 2);
}

#[test]
fn equal_input_gives_equal_output_and_every_term_is_explained() {
    let offers: Vec<_> = (0..20)
        .map(|i| offer(i, "m", (i % 5) as u32, None))
        .collect();
    let a = rank(&offers, &HashMap::new(), &prefs());
    let b = rank(&offers, &HashMap::new(), &prefs());
    assert_eq!(a, b);
    let names: Vec<_> = a[0].terms.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "model",
            "capacity",
            "memory",
            "nodes",
            "load",
            "freshness",
            "region",
            "sticky",
            "rtt"
        ]
    );
    let sum: f64 = a[0].terms.iter().map(|t| t.points).sum();
    assert_eq!(sum, a[0].score);
}

/// `offer(mesh, "m", 4, None)` with 8 GiB, then every figure an offer claims (slots, free
/// slots, hosts, nodes, memory) set from `nodes`: `nodes` × the per-node caps.
fn inflated(mesh: u8, nodes: u32) -> Offer {
    let mut o = offer(mesh, "m", 4, None);
    let slots = offer::MAX_SLOTS_PER_NODE.saturating_mul(nodes);
    o.content.models[0] = ServedModel {
        hosts: nodes,
        slots,
        free_slots: slots,
        ..o.content.models[0].clone()
    };
    o.content.nodes = nodes;
    o.content.memory_bytes = offer::MAX_NODE_MEMORY.saturating_mul(nodes as u64);
    o
}

fn honest(mesh: u8) -> Offer {
    let mut o = offer(mesh, "m", 4, None);
    o.content.memory_bytes = 8 << 30;
    o
}

fn score_of(offers: &[Offer], p: &Preferences, mesh: u8) -> f64 {
    let ranked = rank(offers, &HashMap::new(), p);
    let s = ranked.iter().find(|s| offers[s.index].mesh_id.0[0] == mesh);
    s.unwrap().score
}

#[test]
fn an_offer_inflated_to_every_cap_gains_at_most_max_claim_gain() {
    let offers = [honest(1), inflated(2, offer::MAX_OFFER_NODES)];
    assert_eq!(offer::check_plausible(&offers[1].content), Ok(()));
    let gain = score_of(&offers, &prefs(), 2) - score_of(&offers, &prefs(), 1);
    assert!(gain > 0.0 && gain <= MAX_CLAIM_GAIN, "{gain}");
    // Beyond the caps (what validation rejects) no term grows further.
    let beyond = [honest(1), inflated(2, u32::MAX)];
    let gain_beyond = score_of(&beyond, &prefs(), 2) - score_of(&beyond, &prefs(), 1);
    assert_eq!(gain_beyond, gain);
    // The biggest terms bounded: capacity 20 + 6, memory 10, nodes 8.
    let ranked = rank(&beyond, &HashMap::new(), &prefs());
    let top = ranked.iter().find(|s| s.index == 1).unwrap();
    let points = |name: &str| top.terms.iter().find(|t| t.name == name).unwrap().points;
    assert_eq!(
        (points("capacity"), points("memory"), points("nodes")),
        (26.0, 10.0, 8.0)
    );
}

#[test]
fn an_inflated_offer_does_not_outrank_an_honest_one_in_the_same_region_or_the_last_mesh() {
    // The gain is less than the sticky bonus, and less than the region bonus.
    let offers = [honest(1), inflated(2, offer::MAX_OFFER_NODES)];
    let sticky = Preferences {
        last_mesh: Some(MeshId([1; 16])),
        ..prefs()
    };
    assert_eq!(best(&offers, &HashMap::new(), &sticky), 1);
    let mut offers = offers;
    offers[0].content.region = Some("eu".into());
    let region = Preferences {
        region: Some("eu".into()),
        ..prefs()
    };
    assert_eq!(best(&offers, &HashMap::new(), &region), 1);
    // And a faster node beats it: about 90 ms of round trip is worth the whole gain.
    let mut probes = HashMap::new();
    probes.insert(offers[0].node, Probe::Rtt(Duration::from_millis(1)));
    probes.insert(offers[1].node, Probe::Rtt(Duration::from_millis(100)));
    assert_eq!(best(&offers, &probes, &prefs()), 1);
}

#[test]
fn capped_terms_say_what_they_counted() {
    let offers = [inflated(2, 50)];
    let ranked = rank(&offers, &HashMap::new(), &prefs());
    let detail = |name: &str| {
        let t = ranked[0].terms.iter().find(|t| t.name == name).unwrap();
        t.detail.clone()
    };
    assert_eq!(
        detail("nodes"),
        "50 serving, 0 clients (counted as 3 serving)"
    );
    assert_eq!(
        detail("capacity"),
        "12800 of 12800 slots free (counted as 7)"
    );
    assert_eq!(
        detail("memory"),
        "204800.0 GiB on serving nodes (counted as 31 GiB)"
    );
    // Under the caps, no note.
    let ranked = rank(&[honest(1)], &HashMap::new(), &prefs());
    assert!(ranked[0]
        .terms
        .iter()
        .all(|t| !t.detail.contains("counted")));
}

#[test]
fn offers_of_an_untrusted_publisher_or_node_are_excluded_with_the_reason() {
    let liar = honest(1);
    let mut untrusted = Untrusted::default();
    untrusted.add(
        &liar,
        "the offer claims 64 serving nodes, gossip shows 1",
        1_000,
    );
    // The same node under a new Nostr key.
    let mut renamed = honest(2);
    renamed.node = liar.node;
    let offers = [liar, renamed, honest(3)];
    let p = Preferences {
        untrusted,
        ..prefs()
    };
    let ranked = rank(&offers, &HashMap::new(), &p);
    assert_eq!(offers[ranked[0].index].mesh_id.0[0], 3);
    for s in &ranked[1..] {
        assert_eq!(
            s.excluded.as_deref(),
            Some("untrusted publisher: the offer claims 64 serving nodes, gossip shows 1")
        );
    }
    // Forgiven once the entry expires.
    let later = Preferences {
        now: 1_000 + super::super::untrusted::UNTRUSTED_FOR_SECS,
        ..p
    };
    assert!(rank(&offers, &HashMap::new(), &later)
        .iter()
        .all(Scored::eligible));
}

#[test]
fn pick_spreads_over_near_equal_leaders_only() {
    let offers = [
        offer(1, "m", 4, None),
        offer(2, "m", 4, None),
        offer(3, "m", 0, None),
    ];
    let ranked = rank(&offers, &HashMap::new(), &prefs());
    let mut seen = std::collections::BTreeSet::new();
    let mut rng = rand::rng();
    for _ in 0..200 {
        let s = pick(&ranked, &mut rng).unwrap();
        seen.insert(offers[s.index].mesh_id.0[0]);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2]);
}
