//! `mesh/rpc/1` without llama.cpp: a worker lending a loopback echo server stands for its RPC
//! server. Pipes carry bytes both ways with half-close; only the member holding the lease may
//! open one, and a node without `--split-worker` refuses everything; the lease of a holder that
//! left passes on at once.

use crate::common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh::mesh::net::rpc;
use mesh::mesh::state::lease::LEASE_IDLE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A TCP echo server on loopback (echoes until EOF, then closes); counts its connections.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, count)
}

fn lender(addr: SocketAddr) -> rpc::LendFn {
    Arc::new(move || Box::pin(async move { Ok(addr) }))
}

fn mesh_of(n: &TestNode) -> &mesh::mesh::Mesh {
    n.node.mesh.as_ref().unwrap()
}

/// Sends `payload` through a pipe listener at `addr`, half-closes, and reads what comes back.
async fn round_trip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.split();
    let send = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let recv = async {
        let _ = r.read_to_end(&mut back).await;
    };
    tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(send, recv) })
        .await
        .expect("the pipe answers within 30 s");
    back
}

async fn two_members() -> (TestNode, TestNode) {
    let worker = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let host = start_mesh(None, mesh_config(vec![worker.ticket()]))
        .await
        .unwrap();
    let id = worker.node_id();
    host.wait_peers(Duration::from_secs(30), "the worker", |p| {
        p.iter().any(|x| x["node_id"] == id.as_str())
    })
    .await;
    (worker, host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipe_carries_bytes_both_ways_to_the_workers_loopback_server_and_passes_half_close() {
    let (worker, host) = two_members().await;
    let (echo, _) = echo_server().await;
    mesh_of(&worker).lend_memory(Some(lender(echo)));
    let endpoint = mesh_of(&host).endpoint().clone();
    let worker_id = mesh_of(&worker).node_id();
    rpc::lend(&endpoint, worker_id, "m").await.unwrap();
    let cancel = CancellationToken::new();
    let addr = rpc::listen(endpoint, worker_id, cancel.clone())
        .await
        .unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(addr, &payload).await, payload);
    // A second connection, as llama.cpp's client makes after a reconnect.
    assert_eq!(round_trip(addr, b"again").await, b"again");
    cancel.cancel();
    worker.node.shutdown().await;
    host.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_opens_pipes_and_a_node_that_does_not_lend_refuses_until_it_leaves() {
    let (worker, host) = two_members().await;
    let other = start_mesh(None, mesh_config(vec![worker.ticket()]))
        .await
        .unwrap();
    let worker_id = mesh_of(&worker).node_id();
    let wid = worker_id.to_string();
    other
        .wait_peers(Duration::from_secs(30), "the worker", |p| {
            p.iter().any(|x| x["node_id"] == wid.as_str())
        })
        .await;
    let (echo, connections) = echo_server().await;

    // Without --split-worker, every request is refused.
    let host_ep = mesh_of(&host).endpoint().clone();
    let e = rpc::lend(&host_ep, worker_id, "m").await.unwrap_err();
    assert!(e.contains("does not lend"), "{e}");

    mesh_of(&worker).lend_memory(Some(lender(echo)));
    rpc::lend(&host_ep, worker_id, "m").await.unwrap();

    // Another member: its lend is refused while the host holds the lease, and its pipes too.
    let other_ep = mesh_of(&other).endpoint().clone();
    let e = rpc::lend(&other_ep, worker_id, "m").await.unwrap_err();
    assert!(e.contains("busy"), "{e}");
    let cancel = CancellationToken::new();
    let sneaky = rpc::listen(other_ep.clone(), worker_id, cancel.clone())
        .await
        .unwrap();
    assert!(round_trip(sneaky, b"let me in").await.is_empty());
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no pipe reached the server"
    );

    // The holder's pipe works.
    let addr = rpc::listen(host_ep, worker_id, cancel.clone())
        .await
        .unwrap();
    assert_eq!(round_trip(addr, b"hello").await, b"hello");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    cancel.cancel();

    // The holder leaves the mesh: once the worker's membership knows, the lease passes on
    // without waiting out LEASE_IDLE (a split re-planned after its host died starts at once).
    host.node.shutdown().await;
    let left = std::time::Instant::now();
    loop {
        match rpc::lend(&other_ep, worker_id, "m").await {
            Ok(()) => break,
            Err(e) => assert!(e.contains("busy"), "{e}"),
        }
        assert!(
            left.elapsed() < LEASE_IDLE / 2,
            "the lease of a host that left stayed busy for {:?}",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [worker, other] {
        n.node.shutdown().await;
    }
}
