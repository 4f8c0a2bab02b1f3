//! What the mesh shows the layers above: peers as the management API lists them, and the
//! changes `GET /api/events` streams. Serde both ways, so API clients read the same types.

use serde::{Deserialize, Serialize};

use super::proto::announce::{ModelOffer, Role, SplitOffer};
use super::state::inbox::InboxMessage;
use super::state::peers::ConnType;

/// What happened in the mesh, for `GET /api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MeshEvent {
    PeerJoined {
        node_id: String,
    },
    PeerLeft {
        node_id: String,
        reason: String,
    },
    ModelAdded {
        model: String,
    },
    ModelRemoved {
        model: String,
    },
    /// The connection to a peer switched between relay and direct (e.g. hole punching worked).
    PathChanged {
        node_id: String,
        from: ConnType,
        to: ConnType,
        rtt_ms: Option<f64>,
    },
    /// A member sent this node a message (`mesh send`); also in `/api/inbox`.
    Message(InboxMessage),
}

impl MeshEvent {
    /// The SSE event name: the `type` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Self::PeerJoined { .. } => "peer_joined",
            Self::PeerLeft { .. } => "peer_left",
            Self::ModelAdded { .. } => "model_added",
            Self::ModelRemoved { .. } => "model_removed",
            Self::PathChanged { .. } => "path_changed",
            Self::Message(_) => "message",
        }
    }
}

/// A peer as the management API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub node_id: String,
    pub name: String,
    pub role: Role,
    pub region: Option<String>,
    pub models: Vec<ModelOffer>,
    pub connection: ConnType,
    pub rtt_ms: Option<f64>,
    /// Relayed now, with a direct path being tried (hole punching).
    #[serde(default)]
    pub trying_direct: bool,
    pub queue_depth: u32,
    pub tokens_per_second: f32,
    pub memory_bytes: u64,
    pub last_seen_ms: u64,
    /// TCP services the peer shares (`mesh share`), by name; `mesh connect NAME` uses one.
    #[serde(default)]
    pub shares: Vec<String>,
    /// What split serving reads of the peer (lending, free memory, wanted split models).
    #[serde(default)]
    pub split: SplitOffer,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_serde_tags() {
        for ev in [
            MeshEvent::PeerJoined {
                node_id: "a".into(),
            },
            MeshEvent::PeerLeft {
                node_id: "a".into(),
                reason: "left".into(),
            },
            MeshEvent::ModelAdded { model: "m".into() },
            MeshEvent::ModelRemoved { model: "m".into() },
            MeshEvent::PathChanged {
                node_id: "a".into(),
                from: ConnType::Relay,
                to: ConnType::Direct,
                rtt_ms: Some(1.5),
            },
            MeshEvent::Message(InboxMessage {
                seq: 1,
                from: "a".into(),
                from_name: "n".into(),
                text: "hi".into(),
                received_ms: 5,
            }),
        ] {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(v["type"], ev.name());
            assert_eq!(serde_json::from_value::<MeshEvent>(v).unwrap(), ev);
        }
    }
}
