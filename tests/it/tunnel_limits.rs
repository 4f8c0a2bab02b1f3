//! The tunnel server against a hostile member (issue 12 item 3), with real endpoints on
//! loopback: the attacker is an admitted node that writes raw HTTP on `mesh/http/1` streams.
//! - 100 stalled 4 MiB uploads grow the serving `mesh` process's RSS by less than 64 MiB, and
//!   every one of those streams is ended by the server (refused, or cut at the body deadline);
//! - a peer over its stream cap is refused while another peer and local users are served;
//! - with a peer flooding a generator's queue, a local request gets the next slot but one;
//! - a peer that stops reading its answers loses their slots after the write deadline.

use crate::common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use iroh::endpoint::{Connection, ReadError, ReadToEndError, RecvStream, SendStream};
use iroh::EndpointId;
use mesh::http::fake::Script;
use mesh::mesh::net::tunnel_server::{
    BODY_READ_DEADLINE, HEADER_READ_TIMEOUT, MAX_STREAMS_PER_PEER, STREAM_REFUSED,
    WRITE_STALL_TIMEOUT,
};
use tokio::sync::mpsc;

const JOIN_WITHIN: Duration = Duration::from_secs(30);
const MIB: usize = 1024 * 1024;

/// The attacker's connection to `target` on the tunnel's ALPN (admission done by the gate).
async fn tunnel(attacker: &TestNode, target: &str) -> Connection {
    let id: EndpointId = target.parse().expect("node id");
    attacker
        .node
        .mesh
        .as_ref()
        .expect("mesh node")
        .tunnel()
        .connection(id)
        .await
        .expect("attacker connects")
}

/// A request head for `path` announcing a body of `len` bytes.
fn head(method: &str, path: &str, len: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: mesh\r\ncontent-type: application/json\r\n\
         content-length: {len}\r\n\r\n"
    )
}

/// Opens a stream and writes `head` and `body`, giving up on writes the server refuses.
async fn send_part(conn: &Connection, head: String, body: Bytes) -> (SendStream, RecvStream) {
    let (mut send, recv) = conn.open_bi().await.expect("open stream");
    let write = async {
        send.write_all(head.as_bytes()).await?;
        send.write_chunk(body).await
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), write).await;
    (send, recv)
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_stalled_4_mib_uploads_are_bounded_in_memory_and_cut_off_by_the_deadline() {
    let attacker = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["serve", "--model"])
        .arg(model_path())
        .args(["--model-name", "target", "--port", "0", "--api-port", "0"])
        .args(["--ctx", "256", "--threads", "1", "--parallel", "1"])
        .args(["--ephemeral", "--mesh-bind", "127.0.0.1:0"])
        .args(["--join", &attacker.ticket().encode()]);
    let target = MeshProcess::spawn(cmd);
    let peers = attacker
        .wait_peers(JOIN_WITHIN, "the target to join", |p| {
            p.iter().any(|x| x["models"][0]["name"] == "target")
        })
        .await;
    let conn = tunnel(&attacker, peers[0]["node_id"].as_str().unwrap()).await;
    let pid = target.pid();
    let baseline = rss(pid);

    // Sample the target's RSS while the attack runs.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss(pid));
            tokio::select! {
                _ = &mut stopped => return peak,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });

    // 100 uploads announcing 4 MiB, each sending 3 MiB of it and then nothing more.
    let part = Bytes::from(vec![b' '; 3 * MIB]);
    let started = Instant::now();
    let uploads: Vec<_> = (0..100)
        .map(|_| {
            let (conn, part) = (conn.clone(), part.clone());
            tokio::spawn(async move {
                let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
                let head = head("POST", "/v1/chat/completions", 4 * MIB);
                // Send what the server takes of it, then stall with the stream open.
                let stall = async {
                    if send.write_all(head.as_bytes()).await.is_ok() {
                        let _ = send.write_chunk(part).await;
                    }
                    std::future::pending::<()>().await
                };
                tokio::select! {
                    ended = recv.read_to_end(MIB) => ended
                        .map(|r| String::from_utf8_lossy(&r).lines().next().map(str::to_owned)),
                    () = stall => unreachable!(),
                }
            })
        })
        .collect();
    let limit = HEADER_READ_TIMEOUT + BODY_READ_DEADLINE + Duration::from_secs(30);
    let mut ended = 0;
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for upload in uploads {
        let left = limit.saturating_sub(started.elapsed());
        if let Ok(outcome) = tokio::time::timeout(left, upload).await {
            ended += 1;
            let what = match outcome.expect("upload task") {
                Ok(status) => status.unwrap_or_default(),
                Err(e) => format!("{e}"),
            };
            *answers.entry(what).or_default() += 1;
        }
    }
    let _ = stop.send(());
    let peak = sampler.await.unwrap();
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "target RSS {} MiB before, {} MiB at peak (+{} MiB); {ended}/100 streams ended within \
         {:?}: {answers:?}",
        baseline / MIB as u64,
        peak / MIB as u64,
        growth / MIB as u64,
        started.elapsed()
    );
    assert!(
        growth < 64 * MIB as u64,
        "RSS grew by {} MiB",
        growth / MIB as u64
    );
    assert_eq!(ended, 100, "streams left hanging: {answers:?}");
    drop(target);
}

