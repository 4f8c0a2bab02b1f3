//! The node: the composition root. It puts together what a running `mesh` is — the local
//! generator slot (a llama.cpp engine per model served, or empty on a client), the mesh, discovery, and both HTTP
//! servers — and takes it apart again on shutdown (peers told at once, the offer deleted,
//! in-flight streams ended with an error chunk).
//!
//! It sees every domain module and the HTTP layer, but no clap and no printing: `cmd/` reads
//! the flags, builds [`NodeOptions`] and reports.

pub mod auto;
pub mod dry_run;
mod measure;
pub mod split;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::engine::{Engine, EngineConfig};
use crate::http::generate::{Generate, LocalSlot};
use crate::http::guard::{self, Surface};
use crate::http::route;
use crate::http::{api, ollama, openai, serve, upstream};
use crate::mesh::{Mesh, MeshConfig, ServingFn};

/// How long open connections get to finish after Ctrl-C before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a node runs: its engines (one per model; none for a client), the HTTP ports, and
/// optionally a mesh.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Model names must differ (a request picks its engine by name).
    pub engines: Vec<EngineConfig>,
    /// Address of the OpenAI-compatible API (`--host`).
    pub host: IpAddr,
    pub port: u16,
    /// Address of the management API (`--api-host`).
    pub api_host: IpAddr,
    pub api_port: u16,
    /// What guards both servers (allowed hosts, API key, CORS); checked against the
    /// addresses before anything binds.
    pub surface: Surface,
    pub mesh: Option<MeshConfig>,
    /// Nostr discovery (`/api/discover`, publishing); publishing needs a mesh.
    pub discovery: Option<DiscoveryConfig>,
    /// Where the console's catalog downloads come from and go (hub, cache, catalog).
    pub hub: catalog::ResolveOptions,
    /// OpenAI-compatible engines already running whose models this node serves too
    /// (`--upstream`; base URLs from `http::upstream::parse_base`).
    pub upstreams: Vec<reqwest::Url>,
    /// The mesh home, where the node keeps each model's best single-stream decode speed
    /// (`~/.mesh/machine.json`, for the speed estimate); `None` keeps nothing.
    pub machine_home: Option<PathBuf>,
}

/// A running node: the engine, the mesh and the two HTTP servers.
pub struct Node {
    /// What this node serves, one engine per model; empty on a client, or until `mesh --auto`
    /// has loaded its model (peers see it within a sweep: a change is announced at once).
    pub local: LocalSlot,
    pub mesh: Option<Mesh>,
    /// Bound address of the OpenAI-compatible API.
    pub openai_addr: SocketAddr,
    /// Bound address of the management API.
    pub api_addr: SocketAddr,
    pub discovery: Option<Discovery>,
    machine_home: Option<PathBuf>,
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
            engines: vec![cfg],
            host,
            port,
            api_host: host,
            api_port,
            surface: Surface::default(),
            mesh: None,
            discovery: None,
            hub: catalog::ResolveOptions::from_env(),
            upstreams: Vec::new(),
            machine_home: None,
        })
        .await
    }

    /// Starts everything `opts` asks for.
    pub async fn start_with(opts: NodeOptions) -> anyhow::Result<Self> {
        Self::start_inner(opts, None).await
    }

    /// Starts everything `opts` asks for, serving `local` (any [`Generate`], e.g. the scripted
    /// fake of `http::fake`) instead of loading `opts.engines`, which must be empty.
    pub async fn start_with_local(
        opts: NodeOptions,
        local: Arc<dyn Generate>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            opts.engines.is_empty(),
            "a node serves either an engine or a given generator"
        );
        Self::start_inner(opts, Some(local)).await
    }

    async fn start_inner(
        opts: NodeOptions,
        given: Option<Arc<dyn Generate>>,
    ) -> anyhow::Result<Self> {
        // An API exposed without a key is refused before anything binds.
        opts.surface.check(opts.host, opts.api_host)?;
        // Bind first: a busy port should fail fast, before a model load.
        let openai = serve::bind(opts.host, opts.port, "--port").await?;
        let api = serve::bind(opts.api_host, opts.api_port, "--api-port").await?;
        let local = LocalSlot::default();
        let cancel = CancellationToken::new();
        if let Some(g) = given {
            let _ = local.set(g);
        } else if !opts.engines.is_empty() {
            let engines = load_engines(opts.engines).await?;
            if let Some(home) = &opts.machine_home {
                for engine in &engines {
                    measure::record_decodes(engine, home.clone(), cancel.clone());
                }
            }
            let engines = engines
                .into_iter()
                .map(|e| Arc::new(e) as Arc<dyn Generate>);
            let _ = local.set_all(engines.collect());
        }
        let mesh = match opts.mesh {
            Some(cfg) => match start_mesh(cfg, &local).await {
                Ok(m) => Some(m),
                Err(e) => {
                    for (g, _) in local.all() {
                        g.shutdown();
                    }
                    return Err(e.into());
                }
            },
            None => None,
        };
        let discovery = opts.discovery.map(Discovery::new);
        if let (Some(d), Some(m)) = (&discovery, &mesh) {
            if d.config().publish {
                d.start_publishing(m, None).await;
            }
        }
        let openai_addr = openai.local_addr()?;
        let api_addr = api.local_addr()?;
        let mut servers = vec![
            serve::spawn(
                openai,
                guard::openai(
                    openai::router(local.clone(), mesh.clone())
                        .merge(ollama::router(local.clone(), mesh.clone())),
                    &opts.surface,
                ),
                cancel.clone(),
            ),
            serve::spawn(
                api,
                guard::management(
                    api::router(local.clone(), mesh.clone(), discovery.clone(), opts.hub),
                    &opts.surface,
                ),
                cancel.clone(),
            ),
        ];
        for base in opts.upstreams {
            let index = local.upstreams().add(base.clone());
            let poll = upstream::poll::run(
                local.upstreams().clone(),
                index,
                base,
                mesh.clone(),
                cancel.clone(),
            );
            servers.push(tokio::spawn(poll));
        }
        Ok(Self {
            local,
            mesh,
            openai_addr,
            api_addr,
            discovery,
            machine_home: opts.machine_home,
            cancel,
            servers,
        })
    }

    /// A handle that serves a model loaded later (see [`ServeLater`]).
    pub fn serve_later(&self) -> ServeLater {
        ServeLater {
            local: self.local.clone(),
            mesh: self.mesh.clone(),
            machine_home: self.machine_home.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Ends in-flight requests with an error, stops accepting connections, waits a little.
    pub async fn shutdown(self) {
        if let Some(d) = &self.discovery {
            d.stop_publishing().await;
        }
        if let Some(mesh) = &self.mesh {
            mesh.shutdown().await;
        }
        for (g, _) in self.local.all() {
            g.shutdown();
        }
        self.cancel.cancel();
        let all = futures::future::join_all(self.servers);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing anyway");
        }
    }
}

