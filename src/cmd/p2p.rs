//! `mesh invite`, `mesh join`, `mesh send`, `mesh inbox`, `mesh leave`, `mesh logs`: the
//! commands that talk to a running node's management API for join codes, messages, leaving
//! and logs (`mesh join` talks to the Nostr relays, or with `--lan` the LAN, instead). `--follow` long-polls the API
//! (`wait_secs`), so nothing sleeps in a loop.

use anyhow::Context;
use reqwest::Method;

use super::args::{FollowArgs, InviteArgs, JoinArgs, JoinTarget, QueryArgs, SendArgs};
use super::status::call_api;
use super::table::clean;
use crate::discovery::invite;
use crate::discovery::nostr_io::relay_list;
use crate::http::api::p2p::{
    InboxDoc, InviteDoc, InviteRequest, LeaveDoc, LogsDoc, SendDoc, SendRequest,
};
use crate::mesh::Ticket;

/// How long each `--follow` poll waits on the node (under the 20 s of one API call).
const FOLLOW_WAIT_SECS: u64 = 15;

pub async fn invite(args: InviteArgs) -> anyhow::Result<()> {
    let req = InviteRequest {
        uses: args.uses,
        ttl_secs: args.ttl.as_secs(),
        lan: args.lan,
    };
    let doc: InviteDoc = call_api(&args.api, Method::POST, "/api/invite", Some(&req)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{}", clean(&doc.code));
    let uses = if doc.uses == 1 {
        "once".to_string()
    } else {
        format!("{} times", doc.uses)
    };
    let (join, where_) = match (doc.nostr, doc.lan) {
        (true, true) => (" [--lan]", "; answers on the Nostr relays and on the LAN"),
        (false, true) => (
            " --lan",
            "; answers on the LAN only (no Nostr relay answered)",
        ),
        _ => ("", ""),
    };
    eprintln!(
        "works {uses} within {}: `mesh serve --join {}{join}` (or `mesh join` for the ticket){where_}",
        human_secs(doc.ttl_secs),
        clean(&doc.code)
    );
    Ok(())
}

fn human_secs(s: u64) -> String {
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Trades a join code for its ticket on `relays` (from `--relay`, `$MESH_RELAYS` or the
/// defaults).
pub async fn redeem(code: &str, relays: &[nostr::RelayUrl]) -> anyhow::Result<Ticket> {
    redeem_on(code, relays, false).await
}

/// [`redeem`], or with `lan` on the LAN (no relay involved).
pub async fn redeem_on(
    code: &str,
    relays: &[nostr::RelayUrl],
    lan: bool,
) -> anyhow::Result<Ticket> {
    let ticket = if lan {
        invite::redeem_lan(code).await
    } else {
        let relays = relay_list(relays).map_err(anyhow::Error::msg)?;
        invite::redeem(&relays, code).await
    }
    .with_context(|| "join code refused")?;
    ticket
        .parse::<Ticket>()
        .map_err(|e| anyhow::anyhow!("the inviting node sent a bad ticket: {e}"))
}

/// The tickets of `--join` flags, codes traded for theirs (on the LAN with `lan`).
pub async fn tickets(
    targets: &[JoinTarget],
    relays: &[nostr::RelayUrl],
    lan: bool,
) -> anyhow::Result<Vec<Ticket>> {
    let mut out = vec![];
    for t in targets {
        out.push(match t {
            JoinTarget::Ticket(t) => t.clone(),
            JoinTarget::Code(code) => redeem_on(code, relays, lan).await?,
        });
    }
    Ok(out)
}

pub async fn join(args: JoinArgs) -> anyhow::Result<()> {
    let ticket = redeem_on(&args.code, &args.relay.relays, args.lan).await?;
    if args.json {
        println!("{}", serde_json::json!({ "ticket": ticket.encode() }));
    } else {
        println!("{}", ticket.encode());
    }
    Ok(())
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let (to, text) = match (args.all, args.words.as_slice()) {
        (true, [text]) => (None, text.clone()),
        (false, [node, text]) => (Some(node.clone()), text.clone()),
        (true, _) => anyhow::bail!("with --all give only the text: mesh send --all \"text\""),
        (false, _) => {
            anyhow::bail!("give a member and the text: mesh send NODE \"text\" (or --all)")
        }
    };
    let req = SendRequest {
        to,
        all: args.all,
        text,
    };
    let doc: SendDoc = call_api(&args.api, Method::POST, "/api/send", Some(&req)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else if doc.sent.is_empty() {
        println!("no members to send to");
    }
    let mut failed = 0;
    for r in &doc.sent {
        let who = format!(
            "{} ({})",
            &r.node_id[..r.node_id.len().min(10)],
            clean(&r.name)
        );
        match &r.error {
            None if !args.json => println!("delivered to {who}"),
            None => {}
            Some(e) => {
                failed += 1;
                if !args.json {
                    println!("not delivered to {who}: {}", clean(e));
                }
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} of {} not delivered", doc.sent.len());
    Ok(())
}

pub async fn inbox(args: FollowArgs) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let wait = if args.follow { FOLLOW_WAIT_SECS } else { 0 };
        let path = format!("/api/inbox?after={after}&wait_secs={wait}");
        let doc: InboxDoc = call_api(&args.api, Method::GET, &path, None::<&()>).await?;
        for m in &doc.messages {
            if args.json {
                println!("{}", serde_json::to_string(m)?);
            } else {
                let name = if m.from_name.is_empty() {
                    m.from.chars().take(10).collect()
                } else {
                    clean(&m.from_name)
                };
                println!("[{}] {name}: {}", m.seq, clean(&m.text));
            }
        }
        if !args.follow {
            if doc.messages.is_empty() && !args.json {
                println!("no messages");
            }
            return Ok(());
        }
        after = doc.last_seq.max(after);
    }
}

pub async fn leave(args: QueryArgs) -> anyhow::Result<()> {
    let doc: LeaveDoc = call_api(&args.api, Method::POST, "/api/leave", Some(&())).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "left the mesh ({} peers told); the node serves on as a single node",
            doc.peers
        );
    }
    Ok(())
}

pub async fn logs(args: FollowArgs) -> anyhow::Result<()> {
    let (mut after, mut first) = (0, true);
    loop {
        let wait = if args.follow && !first {
            FOLLOW_WAIT_SECS
        } else {
            0
        };
        first = false;
        let path = format!("/api/logs?after={after}&wait_secs={wait}");
        let doc: LogsDoc = call_api(&args.api, Method::GET, &path, None::<&()>).await?;
        for l in &doc.lines {
            if args.json {
                println!("{}", serde_json::to_string(l)?);
            } else {
                println!(
                    "{} {:>5} {}: {}",
                    l.ts_ms,
                    l.level,
                    clean(&l.target),
                    clean(&l.message)
                );
            }
        }
        if !args.follow {
            return Ok(());
        }
        after = doc.last_seq.max(after);
    }
}
