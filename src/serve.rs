//! `mesh serve`: load the model, start the engine, join or start a mesh, serve the OpenAI API and
//! the management API, and shut all of it down cleanly on Ctrl-C (peers are told at once,
//! in-flight streams end with an error chunk).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::cli::ServeArgs;
use crate::discovery::nostr_io::relay_list;
use crate::discovery::publish::{self, PublishSettings};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::engine::{Engine, EngineConfig, EngineSlot};
use crate::mesh::{identity, Mesh, MeshConfig};

/// How long open connections get to finish after Ctrl-C before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a node runs: an engine (none for a client), the HTTP ports, and optionally a mesh.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub engine: Option<EngineConfig>,
    pub host: IpAddr,
    pub port: u16,
    pub api_port: u16,
    pub mesh: Option<MeshConfig>,
    /// Nostr discovery (`/api/discover`, publishing); publishing needs a mesh.
    pub discovery: Option<DiscoveryConfig>,
}

/// A running node: the engine, the mesh and the two HTTP servers.
pub struct Node {
    /// What this node serves; empty on a client, or until `mesh --auto` has loaded its model
    /// (peers see it at the next heartbeat).
    pub engine: EngineSlot,
    pub mesh: Option<Mesh>,
    /// Bound address of the OpenAI-compatible API.
    pub openai_addr: SocketAddr,
    /// Bound address of the management API.
    pub api_addr: SocketAddr,
    pub discovery: Option<Discovery>,
    cancel: CancellationToken,
    servers: Vec<JoinHandle<()>>,
}

impl Node {
    /// A single node without a mesh: loads the model and serves it. Port 0 picks a free port
    /// (see the `*_addr` fields).
    pub async fn start(
        cfg: EngineConfig,
        host: IpAddr,
        port: u16,
        api_port: u16,
    ) -> anyhow::Result<Self> {
        Self::start_with(NodeOptions {
            engine: Some(cfg),
            host,
            port,
            api_port,
            mesh: None,
            discovery: None,
        })
        .await
    }

    /// Starts everything `opts` asks for.
    pub async fn start_with(opts: NodeOptions) -> anyhow::Result<Self> {
        // Bind first: a busy port should fail fast, before a model load.
        let openai = bind(opts.host, opts.port, "--port").await?;
        let api = bind(opts.host, opts.api_port, "--api-port").await?;
        let engine = EngineSlot::from(match opts.engine {
            Some(cfg) => Some(load_engine(cfg).await?),
            None => None,
        });
        let mesh = match opts.mesh {
            Some(cfg) => {
                let local_only = crate::proxy::router(engine.clone(), None);
                match Mesh::start(cfg, engine.clone(), local_only).await {
                    Ok(m) => Some(m),
                    Err(e) => {
                        if let Some(engine) = engine.get() {
                            engine.shutdown();
                        }
                        return Err(e.into());
                    }
                }
            }
            None => None,
        };
        let discovery = opts.discovery.map(Discovery::new);
        if let (Some(d), Some(m)) = (&discovery, &mesh) {
            if d.config().publish {
                d.start_publishing(m, None).await;
            }
        }
        let cancel = CancellationToken::new();
        let openai_addr = openai.local_addr()?;
        let api_addr = api.local_addr()?;
        let servers = vec![
            spawn_server(
                openai,
                crate::proxy::router(engine.clone(), mesh.clone()),
                cancel.clone(),
            ),
            spawn_server(
                api,
                crate::api::router(engine.clone(), mesh.clone(), discovery.clone()),
                cancel.clone(),
            ),
        ];
        Ok(Self {
            engine,
            mesh,
            openai_addr,
            api_addr,
            discovery,
            cancel,
            servers,
        })
    }

