//! `mesh serve`: load the model, start the engine, the OpenAI API and the management API, and
//! shut all of it down cleanly on Ctrl-C (in-flight streams end with an error chunk).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::cli::ServeArgs;
use crate::engine::{Engine, EngineConfig};

/// How long open connections get to finish after Ctrl-C before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running node: the engine and its two HTTP servers.
pub struct Node {
    pub engine: Engine,
    /// Bound address of the OpenAI-compatible API.
    pub openai_addr: SocketAddr,
    /// Bound address of the management API.
    pub api_addr: SocketAddr,
    cancel: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl Node {
    /// Loads the model and starts serving. Port 0 picks a free port (see the `*_addr` fields).
    pub async fn start(
        cfg: EngineConfig,
        host: IpAddr,
        port: u16,
        api_port: u16,
    ) -> anyhow::Result<Self> {
        // Bind first: a busy port should fail fast, before a model load.
        let openai = bind(host, port, "--port").await?;
        let api = bind(host, api_port, "--api-port").await?;
        let engine = tokio::task::spawn_blocking(move || Engine::start(cfg)).await??;
        let cancel = CancellationToken::new();
        let openai_addr = openai.local_addr()?;
        let api_addr = api.local_addr()?;
        let servers = vec![
            spawn_server(openai, crate::proxy::router(engine.clone()), cancel.clone()),
            spawn_server(api, crate::api::router(engine.clone()), cancel.clone()),
        ];
        Ok(Self {
            engine,
            openai_addr,
            api_addr,
            cancel,
            servers,
        })
    }

    /// Ends in-flight requests with an error, stops accepting connections, waits a little.
    pub async fn shutdown(self) {
        self.engine.shutdown();
        self.cancel.cancel();
        let all = futures::future::join_all(self.servers);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing anyway");
        }
    }
}

async fn bind(host: IpAddr, port: u16, flag: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(host, port);
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another mesh running? pick another port with {flag})")
    })
}

fn spawn_server(
    listener: TcpListener,
    app: axum::Router,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("HTTP server failed: {e}");
        }
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let opts = catalog::ResolveOptions::from_env().with_args(&args.hub);
    let model = catalog::resolve(&args.model, &opts).await?;
    let memory = model.memory().context("reading the model's memory needs")?;
    let room = catalog::available_memory();
    let ctx = catalog::plan_context(&memory, args.ctx, args.parallel, room)?;
    if args.ctx.is_none() && ctx < memory.default_ctx() {
        tracing::warn!(ctx, "context lowered so that the model fits in memory");
    }
    let cfg = EngineConfig {
        model_name: args.model_name.clone().or(Some(model.name)),
        parallel: args.parallel,
        ctx: Some(ctx),
        threads: args.threads,
        queue: args.queue,
        ..EngineConfig::new(model.path)
    };
    let node = Node::start(cfg, args.host, args.port, args.api_port).await?;
    let info = node.engine.info();
    println!("mesh {} serving {}", env!("CARGO_PKG_VERSION"), info.name);
    println!("  OpenAI API   http://{}/v1", node.openai_addr);
    println!("  management   http://{}/api/status", node.api_addr);
    println!(
        "  slots {} x {} tokens, {} threads; Ctrl-C to stop",
        info.parallel, info.ctx, info.threads
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    println!("shutting down");
    node.shutdown().await;
    Ok(())
}
