//! TCP sharing (`mesh share`, `mesh connect`), the pure part: share names, the target policy,
//! the stream header of `mesh/tcp/1` and its one-byte answer, and the limits. No IO.
//!
//! Wire (one QUIC bi-stream per TCP connection, the opener writes first): the opener sends
//! `[len: u8][name: len bytes of UTF-8]` (the share it wants, `len` ≤ [`MAX_NAME_BYTES`]);
//! the sharing node answers one status byte ([`OK`], [`NO_SUCH_SHARE`], [`BUSY`],
//! [`TARGET_DOWN`], [`BAD_HEADER`]); after [`OK`] both sides carry raw bytes until each
//! finishes its direction (TCP half-close ↔ QUIC finish).

use std::net::SocketAddr;
use std::time::Duration;

/// The ALPN: members only (behind the gate like the tunnel).
pub const ALPN: &[u8] = b"mesh/tcp/1";
/// Longest share name, in bytes (names are ASCII).
pub const MAX_NAME_BYTES: usize = 32;
/// Most shares one node offers (and announces).
pub const MAX_SHARES: usize = 16;
/// Largest stream header: the length byte and the longest name.
pub const MAX_HEADER_BYTES: usize = 1 + MAX_NAME_BYTES;
/// Connections one peer may have open to this node's shares at once (all shares together).
pub const CONNS_PER_PEER: u32 = 16;
/// Connections all peers together may have open to this node's shares.
pub const CONNS_TOTAL: u32 = 64;
/// Connections one `mesh connect` carries at once (more wait in the listener's backlog).
pub const CONNS_PER_CONNECT: usize = 32;
/// A carried connection with no byte in either direction this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Time for the header, the answer, and the sharing node's connect to its target.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read at a time in each direction (the only buffer a connection holds per direction).
pub const COPY_BUF_BYTES: usize = 64 * 1024;

/// Answer: the target accepted; raw bytes follow.
pub const OK: u8 = 0;
/// Answer: this node shares nothing under that name (never did, or it was removed).
pub const NO_SUCH_SHARE: u8 = 1;
/// Answer: over [`CONNS_PER_PEER`] or [`CONNS_TOTAL`].
pub const BUSY: u8 = 2;
/// Answer: the sharing node could not connect to its target.
pub const TARGET_DOWN: u8 = 3;
/// Answer: the header was malformed.
pub const BAD_HEADER: u8 = 4;

/// Why a share name or target was refused, or a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("share name must be 1 to {MAX_NAME_BYTES} characters of a-z, A-Z, 0-9, '.', '_', '-'")]
    BadName,
    #[error(
        "{0} is not on this machine: a member could reach your network through it \
         (pass --allow-remote-target if that is what you want)"
    )]
    RemoteTarget(SocketAddr),
    #[error("this node shares {MAX_SHARES} services already")]
    TooMany,
    #[error("no share named {0:?} here")]
    NoSuchShare(String),
    #[error("the member no longer shares {0:?}")]
    Gone(String),
    #[error("the member refused: too many connections")]
    Busy,
    #[error("the member could not reach the service it shares")]
    TargetDown,
    #[error("the member refused the request")]
    Refused,
    #[error("{0}")]
    Io(String),
}

/// Whether `name` is a valid share name: 1 to [`MAX_NAME_BYTES`] of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A share's target: loopback only, unless the owner allows others (`--allow-remote-target`).
pub fn check_target(target: SocketAddr, allow_remote: bool) -> Result<(), ShareError> {
    if target.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(ShareError::RemoteTarget(target))
    }
}

/// The names a peer announced, kept only when all are valid and at most [`MAX_SHARES`].
pub fn valid_list(names: &[String]) -> bool {
    names.len() <= MAX_SHARES && names.iter().all(|n| valid_name(n))
}

/// The header the opener writes for `name` (a valid name).
pub fn encode_header(name: &str) -> Result<Vec<u8>, ShareError> {
    if !valid_name(name) {
        return Err(ShareError::BadName);
    }
    let mut out = Vec::with_capacity(1 + name.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(out)
}

/// The name a header's length byte and name bytes carry, if valid.
pub fn decode_name(bytes: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(bytes).ok()?;
    valid_name(name).then_some(name)
}

/// What the opener makes of the sharing node's answer.
pub fn answer_result(status: u8, name: &str) -> Result<(), ShareError> {
    match status {
        OK => Ok(()),
        NO_SUCH_SHARE => Err(ShareError::Gone(name.to_owned())),
        BUSY => Err(ShareError::Busy),
        TARGET_DOWN => Err(ShareError::TargetDown),
        _ => Err(ShareError::Refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        for ok in [
            "db",
            "jupyter-8888",
            "vec.db_2",
            &"x".repeat(MAX_NAME_BYTES),
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "ünï",
            "x\n",
            &"x".repeat(MAX_NAME_BYTES + 1),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn announced_lists_are_capped_and_checked() {
        let many: Vec<String> = (0..=MAX_SHARES).map(|i| format!("s{i}")).collect();
        assert!(valid_list(&many[..MAX_SHARES]));
        assert!(!valid_list(&many));
        assert!(!valid_list(&["ok".into(), "not ok".into()]));
    }

    #[test]
    fn only_loopback_targets_unless_allowed() {
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let lo6: SocketAddr = "[::1]:80".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:80".parse().unwrap();
        assert!(check_target(lo, false).is_ok() && check_target(lo6, false).is_ok());
        let err = check_target(lan, false).unwrap_err();
        assert!(err.to_string().contains("--allow-remote-target"), "{err}");
        assert!(check_target(lan, true).is_ok());
    }

    #[test]
    fn header_round_trips_and_refuses_bad_names() {
        let h = encode_header("db").unwrap();
        assert_eq!(h, [2, b'd', b'b']);
        assert!(h.len() <= MAX_HEADER_BYTES);
        assert_eq!(decode_name(&h[1..]), Some("db"));
        assert_eq!(encode_header("a b"), Err(ShareError::BadName));
        assert_eq!(decode_name(b"a b"), None);
        assert_eq!(decode_name(&[0xff, 0xfe]), None);
        assert_eq!(decode_name(b""), None);
    }

    #[test]
    fn answers_become_clear_errors() {
        assert_eq!(answer_result(OK, "db"), Ok(()));
        let gone = answer_result(NO_SUCH_SHARE, "db").unwrap_err();
        assert!(
            gone.to_string().contains("no longer shares \"db\""),
            "{gone}"
        );
        assert_eq!(answer_result(BUSY, "db"), Err(ShareError::Busy));
        assert_eq!(
            answer_result(TARGET_DOWN, "db"),
            Err(ShareError::TargetDown)
        );
        assert_eq!(answer_result(99, "db"), Err(ShareError::Refused));
    }
}
