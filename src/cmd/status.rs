//! `mesh status` and `mesh peers`: ask the running node's management API and print a table (or
//! its JSON with `--json`). Also [`call_api`], the one way the CLI calls a node's management
//! API: typed documents both ways, every call bounded in time.

use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::args::{QueryArgs, StatusArgs};
use super::table::{clean, render};
use crate::http::api::docs::{ErrorDoc, PeersDoc, StatusDoc, TicketDoc};
use crate::mesh::PeerView;
use crate::util::http::{client, ClientOptions};

/// Longest a management-API call may take (`POST /api/publish` waits up to 12 s for relays).
const API_TIMEOUT: Duration = Duration::from_secs(20);

/// Calls a running node's management API (`api` is its base URL) and reads the answer as `T`;
/// an error status becomes an error carrying the API's message. Requests that change state
/// are sent as JSON (the API refuses anything else, against CSRF), and `MESH_API_KEY`, when
/// set, as the Bearer key a node on a non-loopback `--api-host` asks for.
pub async fn call_api<T: DeserializeOwned>(
    api: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> anyhow::Result<T> {
    let url = format!("{}{path}", api.trim_end_matches('/'));
    let http = client(ClientOptions::api(API_TIMEOUT)).context("cannot build an HTTP client")?;
    let changes = method != reqwest::Method::GET && method != reqwest::Method::HEAD;
    let mut request = http.request(method, &url);
    if let Some(body) = body {
        request = request.json(body);
    } else if changes {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
    }
    if let Some(key) = std::env::var("MESH_API_KEY").ok().filter(|k| !k.is_empty()) {
        request = request.bearer_auth(key);
    }
    let resp = request.send().await.with_context(|| {
        format!("cannot reach the node at {api} (is `mesh serve` running? --api picks another)")
    })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("{url} broke off its answer"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorDoc>(&bytes)
            .map(|e| e.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        anyhow::bail!("{url} answered {status}: {}", clean(&message));
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{url} did not answer the document this mesh expects"))
}

async fn get<T: DeserializeOwned>(args: &QueryArgs, path: &str) -> anyhow::Result<T> {
    call_api(&args.api, reqwest::Method::GET, path, None::<&()>).await
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let StatusArgs {
        query: args,
        ticket,
    } = args;
    if ticket {
        let t: TicketDoc = get(&args, "/api/ticket").await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&t)?);
        } else {
            println!("{}", clean(&t.ticket));
        }
        return Ok(());
    }
    let s: StatusDoc = get(&args, "/api/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", format_status(&s));
    Ok(())
}

pub async fn peers(args: QueryArgs) -> anyhow::Result<()> {
    let p: PeersDoc = get(&args, "/api/peers").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print!("{}", format_peers(&p.peers));
    Ok(())
}

fn or_dash(v: Option<&str>) -> String {
    v.map_or_else(|| "-".into(), clean)
}

/// The human form of `/api/status`. Pure, for tests.
pub fn format_status(s: &StatusDoc) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    let mesh = s.mesh.as_ref();
    line("node", or_dash(mesh.map(|m| m.node_id.as_str())));
    line("role", s.role.as_str().into());
    if s.models.len() > 1 {
        // Several models: each with its own slots.
        for m in &s.models {
            let (busy, total) = (m.engine.slots.busy, m.engine.slots.total);
            line(
                "model",
                format!("{} ({busy} busy of {total} slots)", clean(&m.name)),
            );
        }
    } else {
        line("model", or_dash(s.model.as_deref()));
        if let Some(e) = &s.engine {
            line(
                "slots",
                format!("{} busy of {}", e.slots.busy, e.slots.total),
            );
        }
    }
    let kind = match mesh.map(|m| m.mesh_public) {
        Some(true) => " (public)",
        _ => " (private)",
    };
    match mesh {
        Some(m) if m.left => line("mesh", "- (left; a single node now)".into()),
        _ => line(
            "mesh",
            format!("{}{kind}", or_dash(mesh.map(|m| m.mesh_id.as_str()))),
        ),
    }
    let models: Vec<String> = mesh
        .map(|m| m.mesh_models.iter().map(|n| clean(n)).collect())
        .unwrap_or_default();
    line(
        "models",
        if models.is_empty() {
            "-".into()
        } else {
            models.join(", ")
        },
    );
    line("peers", mesh.map_or(0, |m| m.peers.len()).to_string());
    if let Some(m) = mesh {
        line("relay", or_dash(m.home_relay.as_deref()));
        let addrs: Vec<String> = m.addrs.iter().map(|a| clean(a)).collect();
        line(
            "addresses",
            if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(" ")
            },
        );
    }
    if mesh.is_some() {
        line("ticket", "`mesh status --ticket` prints it".into());
    }
    out
}

/// The human form of `/api/peers`: one row per peer. Pure, for tests.
pub fn format_peers(peers: &[PeerView]) -> String {
    if peers.is_empty() {
        return "no peers\n".into();
    }
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            let models: Vec<String> = p
                .models
                .iter()
                .map(|m| format!("{} ({}/{} free)", clean(&m.name), m.free_slots, m.slots))
                .collect();
            [
                p.node_id.chars().take(10).collect(),
                clean(&p.name),
                p.role.as_str().into(),
                if p.trying_direct {
                    format!("{} (trying direct)", p.connection.as_str())
                } else {
                    p.connection.as_str().into()
                },
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                if models.is_empty() {
                    "-".into()
                } else {
                    models.join(", ")
                },
                if p.shares.is_empty() {
                    "-".into()
                } else {
                    clean(&p.shares.join(", "))
                },
            ]
        })
        .collect();
    render(
        ["NODE", "NAME", "ROLE", "CONN", "RTT", "MODELS", "SHARES"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{ModelOffer, Role};

    fn peer(name: &str) -> PeerView {
        PeerView {
            node_id: "abcdef0123456789".into(),
            name: name.into(),
            role: Role::Host,
            region: None,
            models: vec![ModelOffer {
                name: "m".into(),
                free_slots: 3,
                slots: 4,
                ctx: 512,
            }],
            connection: crate::mesh::ConnType::Relay,
            rtt_ms: Some(1.25),
            trying_direct: false,
            queue_depth: 0,
            tokens_per_second: 0.0,
            memory_bytes: 0,
            last_seen_ms: 0,
            shares: vec![],
            split: Default::default(),
        }
    }

    #[test]
    fn peers_table_shows_connection_and_rtt() {
        let t = format_peers(&[peer("b")]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"));
        assert!(
            lines[1].contains("relay")
                && lines[1].contains("1.2 ms")
                && lines[1].contains("m (3/4 free)"),
            "{t}"
        );
        assert_eq!(format_peers(&[]), "no peers\n");
        let sharing = PeerView {
            shares: vec!["db".into(), "notebook".into()],
            ..peer("s")
        };
        let t = format_peers(&[sharing]);
        assert!(t.contains("SHARES") && t.contains("db, notebook"), "{t}");
        let punching = PeerView {
            trying_direct: true,
            ..peer("c")
        };
        assert!(format_peers(&[punching]).contains("relay (trying direct)"));
    }

    #[test]
    fn a_peer_name_cannot_drive_the_terminal() {
        let t = format_peers(&[peer("evil\x1b[2J\x07")]);
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
    }

    #[test]
    fn status_of_a_client_without_a_mesh() {
        let s = StatusDoc {
            version: "0".into(),
            role: Role::Client,
            model: None,
            models: Vec::new(),
            engine: None,
            mesh: None,
        };
        let t = format_status(&s);
        assert!(
            t.contains("role       client") && t.contains("model      -"),
            "{t}"
        );
    }
}
