//! Split serving: a model spread by layers over members, llama.cpp's RPC traffic carried by
//! `mesh/rpc/1` (docs/PROTOCOL.md).
//!
//! - Worker ([`lend`]): the node answers `mesh/rpc/1` and starts its RPC server (a child, see
//!   `child`) when a host first asks; it announces that it lends, and its free memory.
//! - Host ([`host`]): a supervisor task. It plans (`catalog::split::plan`) from the lending
//!   members' announced free memory, asks each chosen worker to lend, exposes each as a
//!   loopback listener (`mesh::net::rpc::listen`), and starts the model in a child process
//!   over those endpoints. The child is one of the node's upstream engines (`http::upstream`):
//!   its model enters routing when it answers, and leaves it when the split ends. A split ends
//!   when the child exits (llama.cpp aborts when a worker vanishes) or a worker leaves the
//!   mesh; the child is killed, streams in flight end with an error chunk, and the supervisor
//!   plans again over the members left (until members enough are back, requests for the model
//!   get 503).
//! - `--split N` makes this node the host of exactly N parts. A `--model` that does not fit
//!   this node alone is split automatically ([`SplitConfig::elect`]): the node announces that
//!   it wants the model split (with `--split-worker` it lends its memory meanwhile), and hosts
//!   only when the members that want the model elect it (`members::verdict`, `catalog::elect`).

pub mod child;
pub mod members;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::child::{Child, HostArgs};
use self::members::{lenders, short, verdict, Election, Verdict, HOST_GRACE};
use super::Node;
use crate::catalog::split::{plan, Member, Plan};
use crate::catalog::{self, gguf};
use crate::http::upstream::{self, Upstreams};
use crate::mesh::net::rpc;
use crate::mesh::{Mesh, MeshEvent, SplitOffer};

/// A worker that refused (or could not be reached) is left out of plans this long.
pub const REFUSED_FOR: Duration = Duration::from_secs(30);
/// Pause after a split ended before planning again.
pub const REPLAN_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for the mesh to change before planning again anyway (announced memory
/// changes without a roster change).
const PLAN_RETRY: Duration = Duration::from_secs(5);

/// What a host splits.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub model_path: PathBuf,
    /// The model's name in the API.
    pub name: String,
    /// `--split N`: exactly N parts (this node and N − 1 workers); `None`: as few as fit.
    pub parts: Option<usize>,
    pub ctx: Option<u32>,
    pub parallel: u32,
    pub threads: Option<u32>,
    /// Automatic split (the model does not fit this node): host only when elected among the
    /// members that want the model, lend memory otherwise. `false`: this node hosts (`--split`).
    pub elect: bool,
    /// The node also lends its memory (`--split-worker`): an automatic split's candidate lends
    /// to the elected host meanwhile, and stops lending while it hosts.
    pub lend: bool,
}

/// Lends this node's memory to members' splits: its RPC server starts (once, again if it
/// died) when a host asks. It announces so, with its free memory (its room for models less
/// `used_bytes`, what its own models use) and its memory bandwidth. Needs a mesh.
pub fn lend(node: &Node, used_bytes: u64) -> anyhow::Result<()> {
    let mesh = node
        .mesh
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--split-worker needs a mesh"))?;
    mesh.lend_memory(Some(lender()));
    let free = catalog::available_memory().saturating_sub(used_bytes);
    mesh.set_split_offer(SplitOffer {
        lends: true,
        free_memory_bytes: free,
        ..SplitOffer::default()
    });
    tokio::spawn(async move {
        let bandwidth = measure_bandwidth().await;
        let mut offer = mesh.split_offer();
        offer.memory_bandwidth = bandwidth;
        mesh.set_split_offer(offer);
    });
    Ok(())
}

/// What `engines` use of this node's memory (their models' weights, buffers and KV caches), as
/// the fit check counts it; a model whose header cannot be read counts as its file size.
pub fn engines_need(engines: &[crate::engine::EngineConfig]) -> u64 {
    engines
        .iter()
        .map(|e| match gguf::model_memory(&e.model_path) {
            Ok(m) => m.need_bytes(e.ctx.unwrap_or_else(|| m.default_ctx()), e.parallel),
            Err(_) => std::fs::metadata(&e.model_path).map_or(0, |f| f.len()),
        })
        .fold(0, u64::saturating_add)
}

/// This machine's memory bandwidth in bytes per second (cached in the mesh home after the
/// first measurement, `catalog::bandwidth`); 0 when it cannot be measured.
async fn measure_bandwidth() -> u64 {
    let home = crate::util::home::mesh_home();
    tokio::task::spawn_blocking(move || catalog::bandwidth::memory_bandwidth(&home))
        .await
        .map_or(0, |b| b.max(0.0) as u64)
}

/// Starts this node's RPC server when a host asks (once; again if it died).
fn lender() -> rpc::LendFn {
    let server: Arc<tokio::sync::Mutex<Option<Child>>> = Arc::default();
    Arc::new(move || {
        let server = server.clone();
        Box::pin(async move {
            let mut slot = server.lock().await;
            if let Some(c) = slot.as_mut() {
                if c.running() {
                    return Ok(c.addr);
                }
            }
            let c = child::spawn_worker(num_cpus::get_physical()).await?;
            tracing::info!(addr = %c.addr, "split serving: RPC server started");
            let addr = c.addr;
            *slot = Some(c);
            Ok(addr)
        })
    })
}

