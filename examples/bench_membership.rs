//! Membership at scale, on loopback: N mesh nodes (clients, relays off, the default timers) in
//! one process, each a real iroh endpoint. Prints, as one JSON line:
//! - `formed_s`: time to start them all, each joining through up to three earlier nodes;
//! - `known_by_all_s`: after one more node joins, until every node has it in its table;
//! - `knows_all_s`: until that newcomer has every node in its table (the roster);
//! - `recv_bytes_per_node_s`, `sent_bytes_per_node_s`: UDP bytes each node received / sent per
//!   second over an idle window (from `SETTLE_SECS` after the newcomer joined), counted by
//!   iroh's socket (everything: gossip announcements, refreshes and their repair traffic, QUIC
//!   keep-alives and acks, handshakes);
//!   `recv_bytes_per_late_node_s`: the same for the nodes that joined once the mesh had more
//!   than 32 peers (no tunnels: gossip alone); `late_*`: what those hold open, per node
//!   (gossip connections and neighbours, their own tunnels, nodes the gate tracks a connection
//!   of: their gossip peers and whoever tunnels to them); `early_tunnel_conns`: tunnels the
//!   first nodes hold at the end of the window (opened while the mesh was small, closed once
//!   idle for `Timers::tunnel_idle`, 120 s);
//! - `cpu_pct_per_node`: CPU of the whole process over that window ÷ N, in % of one core;
//! - `conns_opened_per_node_s`, `holepunch_attempts_per_node_s`, `ip_paths_added_per_node_s`,
//!   `recv_datagrams_per_node_s`: what else iroh's socket counted over that window, per node;
//! - `nodes_lacking_after_window`: nodes whose table still lacks a member at the window's end;
//! - `death_known_by_all_s`: after one node dies (its runtime dropped: no leave, no QUIC
//!   close), until no other node has it in its table.
//!
//! `cargo run --example bench_membership -- [NODES] [IDLE_SECS] [WAIT_SECS] [SETTLE_SECS]`
//! (`just bench-membership`; `WAIT_SECS`: how long to wait for each convergence, default 300;
//! `SETTLE_SECS`: quiet time before the idle window, default 30). With
//! `RUST_LOG` set, logs go to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh::mesh::{Mesh, MeshConfig, NetConfig, Serving, ServingFn, Ticket};

/// How long to wait for each convergence before giving up on it (default; third argument).
const WAIT: u64 = 300;
/// Nodes started at once.
const BATCH: usize = 8;
/// Quiet time between the newcomer's join and the idle window: the join burst's after-effects
/// (stray gossip connections closed 10 s after they stop being neighbours, newcomers' second
/// roster fetch) are not the steady state. With debug logs at 41 nodes, the strays of the
/// burst were closed over the 15 s after the tables filled (16 per node), then none for 45 s,
/// then 29 in all around the nodes' first refresh. Default of the fourth argument.
const SETTLE: u64 = 30;
/// Nodes from this index on joined a mesh too large for eager tunnels (`EAGER_TUNNEL_PEERS`).
const LATE: usize = 40;

fn config(join: Vec<Ticket>) -> MeshConfig {
    let mut cfg = MeshConfig::new(iroh::SecretKey::generate());
    cfg.net = NetConfig::offline();
    cfg.join = join;
    cfg.bind = Some((std::net::Ipv4Addr::LOCALHOST, 0).into());
    cfg.name = "bench".into();
    cfg
}

async fn start(join: Vec<Ticket>) -> Mesh {
    let nothing: ServingFn = Arc::new(Serving::default);
    Mesh::start(config(join), nothing, axum::Router::new())
        .await
        .expect("mesh starts")
}

/// UDP bytes (received, sent) by `nodes`, as iroh's socket counted them.
fn udp_bytes(nodes: &[Mesh]) -> (u64, u64) {
    nodes.iter().fold((0, 0), |(r, s), m| {
        let socket = &m.endpoint().metrics().socket;
        (r + socket.recv_data_ipv4.get(), s + socket.send_ipv4.get())
    })
}

/// What else iroh's socket counted on `nodes`: connections opened, hole-punch attempts, direct
/// paths added, datagrams received (to tell where idle bytes come from).
fn socket_events(nodes: &[Mesh]) -> [u64; 4] {
    nodes.iter().fold([0; 4], |[c, h, p, d], m| {
        let s = &m.endpoint().metrics().socket;
        [
            c + s.num_conns_opened.get(),
            h + s.holepunch_attempts.get(),
            p + s.transport_ip_paths_added.get(),
            d + s.recv_datagrams.get(),
        ]
    })
}

