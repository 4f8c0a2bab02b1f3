//! `mesh --auto` (= `mesh serve --auto`): discover → score → probe → join the best public mesh,
//! or start a new public mesh and publish it when none fits. A serving node then picks what to
//! serve from the mesh's demand and its memory (`discovery::demand`), downloads it and loads it;
//! the OpenAI API answers with the mesh's models from the moment the mesh is joined.
//!
//! When the mesh empties, a client looks for another mesh; a serving node stays and publishes
//! its (now own) mesh so that others can find it.
//!
//! The decisions are `node::auto`'s [`Policy`]; this file only carries them out (browse, start
//! the node, load the model, publish, shut down), waits for what the policy waits for (the
//! mesh's events, one deadline, Ctrl-C) and prints.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;

use super::args::ServeArgs;
use super::choice::{candidates, catalog_rows, split_room};
use super::models::human_speed;
use super::serve;
use crate::catalog::listing::ModelRow;
use crate::catalog::speed::Machine;
use crate::discovery::browse::{self, Browse, BrowseOptions};
use crate::discovery::demand::{self, Candidate, Choice};
use crate::discovery::local::LocalSources;
use crate::discovery::nostr_io::relay_list;
use crate::discovery::offer::Offer;
use crate::discovery::score::{self, Preferences, Scored};
use crate::discovery::verify::{offer_contradicted, Witness};
use crate::discovery::{load_last_mesh, save_last_mesh, untrusted};
use crate::mesh::{MeshConfig, MeshError, MeshEvent};
use crate::node::auto::{Action, Config, Event, Message, Policy};
use crate::node::{load_engine, Node, ServeLater};
use crate::util::signals::CtrlC;
use crate::util::time::unix_secs;

/// The offer `--auto` picked, with its score (for the `auto: joining` lines).
#[derive(Debug, Clone)]
struct Pick {
    offer: Offer,
    scored: Scored,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.models.len() <= 1,
        "--auto serves one model: give --model once (several models: `mesh serve --model A --model B`)"
    );
    let mut policy = Policy::new(Config {
        client: args.client,
        publish: args.publish,
        verify_offers: true,
    });
    let mut auto = Auto::new(args)?;
    let mut todo: VecDeque<Action<Pick>> = policy.start().into();
    loop {
        while let Some(action) = todo.pop_front() {
            if let Some(event) = auto.execute(action).await? {
                todo.extend(policy.handle(event));
            }
        }
        if policy.stopped() {
            return Ok(());
        }
        // Nothing to do until something happens: a peer comes or goes, a deadline, Ctrl-C.
        let event = auto.next_event(policy.deadline()).await?;
        todo.extend(policy.handle(event));
    }
}

/// What `--auto` works with: the flags, the relays, the catalog models this machine can serve,
/// and the node while it runs.
struct Auto {
    args: ServeArgs,
    home: PathBuf,
    relays: Vec<nostr::RelayUrl>,
    /// Where to look besides the relays (`--lan`, `--peers FILE`).
    local: LocalSources,
    /// The catalog with fit and speed here (empty for a client).
    rows: Vec<ModelRow>,
    candidates: Vec<Candidate>,
    /// This machine's figures (`None` for a client).
    machine: Option<Machine>,
    ctrl_c: CtrlC,
    /// The running node, if any.
    session: Option<Session>,
    /// Why the node did not start, until the policy says what to do about it.
    failure: Option<anyhow::Error>,
}

/// A node in a mesh, and what `--auto` started for it.
struct Session {
    node: Node,
    /// The mesh's events; `None` once the mesh has closed them.
    events: Option<broadcast::Receiver<MeshEvent>>,
    /// What the joined mesh said about itself (`None` in a mesh of our own).
    offer: Option<Offer>,
    /// The background download and load of the model to serve.
    loader: Option<JoinHandle<()>>,
    /// Every member gossip has shown since joining, to check the offer against.
    witness: Witness,
}

impl Auto {
    fn new(args: ServeArgs) -> anyhow::Result<Self> {
        let relays = relay_list(&args.relay.relays).map_err(anyhow::Error::msg)?;
        let home = crate::util::home::mesh_home();
        let (rows, candidates, machine) = if args.client {
            (Vec::new(), Vec::new(), None)
        } else {
            let (rows, machine) = catalog_rows(&args.hub.resolve_options(), &home, args.sizing())?;
            let candidates = candidates(&rows, args.min_speed);
            (rows, candidates, Some(machine))
        };
        let local = args.lan.sources()?;
        Ok(Self {
            args,
            home,
            relays,
            local,
            rows,
            candidates,
            machine,
            ctrl_c: CtrlC::listen(),
            session: None,
            failure: None,
        })
    }

