//! Ctrl-C (or, on Unix, SIGTERM as sent by service managers), listened for from the moment
//! [`CtrlC::listen`] is called.

use std::future::Future;
use std::pin::Pin;

/// tokio installs its SIGINT handler on the first poll of `ctrl_c()`, and a SIGINT arriving
/// before that (right after a banner that says "Ctrl-C to stop") would kill the process without
/// a clean exit (no leave message, no offer deletion): `listen` polls once at creation.
pub struct CtrlC {
    pending: Option<Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>>,
}

impl CtrlC {
    pub fn listen() -> Self {
        use futures::FutureExt;
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut fut = Box::pin(async move {
            #[cfg(unix)]
            if let Some(mut terminate) = terminate {
                return tokio::select! {
                    r = interrupt => r,
                    _ = terminate.recv() => Ok(()),
                };
            }
            interrupt.await
        });
        // The first poll installs the SIGINT handler (the SIGTERM one already is).
        let early = (&mut fut).now_or_never();
        Self {
            pending: early.is_none().then_some(fut),
        }
    }

    /// Waits for Ctrl-C (at once if it already came). Cancel-safe.
    pub async fn wait(&mut self) -> std::io::Result<()> {
        if let Some(fut) = self.pending.as_mut() {
            fut.await?;
            self.pending = None;
        }
        Ok(())
    }
}
