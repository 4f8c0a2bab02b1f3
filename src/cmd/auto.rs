//! `mesh --auto` (= `mesh serve --auto`): discover → score → probe → join the best public mesh,
//! or start a new public mesh and publish it when none fits. A serving node then picks what to
//! serve from the mesh's demand and its memory (`discovery::demand`), downloads it and loads it;
//! the OpenAI API answers with the mesh's models from the moment the mesh is joined.
//!
//! When the mesh empties, a client looks for another mesh; a serving node stays and publishes
//! its (now own) mesh so that others can find it.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::args::ServeArgs;
use super::serve;
use crate::catalog::{self, ResolveOptions};
use crate::discovery::browse::{self, Browse, BrowseOptions};
use crate::discovery::demand::{self, Candidate, Choice};
use crate::discovery::nostr_io::relay_list;
use crate::discovery::offer::OfferContent;
use crate::discovery::score::{self, Preferences};
use crate::discovery::{load_last_mesh, save_last_mesh};
use crate::mesh::MeshError;
use crate::node::{load_engine, Node};
use crate::util::signals::CtrlC;
use crate::util::time::unix_secs;

/// How long a mesh must have no other node before `--auto` acts on it.
const EMPTY_GRACE: Duration = Duration::from_secs(10);
/// How long a client waits before looking again when no mesh fits.
const RETRY: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let home = crate::util::home::mesh_home();
    let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
    let hub = args.hub.resolve_options();
    let candidates = if args.client {
        Vec::new()
    } else {
        catalog_candidates(&hub)?
    };
    let mut ctrl_c = CtrlC::listen();
    loop {
        println!(
            "auto: looking for meshes on {} relay{}",
            relays.len(),
            if relays.len() == 1 { "" } else { "s" }
        );
        let found = tokio::select! {
            found = discover(&args, &relays, &candidates, load_last_mesh(&home)) => found,
            r = serve::wait_ctrl_c(&mut ctrl_c) => return r,
        };
        let best = score::pick(&found.ranked, &mut rand::rng());
        if best.is_none() && args.client {
            println!(
                "auto: no mesh to join yet; looking again in {}s (Ctrl-C to stop)",
                RETRY.as_secs()
            );
            match pause(&mut ctrl_c).await? {
                true => continue,
                false => return Ok(()),
            }
        }
        let mut mesh = serve::mesh_config(&args)?;
        let offer = best.map(|s| found.offer(s).clone());
        match (&offer, best) {
            (Some(o), Some(s)) => {
                println!(
                    "auto: joining {:?} (mesh {}), score {:.1}",
                    o.content.name, o.mesh_id, s.score
                );
                for line in browse::explain_lines(s) {
                    println!("        {line}");
                }
                mesh.join = o.ticket.clone().into_iter().collect();
            }
            _ => {
                println!("auto: no mesh fits; starting a new public mesh and publishing it");
                mesh.public = true;
            }
        }
        let publish = offer.is_none() || args.publish;
        let discovery = serve::discovery_config(&args, &mesh, publish)?;
        let node = match Node::start_with(serve::node_options(&args, None, mesh, discovery)).await {
            Ok(node) => node,
            // The mesh refused or failed us (not a local problem such as a busy port): look again.
            Err(e) if offer.is_some() && e.downcast_ref::<MeshError>().is_some() => {
                eprintln!(
                    "warning: cannot join that mesh: {e:#}; looking again in {}s",
                    RETRY.as_secs()
                );
                match pause(&mut ctrl_c).await? {
                    true => continue,
                    false => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        };
        let joined = node.mesh.as_ref().context("node without a mesh")?;
        save_last_mesh(&home, joined.mesh_id());
        serve::print_banner(&node);
        let loader = if args.client {
            None
        } else {
            let content = offer.as_ref().map(|o| &o.content);
            Some(start_serving(&args, content, &candidates, &node)?)
        };
        let outcome = watch(&node, args.client, &mut ctrl_c).await;
        if let Some(l) = loader {
            l.abort();
        }
        node.shutdown().await;
        match outcome? {
            Watch::Stop => return Ok(()),
            Watch::Emptied => println!("auto: the mesh has emptied; looking for another"),
        }
    }
}

/// Waits [`RETRY`]: `true` when it has passed, `false` on Ctrl-C.
async fn pause(ctrl_c: &mut CtrlC) -> anyhow::Result<bool> {
    tokio::select! {
        _ = tokio::time::sleep(RETRY) => Ok(true),
        r = serve::wait_ctrl_c(ctrl_c) => r.map(|()| false),
    }
}

/// Catalog models with whether each fits this machine.
fn catalog_candidates(hub: &ResolveOptions) -> anyhow::Result<Vec<Candidate>> {
    let catalog = hub.load_catalog()?;
    let rows = catalog::listing::rows(&catalog.models, hub, catalog::available_memory());
    Ok(rows
        .into_iter()
        .map(|r| Candidate {
            name: r.entry.name,
            size: r.entry.size,
            fits: r.fits,
        })
        .collect())
}

async fn discover(
    args: &ServeArgs,
    relays: &[nostr::RelayUrl],
    candidates: &[Candidate],
    last_mesh: Option<crate::mesh::MeshId>,
) -> Browse {
    let prefs = Preferences {
        model: requested_id(args),
        region: args.region.clone(),
        min_memory_bytes: 0,
        last_mesh,
        client: args.client,
        servable: candidates
            .iter()
            .filter(|c| c.fits)
            .map(|c| c.name.clone())
            .collect(),
        joinable_only: true,
        now: unix_secs(),
    };
    let found = browse::browse(&BrowseOptions {
        relays: relays.to_vec(),
        // Not filtered by model at the relays: a mesh that only wants the model qualifies too.
        query: Default::default(),
        prefs,
        probe: true,
        iroh_relay: args.iroh_relay.clone(),
    })
    .await;
    if let Some(w) = found.relay_warning() {
        eprintln!("warning: {w}");
    }
    let eligible = found.ranked.iter().filter(|s| s.eligible()).count();
    println!(
        "auto: {} offer(s), {} joinable, {} rejected",
        found.report.offers.len(),
        eligible,
        found.report.rejected_total()
    );
    found
}

/// The model id `--model` will be served or looked for under: `--model-name`, else a catalog
/// name as it is, else the id of a .gguf file's name (a path, URL or hub reference).
fn requested_id(args: &ServeArgs) -> Option<String> {
    let spec = args.model.as_deref()?;
    if let Some(name) = &args.model_name {
        return Some(name.clone());
    }
    Some(if spec.to_ascii_lowercase().ends_with(".gguf") {
        crate::util::model_id::model_id_from_file(spec)
    } else {
        spec.to_owned()
    })
}

/// Picks, downloads and loads the model to serve in the background; the node serves the mesh's
/// models meanwhile.
fn start_serving(
    args: &ServeArgs,
    offer: Option<&OfferContent>,
    candidates: &[Candidate],
    node: &Node,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let Choice { model, reason } = demand::choose_model(args.model.as_deref(), offer, candidates)
        .context(
        "no catalog model fits this machine's memory; run with --client to use the mesh \
             without serving, or pick one with --model",
    )?;
    println!("auto: serving {model} ({reason}); loading it in the background");
    let args = args.clone();
    let slot = node.local.clone();
    Ok(tokio::spawn(async move {
        let started = Instant::now();
        let loaded = async {
            let cfg = serve::engine_config(&args, &model).await?;
            load_engine(cfg).await
        };
        match loaded.await {
            Ok(engine) => {
                let name = engine.info().name.clone();
                if slot.set(std::sync::Arc::new(engine)).is_ok() {
                    println!(
                        "auto: {name} loaded in {:.1}s; serving it to the mesh",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) => {
                eprintln!("error: cannot serve {model}: {e:#}; staying in the mesh as a client")
            }
        }
    }))
}

enum Watch {
    Stop,
    Emptied,
}

/// Waits for Ctrl-C, or (client) for the mesh to have had no other node for [`EMPTY_GRACE`].
/// A serving node left alone starts publishing its mesh instead.
async fn watch(node: &Node, client: bool, ctrl_c: &mut CtrlC) -> anyhow::Result<Watch> {
    let mesh = node.mesh.as_ref().context("node without a mesh")?;
    let mut alone_since: Option<Instant> = None;
    loop {
        tokio::select! {
            r = serve::wait_ctrl_c(ctrl_c) => return r.map(|()| Watch::Stop),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        if !mesh.peers().is_empty() {
            alone_since = None;
            continue;
        }
        let since = *alone_since.get_or_insert_with(Instant::now);
        if since.elapsed() < EMPTY_GRACE {
            continue;
        }
        if client {
            return Ok(Watch::Emptied);
        }
        if let Some(d) = &node.discovery {
            if d.publish_state().await.is_none() {
                println!("auto: this node is alone in its mesh; publishing it");
                d.start_publishing(mesh, None).await;
            }
        }
    }
}
