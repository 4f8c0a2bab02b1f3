//! The [`Mesh`] handle's side of messages (`mesh/msg/1`) and of leaving the mesh: sending to
//! one member or all, filing what arrives into the inbox (and the `message` event), and
//! `mesh leave` (tell the peers, stop membership, close the gate: a single node from then on).

use std::time::{Duration, Instant};

use iroh::EndpointId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::net::{membership, msg};
use super::state::inbox::InboxMessage;
use super::{Mesh, MeshEvent, Shared};

/// How sending to one member went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub node_id: String,
    pub name: String,
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Files each received message: the inbox, the `message` event, the inbox watchers.
pub(super) async fn file_received(
    shared: std::sync::Arc<Shared>,
    mut received: mpsc::Receiver<(EndpointId, String)>,
) {
    while let Some((from, text)) = received.recv().await {
        let name = shared
            .with_table(|t| t.get(&from).map(|p| p.ann.name.clone()))
            .unwrap_or_default();
        let msg = InboxMessage {
            seq: 0,
            from: from.to_string(),
            from_name: name,
            text,
            received_ms: crate::util::time::unix_micros() / 1000,
        };
        let kept = match shared.inbox.lock() {
            Ok(mut inbox) => inbox.push(msg),
            Err(_) => continue,
        };
        tracing::info!(from = %from.fmt_short(), seq = kept.seq, "message received");
        shared.inbox_seq.send_replace(kept.seq);
        let _ = shared.events.send(MeshEvent::Message(kept));
    }
}

impl Mesh {
    /// Sends `text` to each of `to` (members' node ids) at once; one report each.
    pub async fn send_message(&self, to: &[EndpointId], text: &str) -> Vec<SendReport> {
        let sends = to.iter().map(|id| async move {
            let result = msg::send(&self.shared.endpoint, *id, text).await;
            let name = self
                .shared
                .with_table(|t| t.get(id).map(|p| p.ann.name.clone()))
                .unwrap_or_default();
            SendReport {
                node_id: id.to_string(),
                name,
                delivered: result.is_ok(),
                error: result.err(),
            }
        });
        futures::future::join_all(sends).await
    }

    /// Members in the peer table now (the targets of `mesh send --all`).
    pub fn peer_ids(&self) -> Vec<EndpointId> {
        self.shared
            .with_table(|t| t.peers().map(|p| p.ann.node).collect())
    }

    /// Messages received with `seq > after`, oldest first (at most the inbox's capacity).
    pub fn inbox(&self, after: u64) -> Vec<InboxMessage> {
        self.shared
            .inbox
            .lock()
            .map(|i| i.after(after))
            .unwrap_or_default()
    }

    /// The `seq` of the newest message; wakes when one arrives.
    pub fn watch_inbox(&self) -> watch::Receiver<u64> {
        self.shared.inbox_seq.subscribe()
    }

    /// Whether this node left its mesh ([`Mesh::leave`]).
    pub fn has_left(&self) -> bool {
        self.shared.gate.is_closed()
    }

    /// Leaves the mesh and stays up as a single node: stops membership (so that no
    /// announcement of it follows its `Leave`), tells the peers (as at shutdown), closes the
    /// gate to every member (their connections too) and empties the peer table. The node's own API goes on serving its model. Returns the peers it had.
    pub async fn leave(&self) -> usize {
        if self.has_left() {
            return 0;
        }
        self.membership_stop.cancel();
        self.broadcast_leave().await;
        self.shared.gate.close_all();
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let changes = self.shared.with_table(|t| t.expire(far, Duration::ZERO));
        let peers = changes
            .iter()
            .filter(|c| matches!(c, super::state::peers::Change::Left(..)))
            .count();
        membership::publish(&self.shared, changes);
        self.shared.roster_changed();
        tracing::info!(peers, "left the mesh; serving on as a single node");
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::state::inbox::SENDER_BURST;

    use crate::mesh::hostile_tests::start;

    #[tokio::test]
    async fn a_member_over_its_message_budget_is_refused_and_nothing_more_is_filed() {
        let a = start(vec![]).await;
        let b = start(vec![a.ticket()]).await;
        let to = [a.node_id()];
        for i in 0..SENDER_BURST {
            let r = b.send_message(&to, &format!("m{i}")).await;
            assert!(r[0].delivered, "{r:?}");
        }
        let r = b.send_message(&to, "one too many").await;
        assert!(!r[0].delivered);
        assert!(
            r[0].error
                .as_deref()
                .unwrap_or_default()
                .contains("too many"),
            "{r:?}"
        );
        let mut seq = a.watch_inbox();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            seq.wait_for(|s| *s >= u64::from(SENDER_BURST)),
        )
        .await;
        let got = a.inbox(0);
        assert_eq!(got.len(), SENDER_BURST as usize);
        assert_eq!(got[0].from, b.node_id().to_string());
        // Too large never leaves the sender.
        let big = "x".repeat(msg::MAX_MESSAGE_BYTES + 1);
        assert!(!b.send_message(&to, &big).await[0].delivered);
        b.abort().await;
        a.abort().await;
    }
}
