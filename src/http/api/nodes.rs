//! The mesh as the web console shows it:
//! - `GET /api/nodes`: every node, this one first (`this_node`), with its role, region,
//!   models, slots busy/total, path (direct/relay) and RTT.
//! - `GET /api/models`: every model served in the mesh, with its replicas and their load.
//!
//! Both documents are built by pure functions ([`node_rows`], [`mesh_models`]) from this node's
//! own announcement and the peer table, so they are tested without a network.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::http::route;
use crate::mesh::{ConnType, ModelOffer, PeerView, Role};

/// One node of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node_id: String,
    pub name: String,
    /// The node answering this request.
    pub this_node: bool,
    pub role: Role,
    pub region: Option<String>,
    pub models: Vec<ModelOffer>,
    pub slots_busy: u32,
    pub slots_total: u32,
    pub queue_depth: u32,
    pub tokens_per_second: f32,
    /// How this node reaches it; `null` for this node itself.
    pub connection: Option<ConnType>,
    pub rtt_ms: Option<f64>,
}

/// `GET /api/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesDoc {
    pub nodes: Vec<NodeRow>,
}

/// One node serving a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub node_id: String,
    pub name: String,
    pub this_node: bool,
    pub slots_busy: u32,
    pub slots_total: u32,
    pub ctx: u32,
    pub queue_depth: u32,
}

/// A model served in the mesh and its load over all replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshModel {
    pub name: String,
    pub replicas: Vec<Replica>,
    pub slots_busy: u32,
    pub slots_total: u32,
    pub queue_depth: u32,
}

/// `GET /api/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelsDoc {
    pub models: Vec<MeshModel>,
}

/// This node as the console lists it (`id`, `name`, `region` from its mesh, when it has one).
pub struct Own {
    pub node_id: String,
    pub name: String,
    pub region: Option<String>,
    pub models: Vec<ModelOffer>,
    pub queue_depth: u32,
    pub tokens_per_second: f32,
}

fn busy(models: &[ModelOffer]) -> u32 {
    models.iter().fold(0u32, |n, m| {
        n.saturating_add(m.slots.saturating_sub(m.free_slots))
    })
}

fn total(models: &[ModelOffer]) -> u32 {
    models.iter().fold(0u32, |n, m| n.saturating_add(m.slots))
}

/// This node first, then its peers by name (then id). Pure.
pub fn node_rows(own: Own, peers: &[PeerView]) -> Vec<NodeRow> {
    let mut rows = vec![NodeRow {
        role: Role::of(&own.models),
        slots_busy: busy(&own.models),
        slots_total: total(&own.models),
        node_id: own.node_id,
        name: own.name,
        this_node: true,
        region: own.region,
        models: own.models,
        queue_depth: own.queue_depth,
        tokens_per_second: own.tokens_per_second,
        connection: None,
        rtt_ms: None,
    }];
    let mut others: Vec<NodeRow> = peers
        .iter()
        .map(|p| NodeRow {
            node_id: p.node_id.clone(),
            name: p.name.clone(),
            this_node: false,
            role: p.role,
            region: p.region.clone(),
            slots_busy: busy(&p.models),
            slots_total: total(&p.models),
            models: p.models.clone(),
            queue_depth: p.queue_depth,
            tokens_per_second: p.tokens_per_second,
            connection: Some(p.connection),
            rtt_ms: p.rtt_ms,
        })
        .collect();
    others.sort_by(|a, b| (&a.name, &a.node_id).cmp(&(&b.name, &b.node_id)));
    rows.extend(others);
    rows
}

/// Every model the nodes serve, by name, with its replicas (in the nodes' order). A node's
/// queue is shared by its models, so each replica shows the whole queue. Pure.
pub fn mesh_models(nodes: &[NodeRow]) -> Vec<MeshModel> {
    let mut by_name: BTreeMap<&str, MeshModel> = BTreeMap::new();
    for node in nodes {
        for m in &node.models {
            let replica = Replica {
                node_id: node.node_id.clone(),
                name: node.name.clone(),
                this_node: node.this_node,
                slots_busy: m.slots.saturating_sub(m.free_slots),
                slots_total: m.slots,
                ctx: m.ctx,
                queue_depth: node.queue_depth,
            };
            let entry = by_name.entry(&m.name).or_insert_with(|| MeshModel {
                name: m.name.clone(),
                replicas: Vec::new(),
                slots_busy: 0,
                slots_total: 0,
                queue_depth: 0,
            });
            // Peers' figures are hostile input: saturate rather than overflow.
            entry.slots_busy = entry.slots_busy.saturating_add(replica.slots_busy);
            entry.slots_total = entry.slots_total.saturating_add(replica.slots_total);
            entry.queue_depth = entry.queue_depth.saturating_add(replica.queue_depth);
            entry.replicas.push(replica);
        }
    }
    by_name.into_values().collect()
}

