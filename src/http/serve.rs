//! Binding a listener and serving an axum router on it until a cancellation token fires, with
//! graceful shutdown (connections in flight may finish).

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a port could not be bound, naming the flag that picks another.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (is another mesh running? pick another port with {flag})")]
pub struct BindError {
    pub addr: SocketAddr,
    pub flag: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds `host:port`; `flag` names the option that changes the port (for the error).
pub async fn bind(host: IpAddr, port: u16, flag: &'static str) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, flag, source })
}

/// Serves `app` on `listener` until `cancel`, then drains. Handlers and guards see the peer's
/// address as `ConnectInfo<SocketAddr>`.
pub fn spawn(
    listener: TcpListener,
    app: axum::Router,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
        if let Err(e) = served {
            tracing::error!("HTTP server failed: {e}");
        }
    })
}
