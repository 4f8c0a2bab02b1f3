//! Publishers caught lying: a small list in the mesh home (`untrusted.json`), kept by
//! `mesh --auto` when gossip contradicts the offer of a mesh it joined (`verify`), read by the
//! scorer (`Preferences::untrusted`), which excludes their offers from then on, and shown by
//! `mesh discover`. An entry names the offer's Nostr key *and* its bound node, so neither a new
//! Nostr key for the same node nor a new node under the same key escapes it.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries, each for [`UNTRUSTED_FOR_SECS`]; the file is read
//! up to [`MAX_FILE_BYTES`], and a file that does not parse counts as empty. The list is pure
//! data ([`Untrusted::find`], [`Untrusted::add`]); [`load`] and [`record`] do the file IO.

use std::io::Read;
use std::path::Path;

use iroh::EndpointId;
use nostr::PublicKey;
use serde::{Deserialize, Serialize};

use super::offer::Offer;

/// File in the mesh home.
pub const UNTRUSTED_FILE: &str = "untrusted.json";
/// Most publishers remembered; the one that would be forgiven soonest goes first.
pub const MAX_ENTRIES: usize = 256;
/// How long a publisher stays untrusted: a day (keys are cheap, so longer buys little).
pub const UNTRUSTED_FOR_SECS: u64 = 24 * 3600;
/// Largest file read.
pub const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Longest reason kept.
pub const MAX_REASON_CHARS: usize = 200;

/// One untrusted publisher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The offer's Nostr key (hex).
    pub publisher: String,
    /// The iroh node the offer was bound to.
    pub node: String,
    /// The mesh the offer advertised.
    pub mesh_id: String,
    /// What gossip contradicted.
    pub reason: String,
    /// Unix seconds: when it was caught, and until when it is distrusted.
    pub since: u64,
    pub until: u64,
}

/// The list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Untrusted {
    pub entries: Vec<Entry>,
}

impl Untrusted {
    /// The entry naming this Nostr key or this node, unless it has expired.
    pub fn find(&self, publisher: &PublicKey, node: &EndpointId, now: u64) -> Option<&Entry> {
        if self.entries.is_empty() {
            return None;
        }
        let (publisher, node) = (publisher.to_hex(), node.to_string());
        self.entries
            .iter()
            .find(|e| e.until > now && (e.publisher == publisher || e.node == node))
    }

    /// Distrusts `offer`'s publisher and node for [`UNTRUSTED_FOR_SECS`] from `now`: replaces
    /// an entry for either, drops expired ones, and keeps at most [`MAX_ENTRIES`].
    pub fn add(&mut self, offer: &Offer, reason: &str, now: u64) {
        let publisher = offer.publisher.to_hex();
        let node = offer.node.to_string();
        self.entries
            .retain(|e| e.until > now && e.publisher != publisher && e.node != node);
        self.entries.push(Entry {
            publisher,
            node,
            mesh_id: offer.mesh_id.to_string(),
            reason: reason.chars().take(MAX_REASON_CHARS).collect(),
            since: now,
            until: now.saturating_add(UNTRUSTED_FOR_SECS),
        });
        self.bound();
    }

    /// Keeps the [`MAX_ENTRIES`] entries that last longest.
    fn bound(&mut self) {
        if self.entries.len() > MAX_ENTRIES {
            self.entries.sort_by_key(|e| std::cmp::Reverse(e.until));
            self.entries.truncate(MAX_ENTRIES);
        }
    }
}

/// The list in `home`, without expired entries; empty when there is none or it is unreadable.
pub fn load(home: &Path, now: u64) -> Untrusted {
    let mut text = String::new();
    let read = std::fs::File::open(home.join(UNTRUSTED_FILE))
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text));
    if read.is_err() {
        return Untrusted::default();
    }
    let mut list: Untrusted = serde_json::from_str(&text).unwrap_or_else(|e| {
        tracing::warn!("ignoring {UNTRUSTED_FILE}: {e}");
        Untrusted::default()
    });
    list.entries.retain(|e| e.until > now);
    list.bound();
    list
}

