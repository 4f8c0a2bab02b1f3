//! `mesh serve`: turn the flags into [`NodeOptions`], start the node, print the banner, wait for
//! Ctrl-C, shut down. (`--auto` is dispatched to `cmd::auto` instead.)

use anyhow::Context;

use super::args::{JoinTarget, ServeArgs};
use crate::catalog;
use crate::discovery::nostr_io::relay_list;
use crate::discovery::publish::{self, PublishSettings};
use crate::discovery::DiscoveryConfig;
use crate::engine::EngineConfig;
use crate::http::guard::{ApiKey, Surface};
use crate::mesh::proto::peers::PeerEntry;
use crate::mesh::{identity, MeshConfig};
use crate::node::{Node, NodeOptions};
use crate::util::signals::CtrlC;

pub async fn run(mut args: ServeArgs) -> anyhow::Result<()> {
    // Join codes first: a refused code should fail before a model load.
    let tickets = super::p2p::tickets(&args.join, &args.relay.relays, args.lan.lan).await?;
    args.join = tickets.into_iter().map(JoinTarget::Ticket).collect();
    if args.client && !args.upstream.is_empty() {
        anyhow::bail!("--client serves no model; drop --upstream or --client");
    }
    let split = split_config(&args).await?;
    let engines = match (args.models.is_empty(), args.client) {
        (false, true) => anyhow::bail!("--client serves no model; drop --model or --client"),
        (true, false) if !args.upstream.is_empty() || args.split_worker => Vec::new(),
        // Split: the model runs in a child process over the members' memory (node::split).
        (false, false) if split.is_some() => Vec::new(),
        (true, false) => anyhow::bail!(
            "nothing to serve: pass --model NAME|FILE.gguf, --upstream URL of an engine already \
             running, --client to use the mesh's models, or --auto to find a mesh"
        ),
        (false, false) => engine_configs(&args).await?,
        (true, true) => Vec::new(),
    };
    let mesh = mesh_config(&args)?;
    let discovery = discovery_config(&args, &mesh, args.publish)?;
    let mut ctrl_c = CtrlC::listen();
    let used = crate::node::split::engines_need(&engines);
    let mut node = Node::start_with(node_options(&args, engines, mesh, discovery)).await?;
    if let Some(cfg) = split {
        let (parts, name, elect) = (cfg.parts.unwrap_or(0), cfg.name.clone(), cfg.elect);
        crate::node::split::host(&mut node, cfg)?;
        if elect {
            println!(
                "{name} is served split over members that lend memory (--split-worker) once the \
                 mesh has enough; the members that want it elect its host"
            );
        } else {
            println!(
                "splitting {name} over {parts} members once they are in the mesh (--split-worker)"
            );
        }
    }
    if args.split_worker {
        crate::node::split::lend(&node, used)?;
        println!("lending this node's memory to split models (--split-worker)");
    }
    // The APIs answer already; the banner waits a moment so its ticket names the relay.
    if let Some(mesh) = &node.mesh {
        mesh.wait_online(BANNER_RELAY_WAIT).await;
    }
    print_banner(&node);
    wait_ctrl_c(&mut ctrl_c).await?;
    node.shutdown().await;
    Ok(())
}

/// `--split N`: the one `--model`, resolved (downloaded if needed), to run split over members.
/// Without `--split`, one `--model` that does not fit this node's memory is split
/// automatically over the members of the mesh it joins (the members that want it elect the
/// host; `node::split`); a node that joins no mesh refuses it as before.
async fn split_config(args: &ServeArgs) -> anyhow::Result<Option<crate::node::split::SplitConfig>> {
    let auto = args.split.is_none()
        && !args.join.is_empty()
        && args.models.len() == 1
        && args.upstream.is_empty()
        && !args.client;
    if args.split.is_none() && !auto {
        return Ok(None);
    }
    anyhow::ensure!(
        args.models.len() == 1 && args.upstream.is_empty(),
        "--split serves one --model (and no --upstream)"
    );
    let model = catalog::resolve(&args.models[0], &args.hub.resolve_options()).await?;
    if auto && fits_here(args, &model)? {
        return Ok(None);
    }
    Ok(Some(split_of(args, model, auto)))
}

