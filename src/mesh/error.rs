//! Why the mesh side of a node could not start or join.

use super::proto::admission::AdmitError;
use super::proto::ticket::{MeshId, TicketError};

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error(transparent)]
    Ticket(#[from] TicketError),
    #[error("the tickets name different meshes ({0} and {1}); join one mesh at a time")]
    MixedTickets(MeshId, MeshId),
    #[error("this node is in mesh {ours}; the ticket is for mesh {theirs}")]
    OtherMesh { ours: MeshId, theirs: MeshId },
    #[error("cannot start the iroh endpoint: {0}")]
    Bind(String),
    #[error("not admitted to the mesh: {0}")]
    Refused(AdmitError),
    #[error("cannot join the gossip topic: {0}")]
    Gossip(String),
}