/// This node's row, from its mesh announcement (or, without a mesh, what its slot serves).
fn own(state: &ApiState) -> Own {
    match &state.mesh {
        Some(mesh) => {
            let ann = mesh.own_announcement();
            Own {
                node_id: ann.node.to_string(),
                name: ann.name,
                region: ann.region,
                models: ann.models,
                queue_depth: ann.queue_depth,
                tokens_per_second: ann.tokens_per_second,
            }
        }
        None => {
            let serving = route::serving(&state.local);
            Own {
                node_id: String::new(),
                name: "this node".into(),
                region: None,
                models: serving.models,
                queue_depth: serving.queue_depth,
                tokens_per_second: serving.tokens_per_second,
            }
        }
    }
}

fn rows(state: &ApiState) -> Vec<NodeRow> {
    let peers = state.mesh.as_ref().map(|m| m.peers()).unwrap_or_default();
    node_rows(own(state), &peers)
}

pub async fn nodes(State(state): State<ApiState>) -> Json<NodesDoc> {
    Json(NodesDoc {
        nodes: rows(&state),
    })
}

pub async fn models(State(state): State<ApiState>) -> Json<ModelsDoc> {
    Json(ModelsDoc {
        models: mesh_models(&rows(&state)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, free: u32, slots: u32) -> ModelOffer {
        ModelOffer {
            name: name.into(),
            free_slots: free,
            slots,
            ctx: 512,
        }
    }

    fn peer(id: &str, name: &str, models: Vec<ModelOffer>, queue: u32) -> PeerView {
        PeerView {
            node_id: id.into(),
            name: name.into(),
            role: Role::of(&models),
            region: Some("eu".into()),
            models,
            connection: ConnType::Relay,
            rtt_ms: Some(12.5),
            trying_direct: false,
            queue_depth: queue,
            tokens_per_second: 3.0,
            memory_bytes: 0,
            last_seen_ms: 100,
            shares: vec![],
            split: Default::default(),
        }
    }

    fn own_client() -> Own {
        Own {
            node_id: "self".into(),
            name: "me".into(),
            region: None,
            models: vec![],
            queue_depth: 0,
            tokens_per_second: 0.0,
        }
    }

    #[test]
    fn this_node_comes_first_and_peers_by_name_with_slots_summed() {
        let peers = [
            peer("b", "zeta", vec![offer("m", 1, 4)], 0),
            peer("a", "alpha", vec![offer("m", 2, 2), offer("n", 0, 1)], 2),
        ];
        let rows = node_rows(own_client(), &peers);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["me", "alpha", "zeta"]);
        assert!(rows[0].this_node && !rows[1].this_node);
        assert_eq!(rows[0].role, Role::Client);
        assert_eq!(rows[0].connection, None);
        assert_eq!((rows[1].slots_busy, rows[1].slots_total), (1, 3));
        assert_eq!((rows[2].slots_busy, rows[2].slots_total), (3, 4));
        assert_eq!(rows[2].connection, Some(ConnType::Relay));
        assert_eq!(rows[2].rtt_ms, Some(12.5));
    }

    #[test]
    fn a_model_on_two_nodes_has_two_replicas_and_their_load_summed() {
        let own = Own {
            models: vec![offer("m", 0, 2)],
            ..own_client()
        };
        let peers = [
            peer("b", "beta", vec![offer("m", 1, 4)], 3),
            peer("c", "gamma", vec![offer("n", 1, 1)], 0),
        ];
        let models = mesh_models(&node_rows(own, &peers));
        assert_eq!(models.len(), 2);
        let m = &models[0];
        assert_eq!(m.name, "m");
        assert_eq!(m.replicas.len(), 2);
        assert!(m.replicas[0].this_node);
        assert_eq!(m.replicas[1].name, "beta");
        assert_eq!((m.slots_busy, m.slots_total, m.queue_depth), (5, 6, 3));
        assert_eq!(models[1].name, "n");
        assert_eq!(models[1].replicas[0].slots_busy, 0);
    }

    #[test]
    fn a_peer_claiming_more_free_slots_than_it_has_counts_as_idle() {
        let rows = node_rows(own_client(), &[peer("b", "b", vec![offer("m", 9, 2)], 0)]);
        assert_eq!(rows[1].slots_busy, 0);
        assert_eq!(mesh_models(&rows)[0].slots_busy, 0);
    }

    #[test]
    fn huge_slot_counts_from_peers_saturate_instead_of_overflowing() {
        let max = u32::MAX;
        let peers = [
            peer("a", "a", vec![offer("m", 0, max), offer("n", 0, max)], max),
            peer("b", "b", vec![offer("m", 0, max)], max),
        ];
        let rows = node_rows(own_client(), &peers);
        assert_eq!(rows[1].slots_total, max);
        let m = &mesh_models(&rows)[0];
        assert_eq!(
            (m.slots_busy, m.slots_total, m.queue_depth),
            (max, max, max)
        );
    }
}
