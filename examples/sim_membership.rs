//! Membership at scale in simulated time (`src/mesh/sim`): N client nodes running the real
//! iroh-gossip protocol state and the real membership protocol over a simulated network
//! (one-way latency 10–80 ms per pair, no loss). Phases, all in simulated seconds:
//! - `formed_s`: N nodes join, one every 20 ms, each through up to three earlier nodes; from
//!   the last join until every table holds every node;
//! - `known_by_all_s` / `knows_all_s`: one more node joins through one member; until every
//!   node has it in its table, and until it has every node (its neighbour's roster);
//! - `gossip_sent_bytes_per_node_s` (= received): gossip frames and rosters per node per
//!   second over an idle window of `IDLE` seconds (default: one refresh period and a half),
//!   120 s after the newcomer joined (the joins' roster retries are over by then);
//!   `conns_per_node`: QUIC connections open per node meanwhile (each also costs keep-alives,
//!   which are not simulated: docs/BENCHMARKS.md adds them from a measurement);
//!   `dials_per_node_s`: connections opened; `by_kind`: the same messages and bytes by
//!   iroh-gossip's message kind (`sim::KINDS`);
//! - `death_known_by_all_s`: after one node dies silently, until no node has it in its table;
//! - `joining_rosters_per_node`, `joining_roster_bytes_per_node`: rosters each node received
//!   from the first join to the idle window, and their bytes;
//! - `bans`, `live_dropped`: honest nodes banned, live peers dropped from a table (both 0 in a
//!   healthy run); `rejoins`: times a node with no gossip neighbour asked members to take it
//!   in (`state::alone`), over the whole run.
//!
//! `cargo run --release --features sim --example sim_membership -- [NODES] [IDLE] [SEED]
//! [STRAYS]` (`just sim-membership`; `STRAYS` 0: nodes leave stray gossip connections open, as
//! before `Member::strays`). Progress goes to stderr, one JSON line to stdout.

use std::time::{Duration, Instant};

use mesh::mesh::sim::{SimConfig, World, KINDS};

const TICK: Duration = Duration::from_millis(100);
const LIMIT: Duration = Duration::from_secs(600);
const SETTLE: Duration = Duration::from_secs(30);
const QUIET: Duration = Duration::from_secs(120);

fn main() {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, seed) = (arg(1, 200) as usize, arg(3, 1));
    let cfg = SimConfig {
        seed,
        close_strays: arg(4, 1) != 0,
        ..SimConfig::default()
    };
    let idle = Duration::from_secs(arg(2, cfg.timers.refresh.as_secs() * 3 / 2));
    let wall = Instant::now();
    let say = |w: &World, what: &str| {
        eprintln!(
            "[{:>6.1} s wall, {:>7.1} s simulated] {what}",
            wall.elapsed().as_secs_f64(),
            w.elapsed().as_secs_f64()
        )
    };
    let mut w = World::new(cfg);
    w.add_node(&[]);
    let mut pick = seed.wrapping_mul(6364136223846793005) | 1;
    let mut next = |below: usize| {
        pick = pick
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (pick >> 33) as usize % below
    };
    for i in 1..n {
        let boot: Vec<usize> = (0..3.min(i)).map(|_| next(i)).collect();
        w.add_node(&boot);
        w.run_for(Duration::from_millis(20));
        if i % 100 == 0 {
            say(&w, &format!("{i} nodes joined"));
        }
    }
    say(&w, &format!("all {n} nodes joined"));
    let joined = w.elapsed();
    let mut told = false;
    let formed = w.run_until(LIMIT, TICK, |w| {
        if !told && w.elapsed() >= joined + SETTLE {
            told = true;
            let (pairs, lacking, unknown) = w.missing();
            let s =
                format!("after {SETTLE:?}: {pairs} pairs missing: {lacking} nodes lack {unknown}");
            say(w, &s);
        }
        w.complete()
    });
    let least = w.alive().map(|i| w.known_by(i)).min().unwrap_or(0);
    say(
        &w,
        &format!("formed: {formed:?} (fewest peers known by a node: {least})"),
    );

    let newcomer = w.add_node(&[next(n)]);
    let mut knows_all = None;
    let known_by_all = w.run_until(LIMIT, TICK, |w| {
        let (yes, all) = w.known_count(newcomer);
        if knows_all.is_none() && w.known_by(newcomer) == all {
            knows_all = Some(w.elapsed());
        }
        yes == all && knows_all.is_some()
    });
    let start = w.elapsed() - known_by_all.unwrap_or_default();
    let knows_all = knows_all.map(|t| t - start);
    say(
        &w,
        &format!("newcomer known by all: {known_by_all:?}, knows all: {knows_all:?}"),
    );

    // Let the joins' after-effects pass: the newcomers' second roster 5 s after the first, and
    // the retries after incomplete rosters (`liveness::INCOMPLETE_ROSTERS`, over about 75 s).
    w.run_for(QUIET);
    let joining = w.traffic();
    w.reset_traffic();
    w.run_for(idle);
    let t = w.traffic();
    let alive = w.alive().count() as f64;
    let per_node = |b: u64| b as f64 / t.seconds / alive;
    let neighbours = w.alive().map(|i| w.neighbours(i)).sum::<usize>() as f64 / alive;
    say(&w, &format!("idle window: {t:?}"));

    let victim = next(n);
    w.kill(victim);
    let death = w.run_until(LIMIT, TICK, |w| w.known_count(victim).0 == 0);
    say(&w, &format!("death known by all: {death:?}"));
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let by_kind: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .zip(t.by_kind)
        .filter(|(_, (count, _))| *count > 0)
        .map(|(k, (count, bytes))| {
            let v = serde_json::json!({"per_node_s": per_node(count), "bytes_per_node_s": per_node(bytes)});
            (k.to_string(), v)
        })
        .collect();
    let f = w.faults();
    println!(
        "{}",
        serde_json::json!({
            "nodes": n,
            "seed": seed,
            "formed_s": secs(formed),
            "known_by_all_s": secs(known_by_all),
            "knows_all_s": secs(knows_all),
            "idle_s": t.seconds,
            "gossip_sent_bytes_per_node_s": per_node(t.sent),
            "gossip_recv_bytes_per_node_s": per_node(t.received),
            "gossip_messages_per_node_s": per_node(t.messages),
            "conns_per_node": t.conns_per_node,
            "strays_closed_per_node_s": per_node(t.strays_closed),
            "dials_per_node_s": per_node(t.dials),
            "rejoins": w.rejoins(),
            // From the first join to the idle window: rosters handed out per node, and their
            // bytes per node (each counted once, as received).
            "joining_rosters_per_node": joining.rosters.0 as f64 / alive,
            "joining_roster_bytes_per_node": joining.rosters.1 as f64 / alive,
            "by_kind": by_kind,
            "gossip_neighbours_per_node": neighbours,
            "death_known_by_all_s": secs(death),
            "bans": f.bans,
            "live_dropped": f.live_dropped,
            "wall_s": wall.elapsed().as_secs_f64(),
        })
    );
}