/// utime + stime of this process, in clock ticks (100 per second).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Seconds until `done` holds (checked every 100 ms), or `None` after [`WAIT`].
async fn until(mut done: impl FnMut() -> bool) -> Option<f64> {
    let start = Instant::now();
    let wait = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(WAIT);
    while start.elapsed() < Duration::from_secs(wait) {
        if done() {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn knows(node: &Mesh, id: &str) -> bool {
    node.peers().iter().any(|p| p.node_id == id)
}

fn main() {
    // Logs when asked for (`RUST_LOG=mesh=debug`), to stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(200)
        .max(3);
    let idle_secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // The node that dies runs on its own runtime, so dropping that runtime stops it dead.
    let victim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t0 = Instant::now();
        let mut nodes: Vec<Mesh> = vec![start(vec![]).await];
        let victim = {
            let ticket = nodes[0].ticket();
            victim_rt
                .spawn(async move { start(vec![ticket]).await })
                .await
                .unwrap()
        };
        let victim_id = victim.node_id().to_string();
        // n - 1 here, the victim, and the newcomer below make n + 1; the newcomer is measured.
        while nodes.len() < n - 1 {
            let batch: Vec<_> = (0..BATCH.min(n - 1 - nodes.len()))
                .map(|i| {
                    let k = nodes.len();
                    let picks = [k - 1, (k * 7 + i) % k, (k * 13 + 3 * i) % k];
                    let tickets = picks.iter().map(|&j| nodes[j].ticket()).collect();
                    tokio::spawn(start(tickets))
                })
                .collect();
            for b in batch {
                nodes.push(b.await.unwrap());
            }
        }
        let formed = t0.elapsed().as_secs_f64();
        eprintln!("{} nodes started in {formed:.1}s", nodes.len() + 1);
        // Everyone knows everyone before the measurements start.
        let total = nodes.len(); // peers each node should have: the others and the victim
        let formed_full = until(|| nodes.iter().all(|m| m.peers().len() >= total)).await;
        let mut sizes: Vec<usize> = nodes.iter().map(|m| m.peers().len()).collect();
        sizes.sort_unstable();
        if formed_full.is_none() {
            let ids: Vec<String> = nodes.iter().map(|m| m.node_id().to_string()).collect();
            for (i, m) in nodes.iter().enumerate().filter(|(_, m)| m.peers().len() < total) {
                let lacks: Vec<usize> = (0..ids.len())
                    .filter(|&j| j != i && !knows(m, &ids[j]))
                    .collect();
                let victim = if knows(m, &victim_id) { "" } else { ", and the victim" };
                eprintln!(
                    "node {i} {} lacks nodes {lacks:?}{victim}: {:?}",
                    m.node_id().fmt_short(),
                    m.table_sizes()
                );
            }
        }
        eprintln!(
            "all tables full after {formed_full:?} more (peers known: min {}, median {}, of {total})",
            sizes[0],
            sizes[sizes.len() / 2]
        );

        let newcomer = start(vec![nodes[nodes.len() / 2].ticket()]).await;
        let new_id = newcomer.node_id().to_string();
        let joined = Instant::now();
        let known_by_all = until(|| nodes.iter().all(|m| knows(m, &new_id))).await;
        eprintln!("newcomer known by all after {known_by_all:?}");
        let knows_all = until(|| newcomer.peers().len() > total)
            .await
            .map(|_| joined.elapsed().as_secs_f64());
        eprintln!(
            "newcomer knows all after {knows_all:?} ({} of {})",
            newcomer.peers().len(),
            total + 1
        );
        nodes.push(newcomer);
        let settle = std::env::args().nth(4).and_then(|a| a.parse().ok());
        tokio::time::sleep(Duration::from_secs(settle.unwrap_or(SETTLE))).await;

        let count = nodes.len() as f64 + 1.0;
        let late_before = udp_bytes(&nodes[LATE.min(nodes.len() - 1)..]);
        let ((r0, s0), c0, w0) = (udp_bytes(&nodes), cpu_ticks(), Instant::now());
        let events0 = socket_events(&nodes);
        tokio::time::sleep(Duration::from_secs(idle_secs)).await;
        let secs = w0.elapsed().as_secs_f64();
        let (r1, s1) = udp_bytes(&nodes);
        let events1 = socket_events(&nodes);
        // Nodes whose table still lacks a member (the victim and the newcomer included) after
        // the settle time and the window: a gap that healed meanwhile is not counted.
        let lacking_after_window = nodes.iter().filter(|m| m.peers().len() < total + 1).count();
        // The victim is not counted in the bytes (its counters are on the other runtime's
        // endpoint, read the same way): divide by the nodes read.
        let read = nodes.len() as f64;
        let recv = (r1 - r0) as f64 / secs / read;
        let sent = (s1 - s0) as f64 / secs / read;
        // Nodes that joined a mesh of more than EAGER_TUNNEL_PEERS (32) opened no tunnels
        // (no requests here): their traffic is gossip alone. The first ones keep the tunnels
        // they opened while the mesh was small.
        let late = &nodes[LATE.min(nodes.len() - 1)..];
        let ((lr0, _), (lr1, _)) = (late_before, udp_bytes(late));
        let late_recv = (lr1 - lr0) as f64 / secs / late.len() as f64;
        let cpu = (cpu_ticks() - c0) as f64 / secs / count;
        let per_node = |i: usize| (events1[i] - events0[i]) as f64 / secs / read;
        let events = [per_node(0), per_node(1), per_node(2), per_node(3)];
        // What the late nodes hold open (mean per node): gossip connections, their own tunnels,
        // nodes with a connection of any kind tracked by the gate.
        let mean_of = |nodes: &[Mesh], what: &str| {
            nodes
                .iter()
                .map(|m| {
                    let sizes = m.table_sizes();
                    sizes.iter().find(|(k, _)| *k == what).map_or(0, |(_, v)| *v)
                })
                .sum::<usize>() as f64
                / nodes.len() as f64
        };
        let mean = |what: &str| mean_of(late, what);
        // The first nodes opened tunnels to every peer while the mesh was small; unused, they
        // close `Timers::tunnel_idle` after the last use (an idle window longer than that
        // shows it).
        let early_tunnels = mean_of(&nodes[..LATE.min(nodes.len())], "tunnel_conns");
        let late_conns = [
            mean("gossip_conns"),
            mean("gossip_neighbours"),
            mean("tunnel_conns"),
            mean("gate_conns"),
        ];
        eprintln!("late nodes hold: gossip connections, neighbours, tunnels, gate-tracked nodes {late_conns:?}");
        eprintln!("early nodes hold {early_tunnels:.1} tunnels");
        eprintln!(
            "idle: {recv:.0} B/s received ({late_recv:.0} by nodes without tunnels), \
             {sent:.0} B/s sent, {cpu:.2}% CPU per node"
        );
        eprintln!(
            "idle, per node per second: {:.4} connections opened, {:.4} hole-punch attempts, \
             {:.4} direct paths added, {:.2} datagrams received",
            events[0], events[1], events[2], events[3]
        );

        drop(victim);
        victim_rt.shutdown_background();
        let died = Instant::now();
        let death = until(|| nodes.iter().all(|m| !knows(m, &victim_id)))
            .await
            .map(|_| died.elapsed().as_secs_f64());
        eprintln!("death known by all after {death:?}");
        println!(
            "{}",
            serde_json::json!({
                "nodes": count as usize,
                "formed_s": formed,
                "tables_full_after_s": formed_full,
                "known_by_all_s": known_by_all,
                "knows_all_s": knows_all,
                "idle_secs": idle_secs,
                "recv_bytes_per_node_s": recv,
                "sent_bytes_per_node_s": sent,
                "recv_bytes_per_late_node_s": late_recv,
                "late_gossip_conns": late_conns[0],
                "late_gossip_neighbours": late_conns[1],
                "late_tunnel_conns": late_conns[2],
                "early_tunnel_conns": early_tunnels,
                "late_gate_tracked_nodes": late_conns[3],
                "cpu_pct_per_node": cpu,
                "conns_opened_per_node_s": events[0],
                "holepunch_attempts_per_node_s": events[1],
                "ip_paths_added_per_node_s": events[2],
                "recv_datagrams_per_node_s": events[3],
                "death_known_by_all_s": death,
                "nodes_lacking_after_window": lacking_after_window,
            })
        );
        for m in &nodes {
            m.abort().await;
        }
    });
}
