//! `mesh discover` (browse offers from here, no node needed) and `mesh publish` (ask the running
//! node to advertise its mesh).

use serde_json::json;

use super::browse::{self, Browse, BrowseOptions};
use super::nostr_io::relay_list;
use super::publish::unix_now;
use super::Filters;
use crate::cli::{DiscoverArgs, PublishArgs};

pub async fn discover(args: DiscoverArgs) -> anyhow::Result<()> {
    let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
    let filters = Filters {
        model: args.model.clone(),
        region: args.region.clone(),
        min_memory: args.min_memory,
    };
    let last = super::load_last_mesh(&crate::config::mesh_home());
    let found = browse::browse(&BrowseOptions {
        relays,
        query: filters.query(),
        prefs: filters.prefs(unix_now(), last),
        probe: !args.no_probe,
        iroh_relay: args.iroh_relay.clone(),
    })
    .await;
    if let Some(w) = found.relay_warning() {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found.to_json())?);
    } else {
        print!("{}", format_offers(&found, args.explain));
    }
    anyhow::ensure!(
        found.report.relays.iter().any(|r| r.ok),
        "no relay answered; check --relay / $MESH_RELAYS and the network"
    );
    Ok(())
}

fn short(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        text.chars().take(n - 1).chain(['…']).collect()
    }
}

/// The offers as a table (and each score's terms with `explain`).
pub fn format_offers(found: &Browse, explain: bool) -> String {
    let mut out = String::new();
    let rejected = found.report.rejected_total();
    out.push_str(&format!(
        "{} offer{} from {} of {} relays",
        found.report.offers.len(),
        if found.report.offers.len() == 1 {
            ""
        } else {
            "s"
        },
        found.report.relays.iter().filter(|r| r.ok).count(),
        found.report.relays.len()
    ));
    if rejected > 0 {
        let why: Vec<String> = found
            .report
            .rejected
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!(" ({rejected} rejected: {})", why.join(", ")));
    }
    out.push('\n');
    if found.ranked.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "{:>3} {:>7}  {:<16} {:<20} {:<36} {:>5} {:>7} {:<10} {:>5}\n",
        "#", "SCORE", "MESH", "NAME", "MODELS (free/slots)", "NODES", "CLIENTS", "REGION", "AGE"
    ));
    for (i, s) in found.ranked.iter().enumerate() {
        let o = found.offer(s);
        let c = &o.content;
        let models: Vec<String> = c
            .models
            .iter()
            .map(|m| format!("{} {}/{}", m.name, m.free_slots, m.slots))
            .collect();
        let score = match &s.excluded {
            Some(_) => "-".to_string(),
            None => format!("{:.1}", s.score),
        };
        out.push_str(&format!(
            "{:>3} {:>7}  {:<16} {:<20} {:<36} {:>5} {:>7} {:<10} {:>4}s\n",
            i + 1,
            score,
            short(&o.mesh_id.to_string(), 16),
            short(&c.name, 20),
            short(&models.join(", "), 36),
            c.nodes,
            format!("{}/{}", c.clients, c.max_clients),
            short(c.region.as_deref().unwrap_or("-"), 10),
            found.now.saturating_sub(o.created_at),
        ));
        if explain || s.excluded.is_some() {
            for line in browse::explain_lines(s) {
                out.push_str(&format!("             {line}\n"));
            }
        }
    }
    out
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let (method, body) = if args.stop {
        (reqwest::Method::DELETE, None)
    } else {
        let relays: Vec<String> = args.relay.relays.iter().map(|r| r.to_string()).collect();
        (reqwest::Method::POST, Some(json!({ "relays": relays })))
    };
    let body = crate::status::call_api(&args.api, method, "/api/publish", body).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let reports = if args.stop {
        println!("stopped publishing");
        &body["deleted"]
    } else {
        let s = &body["state"];
        println!(
            "publishing as {} (every 60 s; event {})",
            s["publisher"].as_str().unwrap_or("?"),
            s["last_event_id"].as_str().unwrap_or("not yet accepted")
        );
        &s["relays"]
    };
    let mut any_ok = reports.as_array().is_none_or(|r| r.is_empty());
    for r in reports.as_array().into_iter().flatten() {
        let ok = r["ok"].as_bool() == Some(true);
        any_ok |= ok;
        match ok {
            true => println!("  {}  ok", r["url"].as_str().unwrap_or("?")),
            false => println!(
                "  {}  failed: {} (retrying in the background)",
                r["url"].as_str().unwrap_or("?"),
                r["error"].as_str().unwrap_or("?")
            ),
        }
    }
    if !any_ok {
        eprintln!("warning: no relay took the offer yet; the node keeps retrying");
    }
    Ok(())
}
