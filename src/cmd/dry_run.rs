//! `mesh --auto --dry-run [--json]`: browse and score as `--auto` does, choose the model as it
//! would, print the plan (`node::dry_run`) with the reasons, and exit. Nothing is joined,
//! downloaded or published; the only thing written is the cached memory bandwidth.

use super::args::ServeArgs;
use super::auto::discover;
use super::choice::{candidates, catalog_rows};
use super::models::human_speed;
use crate::catalog::{self, fit::human_bytes};
use crate::discovery::browse;
use crate::discovery::demand::choose_model;
use crate::discovery::load_last_mesh;
use crate::discovery::nostr_io::relay_list;
use crate::discovery::score;
use crate::node::dry_run::{plan, DryRun, Inputs, MeshPlan, ModelPlan, Target};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let home = crate::util::home::mesh_home();
    let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
    let local = args.lan.sources()?;
    let (rows, machine) = catalog_rows(&args.hub.resolve_options(), &home, args.sizing())?;
    let candidates = if args.client {
        Vec::new()
    } else {
        candidates(&rows, args.min_speed)
    };
    let found = discover(
        &args,
        &relays,
        &local,
        &candidates,
        load_last_mesh(&home),
        &home,
    )
    .await;
    let best = score::pick(&found.ranked, &mut rand::rng());
    let offer = best.map(|s| found.offer(s));
    let choice = choose_model(args.model(), offer.map(|o| &o.content), &candidates, None);
    let target = best.zip(offer).map(|(s, o)| Target {
        name: o.content.name.clone(),
        mesh_id: o.mesh_id.to_string(),
        score: s.score,
        reasons: browse::explain_lines(s),
    });
    let doc = plan(Inputs {
        client: args.client,
        best: target,
        choice,
        wanted: offer.map_or_else(Vec::new, |o| o.content.wanted.clone()),
        rows: &rows,
        machine,
        room_bytes: catalog::available_memory(),
        min_tokens_per_sec: args.min_speed,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(&doc);
    }
    Ok(())
}

fn print_text(doc: &DryRun) {
    match &doc.mesh {
        MeshPlan::Join(t) => {
            println!(
                "dry run: would join {:?} (mesh {}), score {:.1}",
                t.name, t.mesh_id, t.score
            );
            for line in &t.reasons {
                println!("        {line}");
            }
        }
        MeshPlan::StartNewMesh { reason } | MeshPlan::LookAgain { reason } => {
            println!("dry run: would join no mesh: {reason}")
        }
    }
    match &doc.model {
        ModelPlan::Serve {
            model,
            reason,
            tokens_per_sec,
        } => {
            let speed = tokens_per_sec.map_or(String::new(), |t| {
                format!(", ~{} tok/s expected here", human_speed(t))
            });
            println!("dry run: would serve {model} ({reason}){speed}");
        }
        ModelPlan::Nothing { reason } => println!("dry run: would serve nothing: {reason}"),
    }
    println!(
        "dry run: this machine: {} for a model, memory bandwidth {:.1} GB/s{}; --min-speed {} tok/s",
        human_bytes(doc.room_bytes),
        doc.machine.memory_bandwidth / 1e9,
        doc.machine
            .gpu_bandwidth
            .map_or(String::new(), |g| format!(", GPU {:.0} GB/s (assumed)", g / 1e9)),
        doc.min_tokens_per_sec
    );
    if !doc.too_slow.is_empty() {
        let list: Vec<String> = doc
            .too_slow
            .iter()
            .map(|t| format!("{} (~{})", t.model, human_speed(t.tokens_per_sec)))
            .collect();
        println!(
            "dry run: fit in memory but too slow here (tok/s): {}",
            list.join(", ")
        );
    }
    if !doc.split_if_lenders.is_empty() {
        println!(
            "dry run: the mesh wants {}, too big for this node alone: once joined, it would be \
             served split if the members that lend memory hold it at --min-speed",
            doc.split_if_lenders.join(", ")
        );
    }
}
