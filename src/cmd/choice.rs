//! What `mesh --auto` (and its dry run) may serve on this machine: the catalog rows with their
//! fit and expected speed, the candidates `discovery::demand` chooses from, and, once joined,
//! the room a split could draw on (this node and the members that lend memory).

use std::time::Duration;

use crate::catalog::listing::{ModelRow, Sizing};
use crate::catalog::speed::{self, fast_enough, Machine};
use crate::catalog::split::Member;
use crate::catalog::{self, ResolveOptions};
use crate::discovery::demand::{Candidate, SplitRoom};
use crate::discovery::offer::OfferContent;
use crate::mesh::Mesh;
use crate::node::split::members::lenders;

/// Longest a node that joined a mesh wanting a model too big for it waits for the first roster
/// (which tells of the members that lend memory) before choosing what to serve.
pub const ROSTER_WAIT: Duration = Duration::from_secs(5);

/// The catalog rows with their fit (at the context and sequences `sizing` asks for) and
/// expected speed on this machine, and the machine's figures (the memory bandwidth is measured
/// once, then read from `~/.mesh/machine.json`).
pub(super) fn catalog_rows(
    hub: &ResolveOptions,
    home: &std::path::Path,
    sizing: Sizing,
) -> anyhow::Result<(Vec<ModelRow>, Machine)> {
    let catalog = hub.load_catalog()?;
    let machine = catalog::bandwidth::machine(home);
    let available = catalog::available_memory();
    let rows = catalog::listing::rows_on(&catalog.models, hub, available, Some(&machine), sizing);
    Ok((rows, machine))
}

/// Catalog models with whether each can be served here: it fits in memory and is expected to
/// decode at `min_speed` tok/s or more. Embedding models are no candidates: they do not chat.
pub(super) fn candidates(rows: &[ModelRow], min_speed: f64) -> Vec<Candidate> {
    rows.iter()
        .filter(|r| !r.entry.embedding)
        .map(|r| Candidate {
            name: r.entry.name.clone(),
            size: r.entry.size,
            fits: r.fits && r.speed.is_none_or(|s| fast_enough(&s, min_speed)),
            too_big: !r.fits,
            need_bytes: r.need_bytes,
            layers: r.entry.kv.as_ref().map(|k| k.layers),
            bytes_per_token: speed::bytes_per_token(&r.entry),
        })
        .collect()
}

/// What a split could draw on in `mesh`, when its `offer` wants a catalog model too big for
/// this node alone (`None` otherwise): this node on `machine`, and the members that lend memory
/// as the first roster tells of them (waited for up to [`ROSTER_WAIT`]).
pub(super) async fn split_room(
    mesh: &Mesh,
    offer: &OfferContent,
    candidates: &[Candidate],
    machine: Machine,
    min_tokens_per_sec: f64,
) -> Option<SplitRoom> {
    let too_big = |w: &String| candidates.iter().any(|c| &c.name == w && c.too_big);
    if !offer.wanted.iter().any(too_big) {
        return None;
    }
    if !mesh.first_roster(ROSTER_WAIT).await {
        eprintln!(
            "warning: no member's roster within {}s: choosing without knowing who lends memory",
            ROSTER_WAIT.as_secs()
        );
    }
    let host = Member {
        id: mesh.node_id().to_string(),
        free_bytes: catalog::available_memory(),
        tokens_per_second: 0.0,
        memory_bandwidth: machine.memory_bandwidth.max(0.0) as u64,
        rtt: None,
    };
    Some(SplitRoom {
        host,
        machine,
        lenders: lenders(&mesh.peers(), |_| false),
        min_tokens_per_sec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_models_are_never_candidates_to_serve_chat() {
        let catalog = crate::catalog::Catalog::embedded().unwrap();
        let rows: Vec<ModelRow> = catalog
            .models
            .iter()
            .map(|entry| ModelRow {
                entry: entry.clone(),
                installed: true,
                fits: true,
                ctx: 4096,
                need_bytes: entry.size,
                speed: None,
            })
            .collect();
        let names: Vec<String> = candidates(&rows, 0.0).into_iter().map(|c| c.name).collect();
        assert!(names.iter().any(|n| n == "SmolLM2-135M-Instruct-Q4_1"));
        for e in catalog.models.iter().filter(|e| e.embedding) {
            assert!(!names.contains(&e.name), "{} is a candidate", e.name);
        }
    }
}