/// Starts the supervisor that serves `cfg`'s model split over members. Needs a mesh.
pub fn host(node: &mut Node, cfg: SplitConfig) -> anyhow::Result<()> {
    let upstreams = node.local.upstreams().clone();
    let task = supervisor(node.mesh.clone(), upstreams, node.cancel.clone(), cfg)?;
    node.servers.push(tokio::spawn(task.run()));
    Ok(())
}

impl super::ServeLater {
    /// [`host`] for a node started already (`mesh --auto`, whose model turned out not to fit
    /// this node alone); the split stops with the node.
    pub fn serve_split(&self, cfg: SplitConfig) -> anyhow::Result<()> {
        let upstreams = self.local.upstreams().clone();
        let task = supervisor(self.mesh.clone(), upstreams, self.cancel.clone(), cfg)?;
        tokio::spawn(task.run());
        Ok(())
    }
}

fn supervisor(
    mesh: Option<Mesh>,
    upstreams: Upstreams,
    cancel: CancellationToken,
    cfg: SplitConfig,
) -> anyhow::Result<Supervisor> {
    let mesh = mesh.ok_or_else(|| anyhow::anyhow!("--split needs a mesh"))?;
    let meta = gguf::read_meta(&cfg.model_path)?;
    let layers = meta
        .block_count()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow::anyhow!("the model's header has no layer count"))?;
    let memory = gguf::model_memory(&cfg.model_path)?;
    let need = memory.need_bytes(
        cfg.ctx.unwrap_or_else(|| memory.default_ctx()),
        cfg.parallel,
    );
    Ok(Supervisor {
        mesh,
        upstreams,
        cfg,
        layers,
        need,
        cancel,
    })
}

