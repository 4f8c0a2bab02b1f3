//! Starting a node's mesh: the endpoint, iroh's router with one ALPN per protocol, admission
//! to the tickets' nodes, the gossip topic, and the background tasks (membership, messages).

use super::*;

impl Mesh {
    /// Starts the endpoint and protocols, joins the tickets' mesh (or starts a new one).
    /// `serving` says what this node serves (nothing: a client, until a model is loaded);
    /// `tunnel_app` answers requests that arrive over the tunnel (the node's local-only API).
    pub async fn start(
        cfg: MeshConfig,
        serving: ServingFn,
        tunnel_app: axum::Router,
    ) -> Result<Self, MeshError> {
        let mut cfg = cfg;
        let keys = cfg.keys()?;
        let (tell, dial) = (
            cfg.net.tell_policy(keys.is_public()),
            cfg.net.dial_policy(keys.is_public()),
        );
        for t in &mut cfg.join {
            *t = dialable(t, &dial);
        }
        let gate = Gate::default();
        let (hooks, admit_requests) = gate::hooks(gate.clone());
        let lookup = MemoryLookup::new();
        for addr in cfg.join.iter().flat_map(|t| &t.peers) {
            lookup.add_endpoint_info(addr.clone());
        }
        let endpoint = endpoint::bind(&cfg, hooks, lookup.clone()).await?;
        let cancel = CancellationToken::new();
        let admitter = tokio::spawn(admit::run_admitter(
            endpoint.clone(),
            keys,
            gate.clone(),
            admit_requests,
            cancel.clone(),
        ));
        let gossip = Gossip::builder()
            .max_message_size(announce::MAX_MESSAGE_BYTES)
            .broadcast_config(super::gossip_config::plumtree_config())
            .membership_config(super::gossip_config::hyparview_config())
            .spawn(endpoint.clone());
        let offer = OfferSlot::default();
        let (msg_server, received) = net::msg::MsgServer::new();
        let shares = net::tcp_share::Shares::new(cancel.child_token());
        let rpc = net::rpc::RpcServer::default();
        let roster = net::roster::RosterServer::default();
        let router = protocols(
            &endpoint, keys, &gate, &gossip, tunnel_app, &offer, msg_server, &rpc,
        )
        .accept(
            net::tcp_share::ALPN,
            net::tcp_share::ShareServer {
                shares: shares.clone(),
            },
        )
        .accept(net::roster::ALPN, roster.clone())
        .spawn();
        let joined = join_topic(&endpoint, &gossip, &cfg.join, keys, &gate).await;
        let (sender, receiver) = match joined {
            Ok(topic) => topic,
            Err(e) => {
                // Nothing may outlive a failed start: the router owns the endpoint.
                cancel.cancel();
                admitter.abort();
                let _ = router.shutdown().await;
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            secret_key: cfg.secret_key.clone(),
            keys,
            timers: cfg.timers,
            name: cfg.name.clone(),
            region: cfg.region.clone(),
            serving,
            tunnel: Tunnel::new(endpoint.clone(), gate.clone()),
            endpoint,
            gate,
            lookup,
            table: Mutex::default(),
            outstanding: Mutex::default(),
            affinity: Mutex::default(),
            health: Mutex::default(),
            health_changed: watch::channel(0).0,
            known_models: Mutex::default(),
            flood: Mutex::default(),
            member: Mutex::new(member(&cfg)),
            events: broadcast::channel(256).0,
            roster: watch::channel(0).0,
            own_models: Mutex::default(),
            announce_now: tokio::sync::Notify::new(),
            memory_bytes: cfg.memory_bytes,
            tell,
            dial,
            relays_configured: !cfg.net.relays.urls().is_empty(),
            offer,
            inbox: Mutex::default(),
            inbox_seq: watch::channel(0).0,
            shares,
            rpc,
            gossip_stalls: Default::default(),
            leaving: Default::default(),
            roster_seen: watch::channel(false).0,
            split_offer: Mutex::default(),
        });
        let weak = Arc::downgrade(&shared);
        let _ = roster.source.set(Box::new(move || {
            weak.upgrade().and_then(|s| s.signed_roster())
        }));
        let filing = tokio::spawn(messages::file_received(shared.clone(), received));
        let membership_stop = cancel.child_token();
        let membership = tokio::spawn(membership::run(
            shared.clone(),
            sender.clone(),
            receiver,
            membership_stop.clone(),
        ));
        Ok(Self {
            shared,
            router,
            sender,
            cancel,
            membership_stop,
            tasks: Arc::new(Mutex::new(vec![admitter, membership, filing])),
        })
    }
}

/// This node's membership state: one that joins no one starts the mesh.
fn member(cfg: &MeshConfig) -> Member {
    let mut member = Member::new(cfg.secret_key.public(), cfg.timers);
    if cfg.join.is_empty() {
        member.started_mesh();
    }
    member
}

/// `ticket` with only the addresses `policy` lets this node dial.
pub(super) fn dialable(ticket: &Ticket, policy: &AddrPolicy) -> Ticket {
    Ticket {
        peers: ticket.peers.iter().map(|a| policy.tidy(a)).collect(),
        ..ticket.clone()
    }
}

/// The protocols on iroh's router, one ALPN each (the caller adds more, then spawns it).
#[allow(clippy::too_many_arguments)]
fn protocols(
    endpoint: &Endpoint,
    keys: MeshKeys,
    gate: &Gate,
    gossip: &Gossip,
    tunnel_app: axum::Router,
    offer: &OfferSlot,
    msg: net::msg::MsgServer,
    rpc: &net::rpc::RpcServer,
) -> iroh::protocol::RouterBuilder {
    let admission = Admission {
        keys,
        gate: gate.clone(),
        me: endpoint.id(),
    };
    Router::builder(endpoint.clone())
        .accept(admission::ALPN, admission)
        .accept(iroh_gossip::ALPN, gossip.clone())
        .accept(tunnel::ALPN, TunnelServer::new(tunnel_app))
        .accept(ping::ALPN, ping::PingServer)
        .accept(net::msg::ALPN, msg)
        .accept(net::rpc::ALPN, rpc.clone())
        .accept(
            net::offer::ALPN,
            OfferServer {
                slot: offer.clone(),
            },
        )
}

/// Proves membership to the tickets' nodes, then joins the mesh's gossip topic through them.
async fn join_topic(
    endpoint: &Endpoint,
    gossip: &Gossip,
    tickets: &[Ticket],
    keys: MeshKeys,
    gate: &Gate,
) -> Result<
    (
        iroh_gossip::api::GossipSender,
        iroh_gossip::api::GossipReceiver,
    ),
    MeshError,
> {
    let bootstrap = admit::admit_to_tickets(endpoint, tickets, &keys, gate).await?;
    let topic = gossip
        .subscribe(TopicId::from_bytes(keys.topic()), bootstrap)
        .await
        .map_err(|e| MeshError::Gossip(e.to_string()))?;
    Ok(topic.split())
}