/// True when the server reset the stream as over the peer's stream cap.
fn refused(outcome: &Result<Vec<u8>, ReadToEndError>) -> bool {
    matches!(outcome, Err(ReadToEndError::Read(ReadError::Reset(code)))
        if code.into_inner() == u64::from(STREAM_REFUSED))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_over_its_stream_cap_is_refused_while_another_peer_and_local_users_are_served() {
    let b = start_mesh_fake(fake(), mesh_config(vec![])).await.unwrap();
    let attacker = start_mesh(None, mesh_config(vec![b.ticket()]))
        .await
        .unwrap();
    let honest = start_mesh(None, mesh_config(vec![b.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    for node in [&attacker, &honest] {
        node.wait_peers(JOIN_WITHIN, "B serving the model", |p| {
            serves(p, &b_id, MODEL)
        })
        .await;
    }
    let conn = tunnel(&attacker, &b_id).await;

    // Hold the cap: heads announcing 100 bytes, 10 sent (until the body deadline).
    let mut held = Vec::new();
    for _ in 0..MAX_STREAMS_PER_PEER {
        let h = head("POST", "/v1/chat/completions", 100);
        held.push(send_part(&conn, h, Bytes::from_static(b"{\"model\":")).await);
    }
    let (_send, mut recv) = send_part(&conn, head("GET", "/v1/models", 0), Bytes::new()).await;
    let over = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(MIB))
        .await
        .expect("the stream over the cap is ended at once");
    assert!(refused(&over), "over the cap: {over:?}");

    // Meanwhile, another peer's requests and B's own users are served.
    let (status, v) = honest
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200, "another peer: {v}");
    let (status, v) = b
        .post_json("/v1/chat/completions", &chat(MODEL, false))
        .await;
    assert_eq!(status, 200, "a local user: {v}");

    // A held stream given up makes room for the next.
    let (mut send, mut recv) = held.remove(0);
    let _ = send.reset(0u8.into());
    let _ = recv.stop(0u8.into());
    let served = eventually(Duration::from_secs(10), "a stream within the cap", || {
        let conn = conn.clone();
        async move {
            let (_send, mut recv) =
                send_part(&conn, head("GET", "/v1/models", 0), Bytes::new()).await;
            let answer = recv.read_to_end(MIB).await.ok()?;
            Some(String::from_utf8_lossy(&answer).into_owned())
        }
    })
    .await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(held);
}

/// B serving `g` (a fake generator) and an attacker member with its tunnel connection to B, once
/// the attacker sees B's model; B's slots too.
async fn serving_and_attacker(
    g: std::sync::Arc<mesh::http::fake::Scripted>,
) -> (TestNode, TestNode, mesh::http::slots::Slots, Connection) {
    let b = start_mesh_fake(g, mesh_config(vec![])).await.unwrap();
    let attacker = start_mesh(None, mesh_config(vec![b.ticket()]))
        .await
        .unwrap();
    let b_id = b.node_id();
    attacker
        .wait_peers(JOIN_WITHIN, "B serving the model", |p| {
            serves(p, &b_id, MODEL)
        })
        .await;
    let slots = b.node.local.slots().expect("B serves").clone();
    let conn = tunnel(&attacker, &b_id).await;
    (b, attacker, slots, conn)
}

/// A streaming chat request sent raw on a new tunnel stream; its index goes to `heads` when
/// its response head arrives (it has a slot), and the stream is then held until the end.
fn flood_request(conn: &Connection, i: usize, heads: mpsc::UnboundedSender<(usize, String)>) {
    let conn = conn.clone();
    tokio::spawn(async move {
        let body = serde_json::to_vec(&chat(MODEL, true)).unwrap();
        let (_send, mut recv) = send_part(
            &conn,
            head("POST", "/v1/chat/completions", body.len()),
            body.into(),
        )
        .await;
        let mut first = vec![0u8; 64];
        let n = recv.read(&mut first).await.ok().flatten().unwrap_or(0);
        let _ = heads.send((i, String::from_utf8_lossy(&first[..n]).into_owned()));
        let _ = recv.read_to_end(MIB).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_peer_flooding_the_queue_a_local_request_gets_the_next_slot_but_one() {
    // Two slots, four waiters per origin; every request stalls until finished by the test.
    let g = fake_with(MODEL, Script::Stall);
    let (b, _attacker, slots, conn) = serving_and_attacker(g.clone()).await;
    let (heads_tx, mut heads) = mpsc::unbounded_channel();

    // The flood: two requests take both slots, four wait, a seventh is refused.
    for i in 0..6 {
        flood_request(&conn, i, heads_tx.clone());
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(heads.recv().await.unwrap());
    }
    eventually(
        Duration::from_secs(10),
        "four flood requests waiting",
        || std::future::ready(slots.waiting() == 4),
    )
    .await;
    flood_request(&conn, 6, heads_tx.clone());
    let (i, refused) = heads.recv().await.unwrap();
    assert_eq!(i, 6);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    // A local request arrives behind them.
    let local = {
        let (http, base) = (b.http.clone(), b.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/chat/completions"))
                .json(&chat(MODEL, true))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    eventually(Duration::from_secs(10), "the local request waiting", || {
        std::future::ready(slots.waiting() == 5)
    })
    .await;

    // First freed slot: the flood's turn. Second: the local request's, ahead of three more.
    assert!(g.finish_oldest());
    got.push(heads.recv().await.unwrap());
    assert!(!local.is_finished(), "the flood had its turn first");
    assert!(g.finish_oldest());
    let status = tokio::time::timeout(Duration::from_secs(10), local)
        .await
        .expect("the local request gets the next slot")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    // The local answer is instant: its freed slot may already have gone to the next flood
    // request (then one more head arrived), but to no other.
    let mut more_heads = std::iter::from_fn(|| heads.try_recv().ok()).count();
    // That request may have left the queue with its head still on the way back.
    if slots.waiting() + more_heads < 3
        && tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .is_ok_and(|h| h.is_some())
    {
        more_heads += 1;
    }
    assert_eq!(
        slots.waiting() + more_heads,
        3,
        "three flood requests still wait, or one of them took the local request's slot"
    );
    assert!(more_heads <= 1, "{more_heads} flood requests got a slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_stops_reading_its_answers_loses_their_slots_after_the_write_deadline() {
    // Answers of 4 MiB: more than QUIC's 1.25 MB stream window, so an unread one blocks.
    let piece = "a".repeat(MIB);
    let g = fake_with(MODEL, Script::Text(vec![piece; 4]));
    let (b, _attacker, slots, conn) = serving_and_attacker(g).await;

    // Both of B's slots (the fake's two), taken by streaming requests never read.
    const SLOTS: u32 = 2;
    let body = serde_json::to_vec(&chat(MODEL, true)).unwrap();
    let mut unread = Vec::new();
    for _ in 0..SLOTS {
        let h = head("POST", "/v1/chat/completions", body.len());
        unread.push(send_part(&conn, h, body.clone().into()).await);
    }
    eventually(
        Duration::from_secs(10),
        "the unread answers in both slots",
        || std::future::ready(slots.busy() == SLOTS),
    )
    .await;

    // A local user waits for a slot; it gets one once the write deadline ends an unread answer.
    let asked = Instant::now();
    let ask = chat(MODEL, false);
    let local = b.post_json("/v1/chat/completions", &ask);
    let (status, v) = tokio::time::timeout(WRITE_STALL_TIMEOUT + Duration::from_secs(40), local)
        .await
        .expect("a slot held by an unread answer is freed after the write deadline");
    assert_eq!(status, 200, "{:.200}", v.to_string());
    eprintln!(
        "local request served after {:.1} s",
        asked.elapsed().as_secs_f64()
    );
    drop(unread);
}
