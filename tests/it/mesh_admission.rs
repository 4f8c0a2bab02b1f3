//! Only nodes holding the mesh secret get in: a wrong or missing secret is refused before any
//! gossip or HTTP is exchanged, a node that skips admission is closed out, and garbage tickets
//! are clear errors.

use crate::common;

use std::time::Duration;

use common::*;
use iroh::endpoint::{presets, ConnectError, ConnectingError, ConnectionError};
use mesh::mesh::net::gate::NOT_ADMITTED;
use mesh::mesh::proto::ticket::{MeshSecret, Ticket, TicketError};
use mesh::mesh::MeshError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_secret_is_refused_and_learns_nothing() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let good = a.ticket();
    assert!(good.secret.is_some(), "meshes are private by default");

    let mut wrong = good.clone();
    wrong.secret = Some(MeshSecret::random());
    let mut missing = good.clone();
    missing.secret = None;
    for bad in [wrong, missing] {
        let err = start_mesh(None, mesh_config(vec![bad]))
            .await
            .err()
            .expect("a node with the wrong secret must not start");
        let msg = format!("{err:#}");
        assert!(msg.contains("mesh secret does not match"), "{msg}");
        // A refusal by the peer, not a failure to reach it.
        match err.chain().find_map(|e| e.downcast_ref::<MeshError>()) {
            Some(MeshError::Refused(e)) => assert!(e.is_refusal(), "{e:?}"),
            other => panic!("not a refusal: {other:?} ({msg})"),
        }
    }
    assert!(a.peers().await.is_empty());

    // The right secret still works afterwards.
    let b = start_mesh(None, mesh_config(vec![good])).await.unwrap();
    let b_id = b.node_id();
    a.wait_peers(Duration::from_secs(20), "B", |p| {
        p.iter().any(|x| x["node_id"] == b_id.as_str())
    })
    .await;
    b.node.shutdown().await;
    a.node.shutdown().await;
}

#[tokio::test]
async fn a_node_that_skips_admission_is_closed_out() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let addr = a.ticket().peers[0].clone();
    let outsider = iroh::Endpoint::builder(presets::Minimal)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap();
    for alpn in [
        &b"mesh/http/1"[..],
        iroh_gossip::ALPN,
        mesh::mesh::net::msg::ALPN,
        mesh::mesh::net::tcp_share::ALPN,
    ] {
        // The gate closes the connection right after the TLS handshake: the close may surface
        // from `connect` itself or from the connection it returned. Either way it must be the
        // gate's own 403, not some network failure.
        let closed = async {
            match outsider.connect(addr.clone(), alpn).await {
                Ok(conn) => conn.closed().await,
                Err(ConnectError::Connection { source, .. })
                | Err(ConnectError::Connecting {
                    source: ConnectingError::ConnectionError { source, .. },
                    ..
                }) => source,
                Err(other) => panic!("connect failed before the gate answered: {other:#}"),
            }
        };
        let closed = tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the connection is closed, not left open");
        match closed {
            ConnectionError::ApplicationClosed(c) => assert_eq!(
                u64::from(c.error_code),
                u64::from(NOT_ADMITTED),
                "ALPN {}: {c:?}",
                String::from_utf8_lossy(alpn)
            ),
            other => panic!(
                "ALPN {}: closed by {other:?}, not by the gate",
                String::from_utf8_lossy(alpn)
            ),
        }
    }
    outsider.close().await;
    a.node.shutdown().await;
}

#[test]
fn garbage_tickets_are_typed_errors() {
    assert_eq!(Ticket::decode("hello").unwrap_err(), TicketError::Prefix);
    assert_eq!(
        Ticket::decode("mesh1$$$").unwrap_err(),
        TicketError::Encoding
    );
    // Valid base32 of a version-1 byte and nothing else; then of a version-0 byte.
    assert_eq!(Ticket::decode("mesh1ae").unwrap_err(), TicketError::Decode);
    assert_eq!(
        Ticket::decode("mesh1aaaa").unwrap_err(),
        TicketError::Version(0)
    );
}

#[test]
fn serve_with_a_garbage_ticket_exits_with_a_clear_error() {
    let home = temp_home();
    let out = mesh_command(home.path())
        .args(["serve", "--client", "--ephemeral", "--join", "garbage"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a mesh ticket"), "{err}");
}
