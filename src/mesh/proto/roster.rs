//! `mesh/roster/1`: a newcomer asks one gossip neighbour for every announcement it holds, so it
//! learns the whole mesh at once instead of at each member's next refresh (`announce::REFRESH`).
//! Pure: the framing and its limits; `net::roster` moves the bytes.
//!
//! Wire: the asker opens a bi-stream, writes [`REQUEST`] and finishes. The answer is a series
//! of frames, each a big-endian `u16` length and one signed gossip message exactly as its
//! author encoded it (`announce::encode`), the answering node's own announcement first, then
//! finish. The asker checks each message like a gossip message (size, version, its author's
//! signature, limits, `seq` window), so the neighbour cannot forge or alter any entry; it can
//! only leave some out or hand over old ones, which gossip would have relayed anyway.

use bytes::Bytes;

use super::announce::MAX_MESSAGE_BYTES;

pub const ALPN: &[u8] = b"mesh/roster/1";
/// The one request byte (version 1 of the request).
pub const REQUEST: u8 = 1;
/// Most frames in an answer: a full peer table (`state::peers::MAX_PEERS`, checked there) and
/// the node itself.
pub const MAX_FRAMES: usize = 1024 + 1;
/// Largest answer read: every frame at the largest message size.
pub const MAX_ROSTER_BYTES: usize = MAX_FRAMES * (MAX_MESSAGE_BYTES + 2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    #[error("frame of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("answer cut inside a frame")]
    Truncated,
    #[error("more than {MAX_FRAMES} frames")]
    TooMany,
}

/// Frames `messages` (each at most [`MAX_MESSAGE_BYTES`]; larger ones are left out), at most
/// [`MAX_FRAMES`].
pub fn encode(messages: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
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

/// Splits an answer into its messages (not yet checked: each goes through `announce::decode`).
pub fn decode(bytes: &[u8]) -> Result<Vec<Bytes>, RosterError> {
    let mut rest = bytes;
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
    Ok(out)
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
        let decoded = decode(&encode(&msgs)).unwrap();
        assert_eq!(
            decoded,
            vec![msgs[0].clone(), msgs[2].clone(), msgs[3].clone()]
        );
        assert_eq!(decode(&[]).unwrap(), Vec::<Bytes>::new());
    }

    #[test]
    fn cut_oversized_and_overlong_answers_are_refused() {
        let bytes = encode(&[Bytes::from_static(b"hello")]);
        assert_eq!(decode(&bytes[..4]), Err(RosterError::Truncated));
        assert_eq!(decode(&bytes[..1]), Err(RosterError::Truncated));
        let big = (MAX_MESSAGE_BYTES as u16 + 1).to_be_bytes();
        assert_eq!(
            decode(&big),
            Err(RosterError::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        let many = vec![Bytes::from_static(b"x"); MAX_FRAMES + 1];
        let mut bytes = encode(&many);
        assert_eq!(decode(&bytes).unwrap().len(), MAX_FRAMES);
        bytes.extend(encode(&many[..1]));
        assert_eq!(decode(&bytes), Err(RosterError::TooMany));
    }
}
