//! Measures the round trip to the nodes behind the best offers, in parallel and in bounded
//! time, over `mesh/ping/1` from a throwaway iroh endpoint (this node is in no mesh yet). Only
//! the addresses a public offer may name are dialled (no private ranges unless
//! `--advertise-lan`, no relay outside this node's list unless allowed).

use std::collections::HashMap;
use std::time::Duration;

use iroh::{EndpointAddr, EndpointId, SecretKey};

use super::score::Probe;
use crate::mesh::net::{endpoint as mesh_endpoint, ping};
use crate::mesh::NetConfig;

/// The most a whole round of probes takes; a node that has not answered by then is unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Pings every address at once, through `net`'s relays as well as direct addresses.
pub async fn probe_all(addrs: Vec<EndpointAddr>, net: &NetConfig) -> HashMap<EndpointId, Probe> {
    if addrs.is_empty() {
        return HashMap::new();
    }
    let policy = net.dial_policy(true);
    let addrs: Vec<EndpointAddr> = addrs.iter().map(|a| policy.tidy(a)).collect();
    let endpoint = match mesh_endpoint::builder(net, SecretKey::generate())
        .bind()
        .await
    {
        Ok(ep) => ep,
        Err(e) => {
            tracing::warn!("cannot start an endpoint to probe offers: {e}");
            return HashMap::new();
        }
    };
    let pings = addrs.into_iter().map(|addr| {
        let endpoint = endpoint.clone();
        async move {
            let id = addr.id;
            let result = tokio::time::timeout(PROBE_TIMEOUT, ping::ping(&endpoint, addr)).await;
            let probe = match result {
                Ok(Ok(rtt)) => Probe::Rtt(rtt),
                Ok(Err(e)) => {
                    tracing::debug!(node = %id.fmt_short(), "probe failed: {e}");
                    Probe::Unreachable
                }
                Err(_) => Probe::Unreachable,
            };
            (id, probe)
        }
    });
    let results = futures::future::join_all(pings).await.into_iter().collect();
    endpoint.close().await;
    results
}
