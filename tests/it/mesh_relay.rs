//! Relay fallback: with an iroh relay server in the test process and one node that has no
//! direct (IP) transport at all, the two nodes still connect, through the relay, and the peer
//! table says `relay`.

use crate::common;

use std::time::Duration;

use common::*;
use iroh::tls::CaTlsConfig;
use mesh::mesh::Relays;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_direct_addresses_connect_through_the_relay() {
    let (_map, url, _server) = iroh::test_utils::run_relay_server().await.unwrap();
    let with_relay = |join| {
        let mut cfg = mesh_config(join);
        cfg.net.relays = Relays::Custom(vec![url.clone()]);
        // The test relay has a self-signed certificate.
        cfg.net.relay_tls = Some(CaTlsConfig::insecure_skip_verify());
        cfg
    };
    let a = start_mesh(None, with_relay(vec![])).await.unwrap();
    let mesh = a.node.mesh.as_ref().unwrap();
    assert!(
        mesh.wait_online(Duration::from_secs(20)).await,
        "A reaches its relay"
    );
    let ticket = a.ticket();
    assert!(
        ticket.peers[0].relay_urls().next().is_some(),
        "the ticket carries the relay URL"
    );
    let mut b_cfg = with_relay(vec![ticket]);
    b_cfg.relay_only = true;
    let b = start_mesh(None, b_cfg).await.unwrap();
    let b_id = b.node_id();
    let a_id = a.node_id();
    let peers = a
        .wait_peers(Duration::from_secs(30), "B through the relay", |p| {
            p.iter()
                .any(|x| x["node_id"] == b_id.as_str() && x["connection"] == "relay")
        })
        .await;
    assert!(peers[0]["rtt_ms"].as_f64().is_some());
    b.wait_peers(Duration::from_secs(30), "A through the relay", |p| {
        p.iter()
            .any(|x| x["node_id"] == a_id.as_str() && x["connection"] == "relay")
    })
    .await;
    b.node.shutdown().await;
    a.node.shutdown().await;
}
