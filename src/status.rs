//! `mesh status` and `mesh peers`: ask the running node's management API and print a table
//! (or its JSON with `--json`).

use anyhow::Context;
use serde_json::Value;

use crate::cli::QueryArgs;

/// Installs ring as the process's rustls crypto provider. iroh's dependencies enable reqwest's
/// TLS without choosing a provider, and reqwest panics when building a client without one.
/// Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn get(args: &QueryArgs, path: &str) -> anyhow::Result<Value> {
    call_api(&args.api, reqwest::Method::GET, path, None).await
}

/// Calls a running node's management API (`api` is its base URL) and returns the JSON answer;
/// an error status becomes an error carrying the API's message.
pub async fn call_api(
    api: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    install_crypto_provider();
    let url = format!("{}{path}", api.trim_end_matches('/'));
    let mut request = reqwest::Client::new().request(method, &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.with_context(|| {
        format!("cannot reach the node at {api} (is `mesh serve` running? --api picks another)")
    })?;
    let status = resp.status();
    let body: Value = resp
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))?;
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        body["error"]["message"]
            .as_str()
            .map_or_else(|| body.to_string(), str::to_owned)
    );
    Ok(body)
}

pub async fn status(args: QueryArgs) -> anyhow::Result<()> {
    let s = get(&args, "/api/status").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", format_status(&s));
    Ok(())
}

pub async fn peers(args: QueryArgs) -> anyhow::Result<()> {
    let p = get(&args, "/api/peers").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
        return Ok(());
    }
    print!("{}", format_peers(&p["peers"]));
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The human form of `/api/status`. Pure, for tests.
pub fn format_status(s: &Value) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<10} {v}\n"));
    line("node", text(&s["node_id"]));
    line("role", text(&s["role"]));
    line("model", text(&s["model"]));
    if s["slots"].is_object() {
        line(
            "slots",
            format!("{} busy of {}", s["slots"]["busy"], s["slots"]["total"]),
        );
    }
    let public = if s["mesh_public"] == true {
        " (public)"
    } else {
        " (private)"
    };
    line("mesh", format!("{}{public}", text(&s["mesh_id"])));
    let models: Vec<String> = s["mesh_models"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    line(
        "models",
        if models.is_empty() {
            "-".into()
        } else {
            models.join(", ")
        },
    );
    line(
        "peers",
        s["peers"].as_array().map_or(0, |a| a.len()).to_string(),
    );
    line("ticket", text(&s["ticket"]));
    out
}

/// The human form of `/api/peers`: one row per peer. Pure, for tests.
pub fn format_peers(peers: &Value) -> String {
    let rows: Vec<[String; 6]> = peers
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let id = text(&p["node_id"]);
                    let models: Vec<String> = p["models"]
                        .as_array()
                        .map(|m| {
                            m.iter()
                                .map(|m| {
                                    format!(
                                        "{} ({}/{} free)",
                                        text(&m["name"]),
                                        m["free_slots"],
                                        m["slots"]
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let rtt = p["rtt_ms"]
                        .as_f64()
                        .map_or("-".into(), |r| format!("{r:.1} ms"));
                    [
                        id.chars().take(10).collect(),
                        text(&p["name"]),
                        text(&p["role"]),
                        text(&p["connection"]),
                        rtt,
                        if models.is_empty() {
                            "-".into()
                        } else {
                            models.join(", ")
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no peers\n".into();
    }
    let header = ["NODE", "NAME", "ROLE", "CONN", "RTT", "MODELS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peers_table_shows_connection_and_rtt() {
        let t = format_peers(
            &json!([{"node_id": "abcdef0123456789", "name": "b", "role": "host",
            "connection": "relay", "rtt_ms": 1.25, "models": [{"name": "m", "free_slots": 3, "slots": 4}]}]),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NODE"));
        assert!(
            lines[1].contains("relay")
                && lines[1].contains("1.2 ms")
                && lines[1].contains("m (3/4 free)"),
            "{t}"
        );
        assert_eq!(format_peers(&json!([])), "no peers\n");
    }
}
