//! `--peers FILE`: a static list of nodes to join or ask for their offer, for clusters without
//! Nostr or internet (pure: text in, entries or an error naming the line out).
//!
//! One entry a line; blank lines and lines starting with `#` are skipped:
//! - a ticket (`mesh1…`, as `mesh serve` prints it): `mesh serve` joins it like `--join`;
//! - a node address `NODE_ID@IP:PORT[,IP:PORT…]` (IPv6 as `[::1]:9000`): the node's endpoint id
//!   (`mesh status` prints it) and the UDP addresses it listens on (`--mesh-bind`).
//!
//! `mesh discover` and `mesh --auto` ask every listed node for its offer (`mesh/offer/1`).
//! The file is at most [`MAX_PEERS_FILE_BYTES`] and [`MAX_PEER_ENTRIES`] entries.

use std::net::SocketAddr;

use iroh::{EndpointAddr, EndpointId, TransportAddr};

use super::addrs::MAX_IP_ADDRS;
use super::ticket::{Ticket, PREFIX};

/// Largest peers file read.
pub const MAX_PEERS_FILE_BYTES: usize = 64 * 1024;
/// Most entries in a peers file.
pub const MAX_PEER_ENTRIES: usize = 256;

/// One line of a peers file.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerEntry {
    Ticket(Ticket),
    Node(EndpointAddr),
}

impl PeerEntry {
    /// The nodes this entry names, with their addresses.
    pub fn nodes(&self) -> Vec<EndpointAddr> {
        match self {
            Self::Ticket(t) => t.peers.clone(),
            Self::Node(addr) => vec![addr.clone()],
        }
    }
}

/// What is wrong with a peers file; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeersError {
    #[error("larger than {MAX_PEERS_FILE_BYTES} bytes")]
    TooLarge,
    #[error("more than {MAX_PEER_ENTRIES} entries")]
    TooMany,
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
}

/// Parses a peers file's text.
pub fn parse(text: &str) -> Result<Vec<PeerEntry>, PeersError> {
    if text.len() > MAX_PEERS_FILE_BYTES {
        return Err(PeersError::TooLarge);
    }
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if entries.len() == MAX_PEER_ENTRIES {
            return Err(PeersError::TooMany);
        }
        let entry = parse_line(line).map_err(|why| PeersError::Line { line: i + 1, why })?;
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Result<PeerEntry, String> {
    if line.starts_with(PREFIX) {
        return Ticket::decode(line)
            .map(PeerEntry::Ticket)
            .map_err(|e| format!("bad ticket: {e}"));
    }
    let Some((id, addrs)) = line.split_once('@') else {
        return Err(format!(
            "neither a ticket ({PREFIX}…) nor a node address (NODE_ID@IP:PORT)"
        ));
    };
    let id: EndpointId = id
        .trim()
        .parse()
        .map_err(|_| format!("{:?} is not a node id", short(id)))?;
    let mut ips = Vec::new();
    for a in addrs.split(',').map(str::trim) {
        let ip: SocketAddr = a
            .parse()
            .map_err(|_| format!("{:?} is not IP:PORT", short(a)))?;
        if ip.port() == 0 || ip.ip().is_unspecified() || ip.ip().is_multicast() {
            return Err(format!("{ip} cannot be dialled"));
        }
        ips.push(ip);
    }
    if ips.len() > MAX_IP_ADDRS {
        return Err(format!("more than {MAX_IP_ADDRS} addresses for one node"));
    }
    Ok(PeerEntry::Node(EndpointAddr::from_parts(
        id,
        ips.into_iter().map(TransportAddr::Ip),
    )))
}

/// The start of `s`, for error messages about hostile input.
fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::proto::ticket::MeshId;

    fn id() -> EndpointId {
        iroh::SecretKey::generate().public()
    }

    #[test]
    fn tickets_node_addresses_comments_and_blank_lines() {
        let (a, b) = (id(), id());
        let ticket = Ticket {
            mesh_id: MeshId::random(),
            secret: None,
            peers: vec![EndpointAddr::new(a)],
        };
        let text = format!(
            "# our cluster\n\n{}\n  {b}@10.0.0.2:9000,[fd00::2]:9000  \n",
            ticket.encode()
        );
        let entries = parse(&text).unwrap();
        assert_eq!(entries[0], PeerEntry::Ticket(ticket));
        let PeerEntry::Node(node) = &entries[1] else {
            panic!("not a node")
        };
        assert_eq!(node.id, b);
        assert_eq!(node.ip_addrs().count(), 2);
        assert_eq!(entries[1].nodes(), vec![node.clone()]);
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let text = format!("# ok\n{}@127.0.0.1:1\nnonsense\n", id());
        assert_eq!(
            parse(&text).unwrap_err().to_string(),
            "line 3: neither a ticket (mesh1…) nor a node address (NODE_ID@IP:PORT)"
        );
        let bad = [
            ("mesh1zzzz", "bad ticket"),
            ("abc@127.0.0.1:1", "is not a node id"),
            (&format!("{}@127.0.0.1", id()), "is not IP:PORT"),
            (&format!("{}@127.0.0.1:0", id()), "cannot be dialled"),
            (&format!("{}@224.0.0.251:5353", id()), "cannot be dialled"),
            (
                &format!("{}@1.1.1.1:1,1.1.1.2:1,1.1.1.3:1,1.1.1.4:1,1.1.1.5:1", id()),
                "more than 4 addresses",
            ),
        ];
        for (line, why) in bad {
            let err = parse(&format!("\n{line}")).unwrap_err().to_string();
            assert!(
                err.starts_with("line 2: ") && err.contains(why),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn size_and_entry_caps() {
        let line = format!("{}@127.0.0.1:1\n", id());
        assert_eq!(parse(&line.repeat(MAX_PEER_ENTRIES)).unwrap().len(), 256);
        assert_eq!(
            parse(&line.repeat(MAX_PEER_ENTRIES + 1)),
            Err(PeersError::TooMany)
        );
        let comment = format!("#{}\n", "x".repeat(1000));
        assert_eq!(
            parse(&comment.repeat(MAX_PEERS_FILE_BYTES / 1000 + 1)),
            Err(PeersError::TooLarge)
        );
    }
}