/// Whether `model` fits this node's memory as `args` would serve it; says why not.
fn fits_here(args: &ServeArgs, model: &catalog::ResolvedModel) -> anyhow::Result<bool> {
    let memory = model.memory().context("reading the model's memory needs")?;
    let room = catalog::available_memory();
    match catalog::plan_context(&memory, args.ctx, args.parallel, room) {
        Ok(_) => Ok(true),
        Err(e) => {
            println!("{e}: serving it split over the mesh's members instead");
            Ok(false)
        }
    }
}

fn split_of(
    args: &ServeArgs,
    model: catalog::ResolvedModel,
    elect: bool,
) -> crate::node::split::SplitConfig {
    crate::node::split::SplitConfig {
        name: args.model_name.clone().unwrap_or(model.name),
        model_path: model.path,
        parts: args.split.map(|n| n as usize),
        ctx: args.ctx,
        parallel: args.parallel,
        threads: args.threads,
        elect,
        lend: args.split_worker,
    }
}

/// `mesh --auto`: the automatic split of `spec` when it does not fit this node alone (`None`:
/// it fits, load it here).
pub(crate) async fn auto_split(
    args: &ServeArgs,
    spec: &str,
) -> anyhow::Result<Option<crate::node::split::SplitConfig>> {
    let model = catalog::resolve(spec, &args.hub.resolve_options()).await?;
    if fits_here(args, &model)? {
        return Ok(None);
    }
    Ok(Some(split_of(args, model, true)))
}

/// Longest the banner waits for the home relay, so that the ticket it prints names it.
pub const BANNER_RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits for Ctrl-C (or SIGTERM), then says so.
pub async fn wait_ctrl_c(ctrl_c: &mut CtrlC) -> anyhow::Result<()> {
    ctrl_c.wait().await.context("cannot listen for Ctrl-C")?;
    println!("shutting down");
    Ok(())
}

/// What a `mesh serve` node runs, from its flags and the parts built from them.
pub fn node_options(
    args: &ServeArgs,
    engines: Vec<EngineConfig>,
    mesh: MeshConfig,
    discovery: DiscoveryConfig,
) -> NodeOptions {
    NodeOptions {
        engines,
        host: args.host,
        port: args.port,
        api_host: args.api_host,
        api_port: args.api_port,
        surface: Surface {
            allow_hosts: args.allow_hosts.clone(),
            api_key: args
                .api_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(ApiKey::new),
            cors: args.cors.clone(),
            insecure_no_auth: args.insecure_no_auth,
        },
        mesh: Some(mesh),
        discovery: Some(discovery),
        // Console downloads report on `/api/events`, not on this terminal.
        hub: args.hub.resolve_options_quiet(),
        upstreams: args.upstream.clone(),
        machine_home: Some(crate::util::home::mesh_home()),
    }
}

/// The mesh side of `args` (the node key is loaded or created here).
pub fn mesh_config(args: &ServeArgs) -> anyhow::Result<MeshConfig> {
    let secret_key = if args.ephemeral {
        identity::ephemeral()
    } else {
        let home = crate::util::home::mesh_home();
        identity::load_or_create(&home).context("cannot load the node key")?
    };
    let mut mesh = MeshConfig::new(secret_key);
    for target in &args.join {
        match target {
            JoinTarget::Ticket(t) => mesh.join.push(t.clone()),
            JoinTarget::Code(_) => anyhow::bail!("a join code must be traded for its ticket first"),
        }
    }
    if !args.auto {
        // `--auto` asks the listed nodes for their offers instead (`LanArgs::sources`).
        for (i, entry) in args.lan.peer_entries()?.into_iter().enumerate() {
            match entry {
                PeerEntry::Ticket(t) => mesh.join.push(t),
                PeerEntry::Node(addr) => anyhow::bail!(
                    "peers file: entry {} ({}) is a node address: `mesh serve` joins tickets \
                     (`mesh status` prints one); node addresses are for `mesh discover` and \
                     `mesh --auto`",
                    i + 1,
                    addr.id.fmt_short()
                ),
            }
        }
    }
    mesh.public = args.public;
    mesh.bind = args.mesh_bind;
    mesh.net = args.net.resolve()?;
    args.lan.apply(&mut mesh.net);
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
        publish::load_keys(&crate::util::home::mesh_home()).context("cannot load the Nostr key")?
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
        net: mesh.net.clone(),
        publish,
        local: args.lan.sources()?,
    })
}