/// Lets a task serve a model the node loads after it started (`mesh --auto` joins first, then
/// downloads and loads).
#[derive(Clone)]
pub struct ServeLater {
    local: LocalSlot,
    mesh: Option<Mesh>,
    machine_home: Option<PathBuf>,
    /// The node's: a split served later stops with it (`split::ServeLater::serve_split`).
    cancel: CancellationToken,
}

impl ServeLater {
    /// Serves `engine` from now on; the mesh announces it at once. False when the node serves
    /// a model already.
    pub fn serve(&self, engine: Engine) -> bool {
        let engine = Arc::new(engine);
        if self.local.set(engine.clone()).is_err() {
            return false;
        }
        if let Some(home) = &self.machine_home {
            measure::record_decodes(&engine, home.clone(), self.cancel.clone());
        }
        if let Some(mesh) = &self.mesh {
            mesh.serving_changed();
        }
        true
    }
}

/// Loads a model on a blocking thread (llama.cpp's load is synchronous).
pub async fn load_engine(cfg: EngineConfig) -> anyhow::Result<Engine> {
    Ok(tokio::task::spawn_blocking(move || Engine::start(cfg)).await??)
}

/// Loads every model, one after the other; when one fails, those loaded already are shut
/// down. Two models under one name are refused (a request picks its engine by name).
async fn load_engines(cfgs: Vec<EngineConfig>) -> anyhow::Result<Vec<Engine>> {
    let mut loaded: Vec<Engine> = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        let path = cfg.model_path.clone();
        let result = load_engine(cfg).await.and_then(|engine| {
            let name = &engine.info().name;
            if loaded.iter().any(|g| &g.info().name == name) {
                engine.shutdown();
                anyhow::bail!("two models are named '{name}': give them different names");
            }
            Ok(engine)
        });
        match result {
            Ok(engine) => loaded.push(engine),
            Err(e) => {
                for g in &loaded {
                    g.shutdown();
                }
                return Err(e.context(format!("cannot serve {}", path.display())));
            }
        }
    }
    Ok(loaded)
}

/// Starts the mesh side: peers learn what `local` serves whenever it changes, and requests that
/// arrive over the tunnel are answered by `local` only (they never travel on). The memory
/// announced is the catalog's figure, the one its fit check uses, unless the config sets one.
async fn start_mesh(
    mut cfg: MeshConfig,
    local: &LocalSlot,
) -> Result<Mesh, crate::mesh::MeshError> {
    if cfg.memory_bytes == 0 {
        cfg.memory_bytes = catalog::available_memory();
    }
    let slot = local.clone();
    let serving: ServingFn = Arc::new(move || route::serving(&slot));
    let local_only = openai::router(local.clone(), None);
    Mesh::start(cfg, serving, local_only).await
}

impl Node {
    /// Stops as if killed: no leave message, connections just vanish (failure-detection tests).
    pub async fn kill(self) {
        if let Some(mesh) = &self.mesh {
            mesh.abort().await;
        }
        for (g, _) in self.local.all() {
            g.shutdown();
        }
        self.cancel.cancel();
        for s in self.servers {
            s.abort();
        }
    }
}
