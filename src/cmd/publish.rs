//! `mesh publish [--stop]`: ask the running node's management API to advertise its mesh on
//! Nostr relays (or stop and delete the offer), and say how each relay took it.

use super::args::PublishArgs;
use super::status::call_api;
use super::table::clean;
use crate::http::api::docs::{PublishDoc, PublishRequest};

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let (method, body) = if args.stop {
        (reqwest::Method::DELETE, None)
    } else {
        let relays: Vec<String> = args.relay.relays.iter().map(|r| r.to_string()).collect();
        (reqwest::Method::POST, Some(PublishRequest { relays }))
    };
    let doc: PublishDoc = call_api(&args.api, method, "/api/publish", body.as_ref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let reports = if args.stop {
        println!("stopped publishing");
        doc.deleted.unwrap_or_default()
    } else {
        let s = doc.state.unwrap_or_default();
        println!(
            "publishing as {} (every 60 s; event {})",
            clean(&s.publisher),
            s.last_event_id.as_deref().unwrap_or("not yet accepted")
        );
        s.relays
    };
    let mut any_ok = reports.is_empty();
    for r in &reports {
        any_ok |= r.ok;
        match r.ok {
            true => println!("  {}  ok", clean(&r.url)),
            false => println!(
                "  {}  failed: {} (retrying in the background)",
                clean(&r.url),
                clean(r.error.as_deref().unwrap_or("?"))
            ),
        }
    }
    if !any_ok {
        eprintln!("warning: no relay took the offer yet; the node keeps retrying");
    }
    Ok(())
}