pub fn print_banner(node: &Node) {
    let engines: Vec<_> = node.local.all().map(|(g, _)| g.info().clone()).collect();
    let upstreams = node.local.upstreams().bases();
    if engines.is_empty() && upstreams.is_empty() {
        println!(
            "mesh {} (client: serving no model)",
            env!("CARGO_PKG_VERSION")
        );
    } else if engines.is_empty() {
        println!(
            "mesh {} serving upstream engines",
            env!("CARGO_PKG_VERSION")
        );
    }
    for (i, info) in engines.iter().enumerate() {
        if i == 0 {
            println!("mesh {} serving {}", env!("CARGO_PKG_VERSION"), info.name);
        } else {
            println!("  and serving {}", info.name);
        }
        println!(
            "  slots {} x {} tokens, {} threads",
            info.parallel, info.ctx, info.threads
        );
    }
    for base in upstreams {
        println!("  upstream     {base} (its models, polled every 2 s)");
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
        let ticket = mesh.ticket();
        let own = &ticket.peers[0];
        match own.relay_urls().next() {
            Some(url) => println!("  iroh relay   {url}"),
            None => println!("  iroh relay   none (direct addresses only)"),
        }
        let addrs: Vec<String> = own.ip_addrs().map(|a| a.to_string()).collect();
        if addrs.is_empty() {
            println!(
                "  addresses    none public yet (`mesh status --ticket` shows the ticket once known)"
            );
        } else {
            println!("  addresses    {}", addrs.join(" "));
        }
        println!("  ticket       {}", ticket.encode());
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

/// Resolves every `--model` (downloading if needed) and picks contexts with which all of them
/// fit in memory together (`catalog::plan_contexts`). `--model-name` names the first.
pub(crate) async fn engine_configs(args: &ServeArgs) -> anyhow::Result<Vec<EngineConfig>> {
    if args.models.len() == 1 {
        return Ok(vec![engine_config(args, &args.models[0]).await?]);
    }
    let opts = args.hub.resolve_options();
    let mut resolved = Vec::with_capacity(args.models.len());
    for spec in &args.models {
        let model = catalog::resolve(spec, &opts).await?;
        let memory = model
            .memory()
            .with_context(|| format!("reading the memory needs of {spec}"))?;
        resolved.push((model, memory));
    }
    let needs: Vec<_> = resolved.iter().map(|(_, m)| *m).collect();
    let room = catalog::available_memory();
    let ctxs = catalog::plan_contexts(&needs, args.ctx, args.parallel, room).map_err(|e| {
        let which = match &e {
            catalog::FitError::Together { index, .. } => format!(" ({})", args.models[index - 1]),
            _ => String::new(),
        };
        anyhow::Error::new(e).context(format!(
            "the models do not fit in memory together{which}; serve fewer or smaller ones"
        ))
    })?;
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(resolved.len());
    for (i, ((model, memory), ctx)) in resolved.into_iter().zip(ctxs).enumerate() {
        if args.ctx.is_none() && ctx < memory.default_ctx() {
            tracing::warn!(model = %model.name, ctx, "context lowered so that the models fit in memory");
        }
        let name = match (i, &args.model_name) {
            (0, Some(n)) => n.clone(),
            _ => model.name,
        };
        anyhow::ensure!(
            names.insert(name.clone()),
            "two --model are named '{name}'; serve each model once"
        );
        out.push(EngineConfig {
            model_name: Some(name),
            parallel: args.parallel,
            ctx: Some(ctx),
            threads: args.threads,
            queue: args.queue,
            ..EngineConfig::new(model.path)
        });
    }
    Ok(out)
}

/// Resolves `--model` (catalog name, hub ref, URL or path; downloading if needed) and picks a
/// context that fits in memory.
pub(crate) async fn engine_config(args: &ServeArgs, spec: &str) -> anyhow::Result<EngineConfig> {
    let opts = args.hub.resolve_options();
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
