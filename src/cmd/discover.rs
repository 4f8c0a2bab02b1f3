//! `mesh discover`: browse offers from here (no node needed), scored for this machine, as a
//! table, `--explain`ed, or `--json`.

use super::args::DiscoverArgs;
use super::table::short;
use crate::discovery::browse::{self, Browse, BrowseOptions};
use crate::discovery::nostr_io::relay_list;
use crate::discovery::{load_last_mesh, untrusted, Filters};
use crate::util::home::mesh_home;
use crate::util::time::unix_secs;

pub async fn discover(args: DiscoverArgs) -> anyhow::Result<()> {
    let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
    let filters = Filters {
        model: args.model.clone(),
        region: args.region.clone(),
        min_memory: args.min_memory,
    };
    let home = mesh_home();
    let last = load_last_mesh(&home);
    let mut prefs = filters.prefs(unix_secs(), last);
    prefs.untrusted = untrusted::load(&home, prefs.now);
    let mut net = args.net.resolve()?;
    args.lan.apply(&mut net);
    // Listening is all `discover` does on the LAN: it advertises nothing.
    net.mdns = false;
    let found = browse::browse(&BrowseOptions {
        relays,
        query: filters.query(),
        prefs,
        probe: !args.no_probe,
        net,
        local: args.lan.sources()?,
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
    if let Some(local) = &found.local {
        for e in &local.errors {
            eprintln!("warning: {e}");
        }
    }
    anyhow::ensure!(
        found.report.relays.iter().any(|r| r.ok) || found.local.is_some(),
        "no relay answered; check --relay / $MESH_RELAYS and the network (or look on the LAN \
         with --lan, or ask nodes directly with --peers FILE)"
    );
    Ok(())
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
    if let Some(local) = &found.local {
        out.push_str(&format!(
            ", {} from {} node{} asked directly",
            local.offers,
            local.asked,
            if local.asked == 1 { "" } else { "s" }
        ));
        if local.lan {
            out.push_str(&format!(" ({} found on the LAN)", local.lan_nodes));
        }
    }
    if rejected > 0 {
        let why: Vec<String> = found
            .report
            .rejected
            .iter()
            .map(|(k, v)| format!("{} {v}", short(k, 32)))
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
                out.push_str(&format!("             {}\n", short(&line, 200)));
            }
        }
    }
    out
}