/// Adds `offer`'s publisher to the list in `home` (written whole, then renamed into place).
pub fn record(home: &Path, offer: &Offer, reason: &str, now: u64) -> std::io::Result<()> {
    let mut list = load(home, now);
    list.add(offer, reason, now);
    std::fs::create_dir_all(home)?;
    let tmp = home.join(format!("{UNTRUSTED_FILE}.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, home.join(UNTRUSTED_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::offer::sample_content;
    use crate::mesh::MeshId;

    /// An offer from a fresh Nostr key and node (signature fields empty: never validated).
    fn offer(mesh: u8) -> Offer {
        Offer {
            event_id: String::new(),
            publisher: nostr::Keys::generate().public_key(),
            mesh_id: MeshId([mesh; 16]),
            created_at: 0,
            expires_at: 180,
            node: iroh::SecretKey::generate().public(),
            ticket: None,
            content: sample_content("m"),
        }
    }

    #[test]
    fn an_entry_matches_the_publisher_or_the_node_until_it_expires() {
        let liar = offer(1);
        let mut list = Untrusted::default();
        list.add(&liar, "claims 64 serving nodes", 1_000);
        let e = list.find(&liar.publisher, &liar.node, 1_000).unwrap();
        assert_eq!(e.reason, "claims 64 serving nodes");
        assert_eq!(e.until, 1_000 + UNTRUSTED_FOR_SECS);
        // The same node under a new Nostr key, the same key for a new node: still found.
        let other = offer(2);
        assert!(list.find(&other.publisher, &liar.node, 1_000).is_some());
        assert!(list.find(&liar.publisher, &other.node, 1_000).is_some());
        assert!(list.find(&other.publisher, &other.node, 1_000).is_none());
        // Forgiven after a day.
        assert!(list
            .find(&liar.publisher, &liar.node, 1_000 + UNTRUSTED_FOR_SECS)
            .is_none());
    }

    #[test]
    fn the_list_stays_bounded_and_one_publisher_has_one_entry() {
        let mut list = Untrusted::default();
        let liar = offer(0);
        list.add(&liar, "first", 1);
        list.add(&liar, &"x".repeat(10 * MAX_REASON_CHARS), 2);
        assert_eq!(list.entries.len(), 1);
        assert_eq!(list.entries[0].reason.chars().count(), MAX_REASON_CHARS);
        for i in 0..MAX_ENTRIES + 50 {
            list.add(&offer(1), "lied", 10 + i as u64);
        }
        assert_eq!(list.entries.len(), MAX_ENTRIES);
        // The oldest went first: the newest is still there.
        assert!(list
            .entries
            .iter()
            .any(|e| e.since == 10 + MAX_ENTRIES as u64 + 49));
        assert!(list.entries.iter().all(|e| e.since >= 60));
    }

    #[test]
    fn the_file_round_trips_and_garbage_or_a_huge_file_counts_as_empty() {
        let home = tempfile::tempdir().unwrap();
        let liar = offer(3);
        assert_eq!(load(home.path(), 1_000), Untrusted::default());
        record(home.path(), &liar, "lied", 1_000).unwrap();
        let list = load(home.path(), 1_001);
        assert!(list.find(&liar.publisher, &liar.node, 1_001).is_some());
        assert!(load(home.path(), 1_000 + UNTRUSTED_FOR_SECS)
            .entries
            .is_empty());
        let file = home.path().join(UNTRUSTED_FILE);
        std::fs::write(&file, "{not json").unwrap();
        assert_eq!(load(home.path(), 1_000), Untrusted::default());
        std::fs::write(&file, " ".repeat(MAX_FILE_BYTES as usize + 10) + "{}").unwrap();
        assert_eq!(load(home.path(), 1_000), Untrusted::default());
        // Recording over garbage starts a new list.
        record(home.path(), &liar, "again", 1_000).unwrap();
        assert_eq!(load(home.path(), 1_000).entries.len(), 1);
    }
}
