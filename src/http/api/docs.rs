//! The management API's documents as types. The server serializes them and `mesh status`,
//! `mesh peers` and `mesh publish` deserialize the same types, so a renamed field is a compile
//! error on both sides rather than a silently empty column.

use serde::{Deserialize, Serialize};

use crate::discovery::nostr_io::RelayReport;
use crate::discovery::publish::PublishState;
use crate::mesh::{PeerView, Role};

/// `GET /api/status` (also the first event of `/api/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub version: String,
    pub role: Role,
    /// The model this node serves (the first, when it serves several); `null` on a client.
    pub model: Option<String>,
    /// Every model this node serves, each with its engine's counters; left out on a client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelStatus>,
    /// Present when this node serves a model: the first model's engine.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineStatus>,
    /// Present when this node is in a mesh.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshStatus>,
}

/// The served model and its engine's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub model_path: std::path::PathBuf,
    pub context_size: u32,
    pub context_train: u32,
    pub threads: u32,
    pub slots: Slots,
    pub queue: Queue,
    pub requests_served: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens reused from a slot's KV cache instead of decoded (prefix reuse).
    #[serde(default)]
    pub prompt_tokens_cached: u64,
    pub tokens_generated: u64,
    pub decode_tokens_per_second: f64,
    pub tokens_per_second_last_minute: f64,
    pub shutting_down: bool,
}

/// One served model in `StatusDoc::models`: its name and its engine's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    #[serde(flatten)]
    pub engine: EngineStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    pub busy: usize,
    pub total: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub length: usize,
    pub capacity: usize,
}

/// This node's mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshStatus {
    pub node_id: String,
    pub mesh_id: String,
    pub mesh_public: bool,
    /// The relay this node is reachable through, once connected (in the ticket too).
    #[serde(default)]
    pub home_relay: Option<String>,
    /// The direct addresses the ticket tells (public ones; LAN ones in a private mesh).
    #[serde(default)]
    pub addrs: Vec<String>,
    pub peers: Vec<PeerView>,
    /// Models served by peers (not counting this node's own).
    pub mesh_models: Vec<String>,
    /// This node left its mesh (`mesh leave`): a single node now, `mesh_id` empty.
    #[serde(default)]
    pub left: bool,
}

/// `GET /api/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersDoc {
    pub peers: Vec<PeerView>,
}

/// `GET /api/ticket` (loopback peers only): the ticket that invites others; a private mesh's
/// ticket holds its secret, which is why it is not in `/api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketDoc {
    pub ticket: String,
    pub mesh_id: String,
    pub mesh_public: bool,
}

/// `POST /api/join {"ticket": "mesh1…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub ticket: String,
}

/// The answer to `POST /api/join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinDoc {
    pub joined: bool,
    pub peers_dialled: usize,
}

/// `POST /api/publish {"relays": [...]}` (an empty list: the node's configured relays).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    #[serde(default)]
    pub relays: Vec<String>,
}

/// `GET|POST|DELETE /api/publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishDoc {
    pub publishing: bool,
    /// While publishing: relays' answers, the last event, the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PublishState>,
    /// After `DELETE`: how each relay took the deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<RelayReport>>,
}

/// The body of every error answer (OpenAI's shape), as clients read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDoc {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_status() -> StatusDoc {
        StatusDoc {
            version: "0.1.0".into(),
            role: Role::Client,
            model: None,
            models: Vec::new(),
            engine: None,
            mesh: None,
        }
    }

    #[test]
    fn a_client_without_a_mesh_has_only_the_common_fields() {
        let v = serde_json::to_value(client_status()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"version": "0.1.0", "role": "client", "model": null})
        );
        assert_eq!(
            serde_json::from_value::<StatusDoc>(v).unwrap(),
            client_status()
        );
    }

    #[test]
    fn engine_and_mesh_fields_sit_at_the_top_level_and_read_back() {
        let doc = StatusDoc {
            role: Role::Host,
            model: Some("m".into()),
            engine: Some(EngineStatus {
                model_path: "/m.gguf".into(),
                context_size: 512,
                context_train: 8192,
                threads: 2,
                slots: Slots { busy: 1, total: 4 },
                queue: Queue {
                    length: 0,
                    capacity: 64,
                },
                requests_served: 3,
                prompt_tokens: 10,
                prompt_tokens_cached: 4,
                tokens_generated: 20,
                decode_tokens_per_second: 90.5,
                tokens_per_second_last_minute: 1.5,
                shutting_down: false,
            }),
            mesh: Some(MeshStatus {
                node_id: "n".into(),
                mesh_id: "id".into(),
                mesh_public: true,
                home_relay: Some("https://relay.example./".into()),
                addrs: vec!["198.51.100.7:4000".into()],
                peers: Vec::new(),
                mesh_models: vec!["other".into()],
                left: false,
            }),
            ..client_status()
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["slots"]["busy"], 1);
        assert_eq!(v["context_size"], 512);
        assert_eq!(v["mesh_models"][0], "other");
        assert_eq!(v["home_relay"], "https://relay.example./");
        assert!(
            v.get("ticket").is_none(),
            "the ticket has its own loopback-only route"
        );
        assert_eq!(serde_json::from_value::<StatusDoc>(v).unwrap(), doc);
    }

    #[test]
    fn publish_doc_leaves_out_what_it_does_not_have() {
        let doc = PublishDoc {
            publishing: false,
            state: None,
            deleted: None,
        };
        assert_eq!(
            serde_json::to_value(&doc).unwrap(),
            serde_json::json!({"publishing": false})
        );
    }
}