    /// Does what the policy says; some actions end with an event for it.
    async fn execute(&mut self, action: Action<Pick>) -> anyhow::Result<Option<Event<Pick>>> {
        Ok(match action {
            Action::Browse => Some(self.browse().await?),
            Action::Join { offer, publish } => Some(self.join(offer, publish).await?),
            Action::StartNewMesh => Some(self.start_new_mesh().await?),
            Action::ChooseAndLoadModel => self.choose_and_load_model().await?,
            Action::StartPublishing => {
                self.start_publishing().await;
                None
            }
            Action::CheckOffer => Some(self.check_offer()),
            Action::Distrust { reason } => {
                self.distrust(&reason);
                None
            }
            Action::Leave | Action::Stop => {
                self.leave().await;
                None
            }
            Action::Say(message) => {
                self.say(message);
                None
            }
            Action::Fail => {
                return Err(self
                    .failure
                    .take()
                    .unwrap_or_else(|| anyhow::anyhow!("the node did not start")))
            }
        })
    }

    /// Browse → score → pick: the offer to join, if any fits.
    async fn browse(&mut self) -> anyhow::Result<Event<Pick>> {
        let n = self.relays.len();
        let mut also = String::new();
        if self.local.lan.is_some() {
            also.push_str(", on the LAN");
        }
        if !self.local.peers.is_empty() {
            also.push_str(&format!(", at {} listed node(s)", self.local.peers.len()));
        }
        println!(
            "auto: looking for meshes on {n} relay{}{also}",
            if n == 1 { "" } else { "s" }
        );
        let last_mesh = load_last_mesh(&self.home);
        let found = tokio::select! {
            found = discover(&self.args, &self.relays, &self.local, &self.candidates, last_mesh, &self.home) => found,
            r = serve::wait_ctrl_c(&mut self.ctrl_c) => return r.map(|()| Event::CtrlC),
        };
        let best = score::pick(&found.ranked, &mut rand::rng()).map(|s| Pick {
            offer: found.offer(s).clone(),
            scored: s.clone(),
        });
        Ok(Event::Found {
            best,
            now: Instant::now(),
        })
    }

    /// Starts the node in the mesh of the offer picked.
    async fn join(&mut self, pick: Pick, publish: bool) -> anyhow::Result<Event<Pick>> {
        let mut mesh = serve::mesh_config(&self.args)?;
        let Pick { offer, scored } = pick;
        println!(
            "auto: joining {:?} (mesh {}), score {:.1}",
            offer.content.name, offer.mesh_id, scored.score
        );
        for line in browse::explain_lines(&scored) {
            println!("        {line}");
        }
        mesh.join = offer.ticket.clone().into_iter().collect();
        self.start_node(mesh, publish, Some(offer)).await
    }

    /// Starts the node in a new public mesh, published.
    async fn start_new_mesh(&mut self) -> anyhow::Result<Event<Pick>> {
        let mut mesh = serve::mesh_config(&self.args)?;
        mesh.public = true;
        self.start_node(mesh, true, None).await
    }

    async fn start_node(
        &mut self,
        mesh: MeshConfig,
        publish: bool,
        offer: Option<Offer>,
    ) -> anyhow::Result<Event<Pick>> {
        let discovery = serve::discovery_config(&self.args, &mesh, publish)?;
        let opts = serve::node_options(&self.args, Vec::new(), mesh, discovery);
        let node = match Node::start_with(opts).await {
            Ok(node) => node,
            Err(e) => {
                // The mesh refused or failed us, as opposed to a local problem (a busy port).
                let mesh_refused = e.downcast_ref::<MeshError>().is_some();
                self.failure = Some(e);
                let now = Instant::now();
                return Ok(Event::StartFailed { mesh_refused, now });
            }
        };
        let joined = node.mesh.as_ref().context("node without a mesh")?;
        save_last_mesh(&self.home, joined.mesh_id());
        // Subscribe before counting: a peer that arrives in between is not missed.
        let events = joined.subscribe();
        let mut witness = Witness::default();
        witness.note(joined.peers());
        let peers = joined.peers().len();
        serve::print_banner(&node);
        self.session = Some(Session {
            node,
            events: Some(events),
            offer,
            loader: None,
            witness,
        });
        let now = Instant::now();
        Ok(Event::Started { peers, now })
    }

