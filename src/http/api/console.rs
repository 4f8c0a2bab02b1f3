//! The web console (`GET /` and `GET /console/{file}`): plain HTML, CSS and JavaScript from
//! `assets/console/`, embedded in the binary at build time (no CDN, no build step, works
//! offline). The page talks only to this server: the management API and the OpenAI chat route
//! mounted beside it (`mod.rs`); its Content-Security-Policy says so to the browser too.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// The text of `assets/console/NAME`, embedded.
macro_rules! embedded {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/assets/console/",
            $name
        ))
    };
}

/// Every asset: name under `/console/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        embedded!("style.css"),
    ),
    ("app.js", JS, embedded!("app.js")),
    ("mesh.js", JS, embedded!("mesh.js")),
    ("models.js", JS, embedded!("models.js")),
    ("discover.js", JS, embedded!("discover.js")),
    ("chat.js", JS, embedded!("chat.js")),
    ("icon.svg", "image/svg+xml", embedded!("icon.svg")),
];

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: &str = embedded!("index.html");

/// Same-origin only: scripts, styles, images and connections (fetch, SSE) from this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CSP),
        ),
        (
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    (headers, body).into_response()
}

pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => page(content_type, body),
        None => ApiError::not_found(&format!("/console/{name}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_names_is_served() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
        }
        for src in INDEX.split("/console/").skip(1) {
            let name = src.split('"').next().unwrap();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html names /console/{name}, which is not served"
            );
        }
    }

    #[test]
    fn scripts_talk_only_to_their_own_origin() {
        for (name, _, body) in ASSETS {
            for bad in ["http://", "https://", "ws://", "//cdn"] {
                if *name == "icon.svg" && bad == "http://" {
                    continue; // the SVG namespace
                }
                assert!(!body.contains(bad), "{name} names {bad}");
            }
        }
        assert!(!INDEX.contains("https://") && !INDEX.contains("http://"));
    }
}
