//! `mesh relay`: run a Nostr relay for offers until Ctrl-C, and say what it accepts.

use super::args::RelayServerArgs;
use crate::discovery::offer::OFFER_KIND;
use crate::relay::{
    max_message_bytes, start, RelayOptions, DEFAULT_IDLE_TIMEOUT, DELETION_KIND, MAX_FILTER_LIMIT,
};
use crate::util::signals::CtrlC;

/// `mesh relay`: serve until Ctrl-C.
pub async fn run(args: RelayServerArgs) -> anyhow::Result<()> {
    let relay = start(RelayOptions {
        host: args.host,
        port: args.port,
        db: args.db.clone(),
        max_event_bytes: args.max_event_bytes,
        any_kind: args.any_kind,
        rate: args.rate,
        rate_per_ip: args.rate_per_ip,
        max_reqs: args.max_reqs,
        max_connections: args.max_connections,
        ..RelayOptions::default()
    })
    .await?;
    let mut ctrl_c = CtrlC::listen();
    println!("mesh {} relay", env!("CARGO_PKG_VERSION"));
    println!("relay {}", relay.url());
    match &args.db {
        Some(dir) => println!("  events kept in {}", dir.display()),
        None => println!("  events kept in memory (lost on exit; --db DIR keeps them)"),
    }
    let kinds = if args.any_kind {
        "all kinds".to_owned()
    } else {
        format!("kinds {OFFER_KIND} (offers) and {DELETION_KIND} (deletions)")
    };
    println!(
        "  accepts {kinds}, up to {} bytes, {} per minute per connection",
        args.max_event_bytes, args.rate
    );
    println!(
        "  messages up to {} bytes, at most {MAX_FILTER_LIMIT} events per filter, idle sessions closed after {}s",
        max_message_bytes(args.max_event_bytes),
        DEFAULT_IDLE_TIMEOUT.as_secs()
    );
    println!("  Ctrl-C to stop");
    super::serve::wait_ctrl_c(&mut ctrl_c).await?;
    relay.shutdown().await;
    Ok(())
}
