//! `mesh share`, `mesh unshare`, `mesh connect`: TCP services shared over the mesh, through the
//! running node's management API. `mesh connect` holds its `POST /api/connect` answer open
//! while it runs: the node listens and carries connections as long as this process reads the
//! answer, and stops when it ends (Ctrl-C, or the process killed) — nothing to clean up.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use reqwest::Method;

use super::args::{ConnectArgs, ShareArgs, UnshareArgs};
use super::status::call_api;
use super::table::{clean, render};
use crate::http::api::docs::ErrorDoc;
use crate::http::api::shares::{ConnectRequest, ShareRequest, SharesDoc, KEEP_ALIVE};
use crate::mesh::{ConnectEvent, ShareInfo};
use crate::util::http::{client, ClientOptions};

/// Longest line of the connect stream kept (events are small).
const MAX_LINE_BYTES: usize = 64 * 1024;

pub async fn share(args: ShareArgs) -> anyhow::Result<()> {
    let (Some(name), Some(target)) = (args.name.clone(), args.target) else {
        return list(&args).await;
    };
    let req = ShareRequest {
        name,
        target,
        allow_remote_target: args.allow_remote_target,
    };
    let doc: ShareInfo = call_api(&args.api, Method::POST, "/api/shares", Some(&req)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "sharing {} as {:?}: members use it with `mesh connect {}`",
            doc.target,
            clean(&doc.name),
            clean(&doc.name)
        );
    }
    Ok(())
}

async fn list(args: &ShareArgs) -> anyhow::Result<()> {
    let doc: SharesDoc = call_api(&args.api, Method::GET, "/api/shares", None::<&()>).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if doc.shares.is_empty() {
        println!("no shares");
    } else {
        let rows: Vec<[String; 3]> = doc
            .shares
            .iter()
            .map(|s| [clean(&s.name), clean(&s.target), s.active.to_string()])
            .collect();
        print!("{}", render(["SHARE", "TARGET", "ACTIVE"], &rows));
    }
    if !doc.connects.is_empty() {
        let rows: Vec<[String; 4]> = doc
            .connects
            .iter()
            .map(|c| {
                [
                    clean(&c.name),
                    c.node_id.chars().take(10).collect(),
                    clean(&c.bind),
                    c.active.to_string(),
                ]
            })
            .collect();
        print!(
            "{}",
            render(["CONNECTED", "NODE", "LISTENING", "ACTIVE"], &rows)
        );
    }
    Ok(())
}

pub async fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
    let path = format!("/api/shares/{}", args.name);
    let doc: serde_json::Value = call_api(&args.api, Method::DELETE, &path, None::<&()>).await?;
    if args.json {
        println!("{doc}");
    } else {
        println!("no longer sharing {:?}", clean(&args.name));
    }
    Ok(())
}

pub async fn connect(args: ConnectArgs) -> anyhow::Result<()> {
    let api = args.api.trim_end_matches('/');
    let http = client(ClientOptions {
        // The node writes at least an empty line every KEEP_ALIVE.
        read_timeout: KEEP_ALIVE * 4,
        ..ClientOptions::transfer(0)
    })?;
    let req = ConnectRequest {
        name: args.name.clone(),
        node: args.node.clone(),
        bind: args.bind,
    };
    let mut request = http.post(format!("{api}/api/connect")).json(&req);
    if let Some(key) = std::env::var("MESH_API_KEY").ok().filter(|k| !k.is_empty()) {
        request = request.bearer_auth(key);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), request.send())
        .await
        .context("the node did not answer in time")?
        .with_context(|| {
            format!("cannot reach the node at {api} (is `mesh serve` running? --api picks another)")
        })?;
    let status = resp.status();
    if !status.is_success() {
        let bytes = resp.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorDoc>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        anyhow::bail!(
            "cannot connect to {:?}: {}",
            clean(&args.name),
            clean(&message)
        );
    }
    let mut stream = resp.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the node broke off")?;
        for &b in chunk.iter() {
            if b != b'\n' {
                if line.len() < MAX_LINE_BYTES {
                    line.push(b);
                }
                continue;
            }
            if !line.is_empty() {
                show(&line, args.json)?;
                line.clear();
            }
        }
    }
    anyhow::bail!("the node stopped carrying connections (it stopped or left its mesh)")
}

/// Prints one event line: as it came with `--json`, else in words.
fn show(line: &[u8], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", String::from_utf8_lossy(line));
        return Ok(());
    }
    let Ok(ev) = serde_json::from_slice::<ConnectEvent>(line) else {
        return Ok(());
    };
    match ev {
        ConnectEvent::Listening {
            bind,
            name,
            node_id,
        } => {
            println!("listening on {}", clean(&bind));
            eprintln!(
                "connections to {} go to {:?} of {} (Ctrl-C stops)",
                clean(&bind),
                clean(&name),
                node_id.chars().take(10).collect::<String>()
            );
        }
        ConnectEvent::Opened { from } => eprintln!("{}: connected", clean(&from)),
        ConnectEvent::Closed {
            from,
            sent,
            received,
            error,
        } => match error {
            None => eprintln!(
                "{}: closed ({sent} bytes sent, {received} received)",
                clean(&from)
            ),
            Some(e) => eprintln!("{}: closed: {}", clean(&from), clean(&e)),
        },
        ConnectEvent::Refused { from, error } => {
            eprintln!("{}: refused: {}", clean(&from), clean(&error))
        }
    }
    Ok(())
}
