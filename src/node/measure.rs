//! What serving teaches the node about its machine: each engine's best single-stream decode
//! rate (`engine::Stats::single_stream`), kept per device in `~/.mesh/machine.json`
//! (`catalog::bandwidth::record_decode`), so that the speed estimate (`mesh models --fits`,
//! what `mesh --auto` serves) rests on what llama.cpp really reached here — the only measured
//! figure there is for a GPU. Only a model whose layers all run on one device and whose bytes
//! per token are known (a dense model) is recorded: a split's or a partly offloaded model's rate
//! says nothing of one device.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::catalog::speed::Device;
use crate::catalog::{bandwidth, gguf};
use crate::engine::{Engine, Placement};

/// Records `engine`'s single-stream decode rate under `home` each time it improves, until
/// `cancel` or the engine's end.
pub fn record_decodes(engine: &Engine, home: PathBuf, cancel: CancellationToken) {
    let device = match engine.placement() {
        Placement::Cpu => Device::Cpu,
        Placement::Gpu => Device::Gpu,
        Placement::Mixed => return,
    };
    let (path, model) = (engine.info().path.clone(), engine.info().name.clone());
    let mut rates = engine.single_stream();
    tokio::spawn(async move {
        let bytes =
            match tokio::task::spawn_blocking(move || gguf::dense_bytes_per_token(&path)).await {
                Ok(Ok(Some(bytes))) => bytes,
                Ok(Ok(None)) => return, // a mixture of experts
                Ok(Err(e)) => {
                    tracing::debug!("no decode speed kept for {model}: {e}");
                    return;
                }
                Err(_) => return,
            };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = rates.changed() => if changed.is_err() { return },
            }
            let Some(tokens_per_sec) = *rates.borrow_and_update() else {
                continue;
            };
            let (home, name) = (home.clone(), model.clone());
            let kept = tokio::task::spawn_blocking(move || {
                bandwidth::record_decode(&home, device, &name, bytes, tokens_per_sec)
            })
            .await;
            match kept {
                Ok(Ok(true)) => tracing::info!(
                    model,
                    tokens_per_sec,
                    "single-stream decode speed kept for the speed estimate"
                ),
                Ok(Err(e)) => tracing::debug!("cannot keep the decode speed: {e}"),
                _ => {}
            }
        }
    });
}
