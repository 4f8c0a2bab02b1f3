//! Building iroh endpoints: the node's (identity, bind address, the gate's hooks) and the
//! throwaway ones discovery's probes and `mesh network` use, all from one [`NetConfig`]: relays
//! (each also does QUIC address discovery), their TLS roots, port mapping.
//!
//! Start-up never waits for a relay: the endpoint is returned at once and its relay URL and
//! public address appear in [`Endpoint::addr`] when known (tickets, offers and announcements
//! read it each time). With relays configured but unreachable one warning is logged after
//! [`RELAY_WARN_AFTER`].

use std::time::Duration;

use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::{presets, Builder, PortmapperConfig, QuicTransportConfig};
use iroh::tls::CaTlsConfig;
use iroh::{Endpoint, SecretKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::gate::GateHooks;
use super::lan;
use crate::mesh::{MeshConfig, MeshError, NetConfig};

/// How long after start an unreachable relay list is worth one warning.
pub const RELAY_WARN_AFTER: Duration = Duration::from_secs(5);
/// QUIC keep-alive on every connection while it is otherwise quiet (iroh's default is 5 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// A connection that hears nothing for this long closes with a timeout (iroh's default is 30 s;
/// the shorter of both sides' values applies). Liveness rests on it (`state::liveness`): a
/// killed node's connections time out this long after its last keep-alive, so the nodes that
/// route to it drop it then, and its gossip neighbours start the `Down` report. Three
/// keep-alives may be lost before a live peer is taken for dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// An endpoint builder with `net`'s relays, TLS roots and port mapping. No DNS address lookup
/// (pkarr): peers are dialled with the addresses tickets, offers and gossip carry.
pub fn builder(net: &NetConfig, secret_key: SecretKey) -> Builder {
    let portmap = if net.portmap {
        PortmapperConfig::default()
    } else {
        PortmapperConfig::Disabled
    };
    let transport = QuicTransportConfig::builder()
        .keep_alive_interval(KEEP_ALIVE)
        .max_idle_timeout(IDLE_TIMEOUT.try_into().ok())
        .build();
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(secret_key)
        .relay_mode(net.relays.mode())
        .portmapper_config(portmap)
        .transport_config(transport);
    if let Some(tls) = &net.relay_tls {
        builder = builder.ca_tls_config(tls.clone());
    }
    builder
}

/// TLS roots for relays: the built-in web roots plus the certificates in the PEM file `path`
/// (a private relay's self-signed certificate, or its CA).
pub fn relay_ca(path: &std::path::Path) -> Result<CaTlsConfig, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(CaTlsConfig::embedded().with_extra_roots(certs))
}

/// Binds the node's endpoint `cfg` describes (advertised on the LAN by mDNS with `--lan`).
pub async fn bind(
    cfg: &MeshConfig,
    hooks: GateHooks,
    lookup: MemoryLookup,
) -> Result<Endpoint, MeshError> {
    let bind_err = |e: &dyn std::fmt::Display| MeshError::Bind(e.to_string());
    let mut builder = builder(&cfg.net, cfg.secret_key.clone())
        .hooks(hooks)
        .address_lookup(lookup);
    if cfg.net.mdns {
        // Advertise this node on the LAN and resolve other members there (`--lan`).
        builder = builder.address_lookup(lan::lookup(true));
    }
    if cfg.relay_only {
        builder = builder.clear_ip_transports();
    } else if let Some(addr) = cfg.bind {
        builder = builder
            .clear_ip_transports()
            .bind_addr(addr)
            .map_err(|e| bind_err(&e))?;
    }
    let endpoint = builder.bind().await.map_err(|e| bind_err(&e))?;
    if !cfg.net.relays.urls().is_empty() {
        tokio::spawn(warn_if_offline(endpoint.clone()));
    }
    Ok(endpoint)
}

/// Logs one warning when no relay has answered [`RELAY_WARN_AFTER`] after start.
async fn warn_if_offline(endpoint: Endpoint) {
    let online = tokio::time::timeout(RELAY_WARN_AFTER, endpoint.online()).await;
    if online.is_err() && !endpoint.is_closed() {
        tracing::warn!(
            "no iroh relay reachable after {RELAY_WARN_AFTER:?}: only direct addresses work \
             (offline? use --no-iroh-relay or MESH_OFFLINE=1 to skip relays)"
        );
    }
}
