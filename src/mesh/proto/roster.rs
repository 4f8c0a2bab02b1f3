//! `mesh/roster/2`: a newcomer asks one gossip neighbour for every announcement it holds, so it
//! learns the whole mesh at once instead of at each member's next refresh (`announce::REFRESH`).
//! Pure: the framing and its limits; `net::roster` moves the bytes.
//!
//! Wire: the asker opens a bi-stream, writes [`REQUEST`] and finishes. The answer is one flags
//! byte (bit 0, [`COMPLETE`]: the answering node's table is complete, see [`Roster::complete`];
//! the other bits are ignored), then a series of frames, each a big-endian `u16` length and one
//! signed gossip message exactly as its author encoded it (`announce::encode`), the answering
//! node's own announcement first, then finish. The asker checks each message like a gossip message (size, version, its author's
//! signature, limits, `seq` window), so the neighbour cannot forge or alter any entry; it can
//! only leave some out or hand over old ones, which gossip would have relayed anyway.

use bytes::Bytes;

use super::announce::MAX_MESSAGE_BYTES;

pub const ALPN: &[u8] = b"mesh/roster/2";
/// The one request byte.
pub const REQUEST: u8 = 1;
/// Bit of the answer's flags byte: [`Roster::complete`].
pub const COMPLETE: u8 = 1;
/// Most frames in an answer: a full peer table (`state::peers::MAX_PEERS`, checked there) and
/// the node itself.
pub const MAX_FRAMES: usize = 1024 + 1;
/// Largest answer read: every frame at the largest message size.
pub const MAX_ROSTER_BYTES: usize = 1 + MAX_FRAMES * (MAX_MESSAGE_BYTES + 2);

/// One answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// The answering node had its own table from a complete roster (or started the mesh): an
    /// asker handed an incomplete one (its neighbour joined moments before it and had no
    /// roster yet) asks again later (`state::liveness`). Only a hint: a hostile member can
    /// claim either, which costs the asker at most its bounded retries or leaves it where a
    /// roster that left entries out would.
    pub complete: bool,
    /// Signed messages, not yet checked (each goes through `announce::decode`).
    pub entries: Vec<Bytes>,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("frame of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("answer cut inside a frame")]
    Truncated,
    #[error("empty answer")]
    Empty,
    #[error("more than {MAX_FRAMES} frames")]
    TooMany,
}

/// The flags byte, then `messages` framed (each at most [`MAX_MESSAGE_BYTES`]; larger ones
/// are left out), at most [`MAX_FRAMES`].
pub fn encode(complete: bool, messages: &[Bytes]) -> Vec<u8> {
    let mut out = vec![if complete { COMPLETE } else { 0 }];
    for m in messages
        .iter()
        .filter(|m| m.len() <= MAX_MESSAGE_BYTES)
        .take(MAX_FRAMES)
    {
        out.extend((m.len() as u16).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// Splits an answer into its flags and messages (an empty answer is none: a refusal).
pub fn decode(bytes: &[u8]) -> Result<Roster, RosterError> {
    let Some((flags, mut rest)) = bytes.split_first() else {
        return Err(RosterError::Empty);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        if out.len() >= MAX_FRAMES {
            return Err(RosterError::TooMany);
        }
        let [a, b, tail @ ..] = rest else {
            return Err(RosterError::Truncated);
        };
        let len = u16::from_be_bytes([*a, *b]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(RosterError::TooLarge(len));
        }
        if tail.len() < len {
            return Err(RosterError::Truncated);
        }
        out.push(Bytes::copy_from_slice(&tail[..len]));
        rest = &tail[len..];
    }
    Ok(Roster {
        complete: flags & COMPLETE != 0,
        entries: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_messages_are_left_out() {
        let msgs = vec![
            Bytes::from_static(b"one"),
            Bytes::from(vec![7u8; MAX_MESSAGE_BYTES + 1]),
            Bytes::from(vec![9u8; MAX_MESSAGE_BYTES]),
            Bytes::new(),
        ];
        let decoded = decode(&encode(true, &msgs)).unwrap();
        assert_eq!(
            decoded.entries,
            vec![msgs[0].clone(), msgs[2].clone(), msgs[3].clone()]
        );
        assert!(decoded.complete);
        assert_eq!(decode(&encode(false, &[])).unwrap(), Roster::default());
        // Unknown flag bits are ignored; no flags byte at all is no answer.
        assert!(decode(&[0xfe]).is_ok_and(|r| !r.complete));
        assert_eq!(decode(&[]), Err(RosterError::Empty));
    }

    #[test]
    fn cut_oversized_and_overlong_answers_are_refused() {
        let bytes = encode(true, &[Bytes::from_static(b"hello")]);
        assert_eq!(decode(&bytes[..5]), Err(RosterError::Truncated));
        assert_eq!(decode(&bytes[..2]), Err(RosterError::Truncated));
        let big = (MAX_MESSAGE_BYTES as u16 + 1).to_be_bytes();
        assert_eq!(
            decode(&[&[COMPLETE][..], &big].concat()),
            Err(RosterError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let many = vec![Bytes::from_static(b"x"); MAX_FRAMES + 1];
        let mut bytes = encode(false, &many);
        assert_eq!(decode(&bytes).unwrap().entries.len(), MAX_FRAMES);
        bytes.extend(&encode(false, &many[..1])[1..]);
        assert_eq!(decode(&bytes), Err(RosterError::TooMany));
    }
}
