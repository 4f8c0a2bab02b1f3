//! What guards the two local HTTP servers against web pages and other machines (issue 13):
//! DNS rebinding (`Host` check), CSRF (state-changing requests must be JSON; cross-site
//! `Origin`s may not change the management API), exposure (an API key when bound beyond
//! loopback) and CORS for browser apps the user names (`--cors`, OpenAI/Ollama API only).
//!
//! [`policy`] holds the rules as pure functions; [`layer`] applies them as axum middleware.
//! [`openai`] and [`management`] wrap a *finished* router, so every route — including ones
//! added later and the fallback — is behind the guards. The tunnel's serving router (requests
//! from mesh members over iroh) is not wrapped: the mesh gate admits those.

mod layer;
pub mod policy;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, Method};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use layer::peer_is_loopback;
pub use policy::ExposureError;

/// How long a browser may cache a CORS preflight answer.
const CORS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// The API key (`--api-key` / `MESH_API_KEY`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    pub fn new(key: &str) -> Self {
        Self(key.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

/// The exposure settings of a node's HTTP servers (the flags `--allow-host`, `--api-key`,
/// `--cors`, `--insecure-no-auth`). The default answers loopback clients only, with no CORS.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    /// `Host` names answered besides loopback names and IP literals.
    pub allow_hosts: Vec<String>,
    /// Required as `Authorization: Bearer KEY` by the OpenAI API always, and by the
    /// management API from non-loopback peers.
    pub api_key: Option<ApiKey>,
    /// Origins allowed by CORS on the OpenAI/Ollama API; empty: no CORS headers.
    pub cors: Vec<String>,
    /// Expose an API beyond loopback without a key.
    pub insecure_no_auth: bool,
}

/// Why a node's surface settings are refused at start.
#[derive(Debug, thiserror::Error)]
pub enum SurfaceError {
    #[error(transparent)]
    Exposure(#[from] ExposureError),
    #[error("--cors {0}: expected an origin such as http://localhost:5173 (scheme://host[:port], no path) or *")]
    BadOrigin(String),
}

impl Surface {
    /// The start-up check: exposure needs a key, and every `--cors` origin must be one.
    pub fn check(&self, host: IpAddr, api_host: IpAddr) -> Result<(), SurfaceError> {
        policy::check_exposure(
            host,
            api_host,
            self.api_key.is_some(),
            self.insecure_no_auth,
        )?;
        for o in &self.cors {
            if !cors_origin_ok(o) {
                return Err(SurfaceError::BadOrigin(o.clone()));
            }
        }
        Ok(())
    }
}

/// `*`, or `scheme://authority` with no path: what a browser sends as `Origin`.
fn cors_origin_ok(o: &str) -> bool {
    if o == "*" {
        return true;
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' '])
        && HeaderValue::from_str(o).is_ok()
}

/// The OpenAI (and Ollama) API's router behind its guards: `Host` check outermost, then CORS
/// (when `--cors` is given: preflights are answered here), then the key and JSON checks.
pub fn openai(app: Router, surface: &Surface) -> Router {
    let inner = layer::Guard::openai(surface);
    let app = app.layer(axum::middleware::from_fn_with_state(
        inner,
        layer::guard_requests,
    ));
    let app = match cors(&surface.cors) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.layer(axum::middleware::from_fn_with_state(
        Arc::new(surface.allow_hosts.clone()),
        layer::guard_host,
    ))
}

/// The management API's router behind its guards: `Host` check, then the key (from
/// non-loopback peers), JSON and same-origin checks. No CORS, ever.
pub fn management(app: Router, surface: &Surface) -> Router {
    let inner = layer::Guard::management(surface);
    app.layer(axum::middleware::from_fn_with_state(
        inner,
        layer::guard_requests,
    ))
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(surface.allow_hosts.clone()),
        layer::guard_host,
    ))
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(CORS_MAX_AGE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_origins() {
        for o in ["http://localhost:5173", "https://app.example", "*"] {
            assert!(cors_origin_ok(o), "{o}");
        }
        for o in [
            "localhost:5173",
            "http://x/path",
            "http://",
            "",
            "http://a b",
        ] {
            assert!(!cors_origin_ok(o), "{o}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let s = Surface {
            api_key: Some(ApiKey::new("s3cret")),
            ..Surface::default()
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
