//! Building the node's iroh endpoint: identity, relays, bind address, TLS roots, and the gate's
//! hooks. Start-up waits for a configured relay at most [`RELAY_ONLINE_TIMEOUT`].

use std::time::Duration;

use iroh::address_lookup::memory::MemoryLookup;
use iroh::endpoint::presets;
use iroh::{Endpoint, RelayMode};

use super::gate::GateHooks;
use crate::mesh::{MeshConfig, MeshError};

/// How long `online()` may take when a relay is configured.
pub const RELAY_ONLINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the endpoint `cfg` describes.
pub async fn bind(
    cfg: &MeshConfig,
    hooks: GateHooks,
    lookup: MemoryLookup,
) -> Result<Endpoint, MeshError> {
    let bind_err = |e: &dyn std::fmt::Display| MeshError::Bind(e.to_string());
    let relay_mode = match &cfg.relay {
        Some(url) => RelayMode::custom([url.clone()]),
        None => RelayMode::Disabled,
    };
    let mut builder = Endpoint::builder(presets::Minimal)
        .secret_key(cfg.secret_key.clone())
        .relay_mode(relay_mode)
        .hooks(hooks)
        .address_lookup(lookup);
    if let Some(tls) = &cfg.relay_tls {
        builder = builder.ca_tls_config(tls.clone());
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
    if cfg.relay.is_some()
        && tokio::time::timeout(RELAY_ONLINE_TIMEOUT, endpoint.online())
            .await
            .is_err()
    {
        tracing::warn!(
            "relay not reachable after {RELAY_ONLINE_TIMEOUT:?}; going on with direct addresses"
        );
    }
    Ok(endpoint)
}