struct Supervisor {
    mesh: Mesh,
    upstreams: Upstreams,
    cfg: SplitConfig,
    layers: u32,
    need: u64,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn run(self) {
        let mut roster = self.mesh.watch_roster();
        let mut refused: HashMap<String, Instant> = HashMap::new();
        let mut index: Option<usize> = None;
        let mut last_problem = String::new();
        let mut election = Election::default();
        if self.cfg.elect {
            self.want().await;
        }
        loop {
            // While it is split or being re-planned, the model answers 503, not 404.
            self.mesh.saw_model(&self.cfg.name);
            refused.retain(|_, at| at.elapsed() < REFUSED_FOR);
            if let Err(standby) = self.elected(&mut election) {
                if standby != last_problem {
                    tracing::info!("not hosting the split of {}: {standby}", self.cfg.name);
                    last_problem = standby;
                }
                if !self.wait_change(&mut roster).await {
                    return;
                }
                continue;
            }
            let outcome = match self.plan(&refused) {
                Ok(p) => {
                    self.lending(false);
                    let served = self.serve(p, &mut index, &mut refused).await;
                    self.lending(true);
                    served
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ended) => tracing::warn!("split of {} ended: {ended}", self.cfg.name),
                Err(problem) => {
                    if problem != last_problem {
                        tracing::warn!("cannot split {} yet: {problem}", self.cfg.name);
                        last_problem = problem;
                    }
                    if !self.wait_change(&mut roster).await {
                        return;
                    }
                    continue;
                }
            }
            last_problem.clear();
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(REPLAN_DELAY) => {}
            }
        }
    }

    /// Waits until the mesh changes, or [`PLAN_RETRY`]; false when the node stops.
    async fn wait_change(&self, roster: &mut tokio::sync::watch::Receiver<u64>) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = roster.changed() => true,
            _ = tokio::time::sleep(PLAN_RETRY) => true,
        }
    }

    /// An automatic split: announces that this node wants the model split (a candidate host),
    /// and with `--split-worker` lends its memory to whichever member is elected. Lending stays
    /// opt-in (docs/SECURITY.md). The bandwidth is measured first: the election reads it.
    async fn want(&self) {
        let bandwidth = measure_bandwidth().await;
        if self.cfg.lend {
            self.mesh.lend_memory(Some(lender()));
        }
        self.mesh.set_split_offer(SplitOffer {
            lends: self.cfg.lend,
            free_memory_bytes: catalog::available_memory(),
            memory_bandwidth: bandwidth,
            wants: vec![self.cfg.name.clone()],
        });
    }

    /// A host that also lends (`--split-worker`) lends nothing while it hosts (its memory holds
    /// its share).
    fn lending(&self, on: bool) {
        if !self.cfg.lend {
            return;
        }
        self.mesh.lend_memory(on.then(lender));
        let mut offer = self.mesh.split_offer();
        offer.lends = on;
        self.mesh.set_split_offer(offer);
    }

    /// This node as the plan and the election see it.
    fn me(&self) -> Member {
        let offer = self.mesh.split_offer();
        Member {
            id: self.mesh.node_id().to_string(),
            free_bytes: if self.cfg.elect {
                offer.free_memory_bytes
            } else {
                catalog::available_memory()
            },
            tokens_per_second: self.mesh.own_announcement().tokens_per_second,
            memory_bandwidth: offer.memory_bandwidth,
            rtt: None,
        }
    }

    /// Whether this node hosts now: always with `--split`; when elected for an automatic split.
    fn elected(&self, election: &mut Election) -> Result<(), String> {
        if !self.cfg.elect {
            return Ok(());
        }
        let now = Instant::now();
        election.forget(now);
        let v = verdict(
            &self.cfg.name,
            self.need,
            &self.me(),
            &self.mesh.peers(),
            |id| election.is_passed_over(id),
        );
        if let Some(id) = election.observe(&v, now) {
            tracing::warn!(
                "{} was elected to host {} {}s ago and does not serve it: passing it over",
                short(&id),
                self.cfg.name,
                HOST_GRACE.as_secs()
            );
        }
        match v {
            Verdict::Host => Ok(()),
            other => Err(format!("{other}; lending memory meanwhile")),
        }
    }

    fn plan(&self, refused: &HashMap<String, Instant>) -> Result<Plan, String> {
        let others = lenders(&self.mesh.peers(), |id| refused.contains_key(id));
        plan(self.need, self.layers, &self.me(), &others, self.cfg.parts).map_err(|e| e.to_string())
    }

    /// Runs one split until it ends (`Ok(why)`), or fails to start it (`Err`).
    async fn serve(
        &self,
        plan: Plan,
        index: &mut Option<usize>,
        refused: &mut HashMap<String, Instant>,
    ) -> Result<String, String> {
        let endpoint = self.mesh.endpoint().clone();
        let mut events = self.mesh.subscribe();
        let split = self.cancel.child_token();
        let _stop = split.clone().drop_guard();
        let mut rpc_endpoints = Vec::new();
        for w in &plan.workers {
            let Ok(id) = w.id.parse::<iroh::EndpointId>() else {
                refused.insert(w.id.clone(), Instant::now());
                return Err(format!("bad node id {}", w.id));
            };
            if let Err(e) = rpc::lend(&endpoint, id, &self.cfg.name).await {
                refused.insert(w.id.clone(), Instant::now());
                return Err(format!("{} does not lend: {e}", id.fmt_short()));
            }
            let addr = rpc::listen(endpoint.clone(), id, split.clone())
                .await
                .map_err(|e| format!("cannot listen on loopback: {e}"))?;
            rpc_endpoints.push(addr.to_string());
        }
        let args = HostArgs {
            model: self.cfg.model_path.clone(),
            name: self.cfg.name.clone(),
            rpc: rpc_endpoints,
            worker_layers: plan.worker_layers(),
            ctx: self.cfg.ctx,
            parallel: self.cfg.parallel,
            threads: self.cfg.threads,
        };
        let mut engine = child::spawn_host(&args)?;
        let shares: Vec<String> = plan
            .workers
            .iter()
            .map(|w| format!("{} layers on {}", w.layers, short(&w.id)))
            .collect();
        tracing::info!(
            "splitting {}: {} layers here, {}",
            self.cfg.name,
            plan.host_layers,
            shares.join(", ")
        );
        let base = upstream::parse_base(&format!("http://{}", engine.addr))?;
        let i = match *index {
            Some(i) => {
                self.upstreams.set_base(i, base.clone());
                i
            }
            None => *index.insert(self.upstreams.add(base.clone())),
        };
        tokio::spawn(upstream::poll::run(
            self.upstreams.clone(),
            i,
            base,
            Some(self.mesh.clone()),
            split.clone(),
        ));
        let workers: Vec<&str> = plan.workers.iter().map(|w| w.id.as_str()).collect();
        let ended = tokio::select! {
            _ = self.cancel.cancelled() => "the node stops".to_owned(),
            status = engine.process.wait() => format!("its engine exited ({})", status.map_or_else(|e| e.to_string(), |s| s.to_string())),
            id = worker_left(&self.mesh, &mut events, &workers) => format!("worker {} left the mesh", short(&id)),
        };
        split.cancel();
        let _ = engine.process.kill().await;
        self.upstreams.set_models(i, Vec::new());
        self.mesh.serving_changed();
        Ok(ended)
    }
}

/// Waits until one of `workers` leaves the mesh; its id.
async fn worker_left(
    mesh: &Mesh,
    events: &mut tokio::sync::broadcast::Receiver<MeshEvent>,
    workers: &[&str],
) -> String {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(MeshEvent::PeerLeft { node_id, .. }) if workers.contains(&node_id.as_str()) => {
                return node_id
            }
            Ok(_) => {}
            // Events were missed: look at the peer table instead.
            Err(RecvError::Lagged(_)) => {
                let peers = mesh.peers();
                if let Some(gone) = workers
                    .iter()
                    .find(|w| !peers.iter().any(|p| p.node_id == **w))
                {
                    return (*gone).to_owned();
                }
            }
            Err(RecvError::Closed) => return std::future::pending().await,
        }
    }
}