    /// Ends in-flight requests with an error, stops accepting connections, waits a little.
    pub async fn shutdown(self) {
        if let Some(d) = &self.discovery {
            d.stop_publishing().await;
        }
        if let Some(mesh) = &self.mesh {
            mesh.shutdown().await;
        }
        if let Some(engine) = self.engine.get() {
            engine.shutdown();
        }
        self.cancel.cancel();
        let all = futures::future::join_all(self.servers);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing anyway");
        }
    }
}

/// Loads a model on a blocking thread (llama.cpp's load is synchronous).
pub async fn load_engine(cfg: EngineConfig) -> anyhow::Result<Engine> {
    Ok(tokio::task::spawn_blocking(move || Engine::start(cfg)).await??)
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

impl Node {
    /// Stops as if killed: no leave message, connections just vanish (failure-detection tests).
    pub async fn kill(self) {
        if let Some(mesh) = &self.mesh {
            mesh.abort().await;
        }
        if let Some(engine) = self.engine.get() {
            engine.shutdown();
        }
        self.cancel.cancel();
        for s in self.servers {
            s.abort();
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if args.auto {
        return crate::auto::run(args).await;
    }
    let engine = match (&args.model, args.client) {
        (Some(_), true) => anyhow::bail!("--client serves no model; drop --model or --client"),
        (None, false) => anyhow::bail!(
            "nothing to serve: pass --model NAME|FILE.gguf, --client to use the mesh's models, \
             or --auto to find a mesh"
        ),
        (Some(spec), false) => Some(engine_config(&args, spec).await?),
        (None, true) => None,
    };
    let mesh = mesh_config(&args)?;
    let discovery = discovery_config(&args, &mesh, args.publish)?;
    let mut ctrl_c = CtrlC::listen();
    let node = Node::start_with(node_options(&args, engine, mesh, discovery)).await?;
    print_banner(&node);
    ctrl_c.wait().await?;
    node.shutdown().await;
    Ok(())
}

/// Ctrl-C (or, on Unix, SIGTERM as sent by service managers), listened for from the moment
/// [`CtrlC::listen`] is called. tokio installs its handler on the first poll of `ctrl_c()`, and
/// a SIGINT arriving before that (right after a banner that says "Ctrl-C to stop") would kill
/// the process without a clean exit (no leave message, no offer deletion).
pub struct CtrlC {
    pending:
        Option<std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>>,
}

impl CtrlC {
    pub fn listen() -> Self {
        use futures::FutureExt;
        let interrupt = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut fut = Box::pin(async move {
            #[cfg(unix)]
            if let Some(mut terminate) = terminate {
                return tokio::select! {
                    r = interrupt => r,
                    _ = terminate.recv() => Ok(()),
                };
            }
            interrupt.await
        });
        // The first poll installs the SIGINT handler (the SIGTERM one already is).
        let early = (&mut fut).now_or_never();
        Self {
            pending: early.is_none().then_some(fut),
        }
    }

    /// Waits for Ctrl-C (at once if it already came), then says so. Cancel-safe.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        if let Some(fut) = self.pending.as_mut() {
            fut.await.context("cannot listen for Ctrl-C")?;
            self.pending = None;
        }
        println!("shutting down");
        Ok(())
    }
}

/// What a `mesh serve` node runs, from its flags and the parts built from them.
pub fn node_options(
    args: &ServeArgs,
    engine: Option<EngineConfig>,
    mesh: MeshConfig,
    discovery: DiscoveryConfig,
) -> NodeOptions {
    NodeOptions {
        engine,
        host: args.host,
        port: args.port,
        api_port: args.api_port,
        mesh: Some(mesh),
        discovery: Some(discovery),
    }
}

/// The mesh side of `args` (the node key is loaded or created here).
pub fn mesh_config(args: &ServeArgs) -> anyhow::Result<MeshConfig> {
    let secret_key = if args.ephemeral {
        identity::ephemeral()
    } else {
        let home = crate::config::mesh_home();
        identity::load_or_create(&home).context("cannot load the node key")?
    };
    let mut mesh = MeshConfig::new(secret_key);
    mesh.join = args.join.clone();
    mesh.public = args.public;
    mesh.bind = args.mesh_bind;
    mesh.relay = args.iroh_relay.clone();
    mesh.region = args.region.clone();
    if let Some(name) = &args.name {
        mesh.name = name.clone();
    }
    Ok(mesh)
}

/// The discovery side of `args`: relays, the Nostr key (throwaway with --ephemeral), offer fields.
pub fn discovery_config(
    args: &ServeArgs,
    mesh: &MeshConfig,
    publish: bool,
) -> anyhow::Result<DiscoveryConfig> {
    let keys = if args.ephemeral {
        nostr::Keys::generate()
    } else {
        publish::load_keys(&crate::config::mesh_home()).context("cannot load the Nostr key")?
    };
    let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
    Ok(DiscoveryConfig {
        keys,
        settings: PublishSettings {
            relays,
            name: args
                .mesh_name
                .clone()
                .unwrap_or_else(|| format!("{}'s mesh", mesh.name)),
            region: args.region.clone(),
            wanted: args.wanted.clone(),
            max_clients: args.max_clients,
            interval: publish::REPUBLISH,
            ttl: publish::OFFER_TTL,
        },
        iroh_relay: args.iroh_relay.clone(),
        publish,
    })
}

pub fn print_banner(node: &Node) {
    match node.engine.get() {
        Some(engine) => {
            let info = engine.info();
            println!("mesh {} serving {}", env!("CARGO_PKG_VERSION"), info.name);
            println!(
                "  slots {} x {} tokens, {} threads",
                info.parallel, info.ctx, info.threads
            );
        }
        None => println!(
            "mesh {} (client: serving no model)",
            env!("CARGO_PKG_VERSION")
        ),
    }
    println!("  OpenAI API   http://{}/v1", node.openai_addr);
    println!("  management   http://{}/api/status", node.api_addr);
    if let Some(mesh) = &node.mesh {
        let kind = if mesh.is_public() {
            "public"
        } else {
            "private"
        };
        println!("  node id      {}", mesh.node_id());
        println!("  mesh         {} ({kind})", mesh.mesh_id());
        println!("  ticket       {}", mesh.ticket().encode());
        if mesh.is_public() {
            println!("  others join with: mesh serve --join <ticket>");
        } else {
            println!("  others join with: mesh serve --join <ticket> (the ticket holds the mesh secret: share it only with members)");
        }
    }
    if let Some(d) = &node.discovery {
        if d.config().publish {
            let relays: Vec<String> = d
                .config()
                .settings
                .relays
                .iter()
                .map(|r| r.to_string())
                .collect();
            println!(
                "  publishing   offer to {} every {}s",
                relays.join(", "),
                d.config().settings.interval.as_secs()
            );
        }
    }
    println!("  Ctrl-C to stop");
}

/// Resolves `--model` (catalog name, hub ref, URL or path; downloading if needed) and picks a
/// context that fits in memory.
pub(crate) async fn engine_config(args: &ServeArgs, spec: &str) -> anyhow::Result<EngineConfig> {
    let opts = catalog::ResolveOptions::from_env().with_args(&args.hub);
    let model = catalog::resolve(spec, &opts).await?;
    let memory = model.memory().context("reading the model's memory needs")?;
    let room = catalog::available_memory();
    let ctx = catalog::plan_context(&memory, args.ctx, args.parallel, room)?;
    if args.ctx.is_none() && ctx < memory.default_ctx() {
        tracing::warn!(ctx, "context lowered so that the model fits in memory");
    }
    Ok(EngineConfig {
        model_name: args.model_name.clone().or(Some(model.name)),
        parallel: args.parallel,
        ctx: Some(ctx),
        threads: args.threads,
        queue: args.queue,
        ..EngineConfig::new(model.path)
    })
}
