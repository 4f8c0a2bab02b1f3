//! The local HTTP surface's policy as plain functions over header values (no axum, no IO), so
//! each rule is unit-tested on its own: which `Host` names are answered (DNS rebinding), which
//! requests count as state-changing and must carry JSON (CSRF by `text/plain` forms), which
//! `Origin`s may change this node (cross-site requests), the API key check, and which bind
//! addresses need a key before the node may start.

use std::net::IpAddr;

use sha2::{Digest, Sha256};

/// Why a `Host` header is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVerdict {
    Allowed,
    /// A DNS name that is neither a loopback name nor allowed with `--allow-host`.
    Refused(String),
}

/// The host part of a `Host` header or URL authority: no port, no IPv6 brackets, lowercase,
/// no trailing dot (`localhost.` is `localhost`).
pub fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match a.rsplit_once(':') {
            // One colon: `name:port`. More than one: a bare IPv6 address (not valid in Host,
            // but read as the address rather than cut).
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => a,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a request naming `host` (its `Host` header; `None` when it has none) is answered.
///
/// DNS rebinding needs a DNS *name* that the attacker controls and points at 127.0.0.1, so:
/// IP literals (any address: they cannot be rebound, and a LAN client of `--host 0.0.0.0` uses
/// one), `localhost` and `*.localhost` (RFC 6761: always loopback, browsers resolve them
/// themselves) and the names in `allowed` (`--allow-host`) are answered; any other name is
/// refused. A request without `Host` comes from no browser (browsers always send it).
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> HostVerdict {
    let Some(host) = host else {
        return HostVerdict::Allowed;
    };
    let name = host_name(host);
    let ok = name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| host_name(a) == name);
    if ok {
        HostVerdict::Allowed
    } else {
        HostVerdict::Refused(name)
    }
}

/// Methods that change state (everything a browser cannot send cross-site without asking
/// first, plus `POST`, which it can).
pub fn changes_state(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "POST" | "PUT" | "PATCH" | "DELETE"
    )
}

/// Whether a `Content-Type` is JSON (`application/json`, any parameters such as a charset).
/// A page can send `text/plain`, `application/x-www-form-urlencoded` and `multipart/form-data`
/// cross-site without a CORS preflight; `application/json` it cannot, so requiring it on
/// state-changing requests stops form and `fetch(no-cors)` CSRF.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a request with `origin` (its `Origin` header) may change this node when it came
/// with `Host: host`. No `Origin`: not a browser (curl, the CLI, SDKs) — allowed. Otherwise
/// the origin's `host:port` must be the request's own `Host` (a same-origin page: the
/// console this server serves); `null` (sandboxed frames, redirects) is refused.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin.map(str::trim) else {
        return true;
    };
    let Some(host) = host else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let norm = |a: &str| {
        let a = a.trim().trim_end_matches('/').to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    norm(authority) == norm(host)
}

/// Reads `Authorization: Bearer KEY` and compares KEY with `key` in constant time (both are
/// hashed first, so neither the time nor the length of the comparison tells anything).
pub fn api_key_ok(authorization: Option<&str>, key: &str) -> bool {
    let Some(given) = authorization.and_then(bearer) else {
        return false;
    };
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(key.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Why a node may not start with its bind addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    #[error(
        "the {api} would listen on {addr}, which other machines can reach, without an API key: \
         pass --api-key KEY (or set MESH_API_KEY) so that clients must send \
         `Authorization: Bearer KEY`, or --insecure-no-auth to expose it to anyone who can \
         reach {addr} (or keep the default 127.0.0.1)"
    )]
    NoKey { api: &'static str, addr: IpAddr },
}

/// A server bound to `addr` is reachable from other machines unless `addr` is loopback.
pub fn exposed(addr: IpAddr) -> bool {
    !addr.is_loopback()
}