    /// Choose the model → resolve/download → load, in the background; the node serves the
    /// mesh's models meanwhile. A model the mesh wants that is too big for this node alone is
    /// a choice when the members that lend memory can hold it, fast enough, split. With no
    /// choice, answers [`Event::NothingToServe`] (the reason kept as `failure`).
    async fn choose_and_load_model(&mut self) -> anyhow::Result<Option<Event<Pick>>> {
        let session = self.session.as_ref().context("no node to serve with")?;
        let offer = session.offer.as_ref().map(|o| &o.content);
        let model = self.args.model();
        let room = match (model, offer, &session.node.mesh, self.machine) {
            (None, Some(offer), Some(mesh), Some(machine)) => {
                let min = self.args.min_speed;
                split_room(mesh, offer, &self.candidates, machine, min).await
            }
            _ => None,
        };
        let chosen = demand::choose_model(model, offer, &self.candidates, room.as_ref());
        let Some(Choice {
            model,
            reason,
            split,
        }) = chosen
        else {
            self.failure = Some(anyhow::anyhow!(
                "no catalog model fits this machine's memory and decodes at {} tok/s or more \
                 here (see `mesh models --fits`); run with --client to use the mesh without \
                 serving, lower --min-speed, or pick one with --model",
                self.args.min_speed
            ));
            return Ok(Some(Event::NothingToServe));
        };
        let speed = match split {
            Some(s) => format!(", ~{} tok/s expected split", human_speed(s.tokens_per_sec)),
            None => self
                .rows
                .iter()
                .find(|r| r.entry.name == model)
                .and_then(|r| r.speed)
                .map_or(String::new(), |s| {
                    format!(", ~{} tok/s expected here", human_speed(s.tokens_per_sec))
                }),
        };
        println!("auto: serving {model} ({reason}){speed}; loading it in the background");
        let session = self.session.as_mut().context("no node to serve with")?;
        let node = session.node.serve_later();
        session.loader = Some(tokio::spawn(load_and_serve(self.args.clone(), model, node)));
        Ok(None)
    }

    /// Publishes the mesh the node is alone in, unless it already is published.
    async fn start_publishing(&self) {
        let Some(session) = &self.session else { return };
        let (Some(d), Some(mesh)) = (&session.node.discovery, &session.node.mesh) else {
            return;
        };
        if d.publish_state().await.is_none() {
            println!("auto: this node is alone in its mesh; publishing it");
            d.start_publishing(mesh, None).await;
        }
    }

    /// Compares the joined mesh's offer with what gossip has shown of its members.
    fn check_offer(&mut self) -> Event<Pick> {
        self.note_members();
        let contradiction = self.session.as_ref().and_then(|s| {
            let offer = s.offer.as_ref()?;
            offer_contradicted(&offer.content, &s.witness.observed())
        });
        Event::OfferChecked {
            contradiction,
            now: Instant::now(),
        }
    }

    /// Notes the members the mesh shows now (for the offer's check).
    fn note_members(&mut self) {
        if let Some(s) = self.session.as_mut() {
            if let Some(mesh) = &s.node.mesh {
                s.witness.note(mesh.peers());
            }
        }
    }

    /// Remembers the joined offer's publisher and node as untrusted, and says why.
    fn distrust(&self, reason: &str) {
        let Some(offer) = self.session.as_ref().and_then(|s| s.offer.as_ref()) else {
            return;
        };
        let file = self.home.join(untrusted::UNTRUSTED_FILE);
        if let Err(e) = untrusted::record(&self.home, offer, reason, unix_secs()) {
            eprintln!("warning: cannot write {}: {e}", file.display());
        }
        eprintln!(
            "warning: leaving {:?} (mesh {}): {reason}; its publisher and node {} are untrusted \
             for {} h ({})",
            offer.content.name,
            offer.mesh_id,
            offer.node.fmt_short(),
            untrusted::UNTRUSTED_FOR_SECS / 3600,
            file.display()
        );
    }

    /// Stops the model load and shuts the node down (peers told, offer deleted).
    async fn leave(&mut self) {
        if let Some(session) = self.session.take() {
            if let Some(l) = session.loader {
                l.abort();
            }
            session.node.shutdown().await;
        }
    }

    fn say(&self, message: Message) {
        match message {
            Message::NoMeshYet { retry } => println!(
                "auto: no mesh to join yet; looking again in {}s (Ctrl-C to stop)",
                retry.as_secs()
            ),
            Message::NoMeshFits => {
                println!("auto: no mesh fits; starting a new public mesh and publishing it")
            }
            Message::CannotJoin { retry } => {
                let e = self.failure.as_ref().map(|e| format!("{e:#}"));
                eprintln!(
                    "warning: cannot join that mesh: {}; looking again in {}s",
                    e.unwrap_or_default(),
                    retry.as_secs()
                );
            }
            Message::Emptied => println!("auto: the mesh has emptied; looking for another"),
            Message::OfferConfirmed => println!("auto: gossip agrees with the mesh's offer"),
            Message::ClientFromNowOn => {
                let e = self.failure.as_ref().map(|e| format!("{e:#}"));
                eprintln!(
                    "warning: {}; staying in the mesh as a client",
                    e.unwrap_or_else(|| "nothing to serve here".into())
                );
            }
        }
    }

