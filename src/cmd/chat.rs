//! `mesh chat "prompt"`: one question from the shell, the answer streamed to stdout as it is
//! generated, through a node's OpenAI-compatible API. With `--join TICKET|CODE` the node is a
//! throwaway client started in this process: it joins the mesh, asks, and leaves.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;

use super::args::{ChatArgs, JoinTarget};
use crate::mesh::{identity, MeshConfig};
use crate::node::{Node, NodeOptions};
use crate::util::http::{client, ClientOptions};

/// How long a `--join` client waits for the mesh to show it a model.
const MODEL_WAIT: Duration = Duration::from_secs(30);
/// Longest silence while the answer streams (the first token may wait for a free slot).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Most bytes of one SSE line kept while it arrives.
const MAX_LINE_BYTES: usize = 1024 * 1024;

pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let Some(target) = args.join.clone() else {
        return ask(&args, args.api.trim_end_matches('/')).await;
    };
    let ticket = match target {
        JoinTarget::Ticket(t) => t,
        JoinTarget::Code(code) => super::p2p::redeem(&code, &args.relay.relays).await?,
    };
    let mut mesh = MeshConfig::new(identity::ephemeral());
    mesh.join = vec![ticket];
    mesh.net = args.net.resolve()?;
    mesh.name = "mesh-chat".into();
    let node = Node::start_with(NodeOptions {
        engines: Vec::new(),
        host: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        api_host: std::net::Ipv4Addr::LOCALHOST.into(),
        api_port: 0,
        surface: Default::default(),
        mesh: Some(mesh),
        discovery: None,
        hub: crate::catalog::ResolveOptions::from_env(),
        upstreams: Vec::new(),
        machine_home: None,
    })
    .await
    .context("cannot join the mesh")?;
    let result = async {
        let m = node.mesh.as_ref().context("no mesh")?;
        let mut roster = m.watch_roster();
        let wait = roster.wait_for(|_| !m.remote_models().is_empty());
        tokio::time::timeout(MODEL_WAIT, wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the mesh showed no model within {}s", MODEL_WAIT.as_secs())
            })?
            .map_err(|_| anyhow::anyhow!("the mesh stopped"))?;
        ask(&args, &format!("http://{}", node.openai_addr)).await
    }
    .await;
    node.shutdown().await;
    result
}

/// The model to ask: `--model`, else the first the node lists.
async fn pick_model(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let url = format!("{base}/v1/models");
    let models: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach {base} (is `mesh serve` running? --api picks another)")
        })?
        .json()
        .await
        .with_context(|| format!("{url} did not answer a model list"))?;
    models["data"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .context("the node lists no model: pass --model, or wait for the mesh to serve one")
}

async fn ask(args: &ChatArgs, base: &str) -> anyhow::Result<()> {
    let http = client(ClientOptions {
        read_timeout: READ_TIMEOUT,
        ..ClientOptions::transfer(0)
    })?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => pick_model(&http, base).await?,
    };
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": args.prompt}],
        "max_tokens": args.max_tokens,
        "stream": true,
    });
    let resp = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .with_context(|| {
            format!("cannot reach {base} (is `mesh serve` running? --api picks another)")
        })?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        anyhow::bail!(
            "{base} answered {status}: {}",
            super::table::clean(&message)
        );
    }
    let mut out = std::io::stdout().lock();
    let mut stream = resp.bytes_stream();
    let mut line = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the answer broke off")?;
        for &b in chunk.iter() {
            if b != b'\n' {
                if line.len() < MAX_LINE_BYTES {
                    line.push(b);
                }
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            let Some(data) = text.trim_end_matches('\r').strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                writeln!(out)?;
                return Ok(());
            }
            let v: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
            if let Some(e) = v["error"]["message"].as_str() {
                writeln!(out)?;
                anyhow::bail!("generation failed: {}", super::table::clean(e));
            }
            if let Some(piece) = v["choices"][0]["delta"]["content"].as_str() {
                write!(out, "{piece}")?;
                out.flush()?;
            }
        }
    }
    writeln!(out)?;
    Ok(())
}
