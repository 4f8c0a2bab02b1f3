//! The process's rustls crypto provider.

/// Installs ring as the process's rustls crypto provider. iroh's dependencies enable reqwest's
/// TLS without choosing a provider, and reqwest panics when building a client without one.
/// Idempotent; called by [`super::http::client`] and the Nostr WebSocket client.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