/// The start-up rule: an API bound to a non-loopback address needs a key, unless the user
/// said `--insecure-no-auth`. `host` is the OpenAI API's address, `api_host` the management
/// API's.
pub fn check_exposure(
    host: IpAddr,
    api_host: IpAddr,
    has_key: bool,
    insecure_no_auth: bool,
) -> Result<(), ExposureError> {
    if has_key || insecure_no_auth {
        return Ok(());
    }
    for (api, addr) in [
        ("OpenAI API (--host)", host),
        ("management API (--api-host)", api_host),
    ] {
        if exposed(addr) {
            return Err(ExposureError::NoKey { api, addr });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(host: &str, list: &[&str]) -> bool {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        host_allowed(Some(host), &list) == HostVerdict::Allowed
    }

    #[test]
    fn host_names_lose_port_brackets_case_and_trailing_dot() {
        assert_eq!(host_name("LocalHost:3131"), "localhost");
        assert_eq!(host_name("[::1]:9337"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("localhost.:80"), "localhost");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("evil.example:abc"), "evil.example:abc");
    }

    #[test]
    fn loopback_names_and_ip_literals_are_answered() {
        for h in [
            "localhost",
            "localhost:3131",
            "LOCALHOST:9337",
            "console.localhost:3131",
            "127.0.0.1:3131",
            "127.1.2.3",
            "[::1]:9337",
            "192.168.1.5:9337",
            "[fe80::1]:9337",
        ] {
            assert!(allowed(h, &[]), "{h}");
        }
        assert_eq!(host_allowed(None, &[]), HostVerdict::Allowed);
    }

    #[test]
    fn a_rebinding_name_is_refused_unless_allowed() {
        assert_eq!(
            host_allowed(Some("evil.example:3131"), &[]),
            HostVerdict::Refused("evil.example".into())
        );
        for h in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "localhost:3131@evil",
            "",
        ] {
            assert!(!allowed(h, &[]), "{h}");
        }
        assert!(allowed("mybox.lan:9337", &["mybox.lan"]));
        assert!(allowed("MyBox.LAN", &["mybox.lan:9337"]));
        assert!(!allowed("other.lan", &["mybox.lan"]));
    }

    #[test]
    fn state_changing_requests_must_be_json() {
        assert!(changes_state("POST") && changes_state("delete") && changes_state("PUT"));
        assert!(changes_state("PATCH"));
        assert!(!changes_state("GET") && !changes_state("HEAD") && !changes_state("OPTIONS"));
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        for ct in [
            None,
            Some("text/plain"),
            Some("text/plain; charset=application/json"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some(""),
        ] {
            assert!(!is_json(ct), "{ct:?}");
        }
    }

    #[test]
    fn only_same_origin_pages_may_change_the_node() {
        // The console this server serves, under either loopback name.
        assert!(origin_allowed(
            Some("http://127.0.0.1:3131"),
            Some("127.0.0.1:3131")
        ));
        assert!(origin_allowed(
            Some("http://localhost:3131"),
            Some("localhost:3131")
        ));
        assert!(origin_allowed(
            Some("http://LocalHost"),
            Some("localhost:80")
        ));
        // No Origin: curl, the CLI, SDKs.
        assert!(origin_allowed(None, Some("127.0.0.1:3131")));
        assert!(origin_allowed(None, None));
        for (origin, host) in [
            ("https://evil.example", "127.0.0.1:3131"),
            ("http://localhost:3132", "localhost:3131"),
            ("http://127.0.0.1:3131", "localhost:3131"),
            ("null", "127.0.0.1:3131"),
            ("file://", "127.0.0.1:3131"),
            ("chrome-extension://abc", "127.0.0.1:3131"),
        ] {
            assert!(!origin_allowed(Some(origin), Some(host)), "{origin} {host}");
        }
        assert!(!origin_allowed(Some("http://127.0.0.1:3131"), None));
    }

    #[test]
    fn the_api_key_is_a_bearer_token() {
        assert!(api_key_ok(Some("Bearer s3cret"), "s3cret"));
        assert!(api_key_ok(Some("bearer  s3cret "), "s3cret"));
        for h in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("s3cret"),
            Some("Bearer "),
        ] {
            assert!(!api_key_ok(h, "s3cret"), "{h:?}");
        }
    }

    #[test]
    fn exposing_an_api_needs_a_key_or_the_insecure_flag() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(check_exposure(lo, lo, false, false).is_ok());
        assert!(check_exposure(lo6, "127.0.0.2".parse().unwrap(), false, false).is_ok());
        let err = check_exposure(any, lo, false, false).unwrap_err();
        assert!(err.to_string().contains("--api-key"), "{err}");
        assert!(err.to_string().contains("--host"), "{err}");
        let err = check_exposure(lo, lan, false, false).unwrap_err();
        assert!(err.to_string().contains("--api-host"), "{err}");
        assert!(check_exposure(any, lan, true, false).is_ok());
        assert!(check_exposure(any, lan, false, true).is_ok());
    }
}