    /// Waits for what the policy waits for: Ctrl-C, its deadline, or the mesh's peers to
    /// change (re-read after every mesh event, or after missing some).
    async fn next_event(&mut self, deadline: Option<Instant>) -> anyhow::Result<Event<Pick>> {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let events = self.session.as_mut().and_then(|s| s.events.as_mut());
        let changed = async {
            match events {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = serve::wait_ctrl_c(&mut self.ctrl_c) => r.map(|()| Event::CtrlC),
            _ = sleep => Ok(Event::Timer { now: Instant::now() }),
            r = changed => {
                if let Err(RecvError::Closed) = r {
                    if let Some(s) = self.session.as_mut() {
                        s.events = None;
                    }
                }
                self.note_members();
                Ok(self.peers_now())
            }
        }
    }

    /// The peer count as the mesh has it now.
    fn peers_now(&self) -> Event<Pick> {
        let count = self
            .session
            .as_ref()
            .and_then(|s| s.node.mesh.as_ref())
            .map_or(0, |m| m.peers().len());
        Event::PeersChanged {
            count,
            now: Instant::now(),
        }
    }
}

/// Resolves (downloading if needed) and loads `model`, then serves it: peers see it at once (a
/// change is announced at the next sweep). A failure leaves the node in the mesh as a client.
async fn load_and_serve(args: ServeArgs, model: String, node: ServeLater) {
    let started = Instant::now();
    // A model too big for this node alone is split over the mesh's members instead.
    match serve::auto_split(&args, &model).await {
        Ok(Some(cfg)) => {
            let name = cfg.name.clone();
            match node.serve_split(cfg) {
                Ok(()) => println!(
                    "auto: {name} is served split over members that lend memory (--split-worker) \
                     once the mesh has enough (the members that want it elect its host)"
                ),
                Err(e) => {
                    eprintln!("error: cannot split {name}: {e:#}; staying in the mesh as a client")
                }
            }
            return;
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: cannot serve {model}: {e:#}; staying in the mesh as a client");
            return;
        }
    }
    let loaded = async {
        let cfg = serve::engine_config(&args, &model).await?;
        load_engine(cfg).await
    };
    match loaded.await {
        Ok(engine) => {
            let name = engine.info().name.clone();
            if node.serve(engine) {
                println!(
                    "auto: {name} loaded in {:.1}s; serving it to the mesh",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Err(e) => eprintln!("error: cannot serve {model}: {e:#}; staying in the mesh as a client"),
    }
}

pub(super) async fn discover(
    args: &ServeArgs,
    relays: &[nostr::RelayUrl],
    local: &LocalSources,
    candidates: &[Candidate],
    last_mesh: Option<crate::mesh::MeshId>,
    home: &std::path::Path,
) -> Browse {
    let prefs = Preferences {
        model: requested_id(args),
        region: args.region.clone(),
        min_memory_bytes: 0,
        last_mesh,
        client: args.client,
        servable: candidates
            .iter()
            .filter(|c| c.fits)
            .map(|c| c.name.clone())
            .collect(),
        joinable_only: true,
        untrusted: untrusted::load(home, unix_secs()),
        now: unix_secs(),
    };
    let mut net = args.net.resolve().unwrap_or_default();
    args.lan.apply(&mut net);
    net.mdns = false;
    let found = browse::browse(&BrowseOptions {
        relays: relays.to_vec(),
        // Not filtered by model at the relays: a mesh that only wants the model qualifies too.
        query: Default::default(),
        prefs,
        probe: true,
        net,
        local: local.clone(),
    })
    .await;
    if let Some(w) = found.relay_warning() {
        eprintln!("warning: {w}");
    }
    let eligible = found.ranked.iter().filter(|s| s.eligible()).count();
    let line = format!(
        "auto: {} offer(s), {} joinable, {} rejected",
        found.report.offers.len(),
        eligible,
        found.report.rejected_total()
    );
    // `--dry-run --json` keeps stdout for the JSON document.
    if args.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    found
}

/// The model id `--model` will be served or looked for under: `--model-name`, else a catalog
/// name as it is, else the id of a .gguf file's name (a path, URL or hub reference).
fn requested_id(args: &ServeArgs) -> Option<String> {
    let spec = args.model()?;
    if let Some(name) = &args.model_name {
        return Some(name.clone());
    }
    Some(if spec.to_ascii_lowercase().ends_with(".gguf") {
        crate::util::model_id::model_id_from_file(spec)
    } else {
        spec.to_owned()
    })
}
