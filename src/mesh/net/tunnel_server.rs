//! The serving side of the HTTP tunnel (ALPN `mesh/http/1`): runs the node's own axum router
//! (local models only, so requests never loop) on each accepted stream with hyper's
//! `serve_connection`.

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};

/// The serving side, registered on iroh's router.
#[derive(Debug, Clone)]
pub struct TunnelServer {
    pub app: axum::Router,
}

impl ProtocolHandler for TunnelServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id().fmt_short();
        while let Ok((send, recv)) = conn.accept_bi().await {
            let service = TowerToHyperService::new(self.app.clone());
            tokio::spawn(async move {
                let io = TokioIo::new(tokio::io::join(recv, send));
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "tunnelled request ended early: {e}");
                }
            });
        }
        Ok(())
    }
}
