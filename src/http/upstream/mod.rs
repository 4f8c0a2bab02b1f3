//! Engines already running beside `mesh` (`mesh serve --upstream URL`): Ollama's `/v1`,
//! llama-server, vLLM, another `mesh serve` — anything OpenAI-compatible. Their models become
//! this node's: listed in `/v1/models`, announced to the mesh (and so in offers), and requests
//! for them are forwarded to the engine and streamed back unchanged.
//!
//! - [`Upstreams`]: the engines and the models each routes now (shared by the HTTP handlers,
//!   the announcement and the pollers).
//! - `health` (pure): when an engine's models enter and leave routing.
//! - `poll`: asks each engine's `GET /v1/models` every [`poll::POLL_INTERVAL`].
//! - `proxy`: forwards one request.

pub mod health;
pub mod poll;
pub mod proxy;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Url;

use crate::mesh::ModelOffer;

/// Requests one upstream is announced to take at once (its real capacity is not known): the
/// mesh's routing counts free slots as announced, less the requests in flight to it.
pub const UPSTREAM_SLOTS: u32 = 4;
/// Context announced for an upstream's models (an OpenAI model list does not say it).
pub const UPSTREAM_CTX: u32 = 4096;

/// An upstream's base URL from what the user typed: `http(s)://host:port` or the same with a
/// path; `/v1` is added unless the path already ends with it (Ollama answers its OpenAI API
/// under `/v1`, as llama-server, vLLM and `mesh` do).
pub fn parse_base(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim())
        .map_err(|e| format!("'{text}' is not a URL ({e}): give http://HOST:PORT"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "'{text}' is not an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "'{text}': an upstream URL has no query or fragment"
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = if path.ends_with("/v1") {
        path
    } else {
        format!("{path}/v1")
    };
    url.set_path(&path);
    Ok(url)
}

/// `base` (…/v1) joined with an OpenAI path such as `/chat/completions` or `/models`.
pub fn endpoint(base: &Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// The upstream engines of this node and what each serves now. Clones share them.
#[derive(Clone, Default)]
pub struct Upstreams(Arc<Mutex<Vec<Entry>>>);

struct Entry {
    base: Url,
    /// The models routed to it now (empty while it is down).
    models: Vec<String>,
    in_flight: Arc<AtomicU32>,
}

/// Where a request for an upstream's model goes.
#[derive(Clone)]
pub struct Route {
    pub base: Url,
    in_flight: Arc<AtomicU32>,
}

impl Route {
    /// Counts the request as in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }
}

/// A request in flight to an upstream.
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstreams {
    /// Adds an engine (serving nothing until its first poll answers); returns its index.
    pub fn add(&self, base: Url) -> usize {
        let mut all = self.lock();
        all.push(Entry {
            base,
            models: Vec::new(),
            in_flight: Arc::default(),
        });
        all.len() - 1
    }

    /// Points engine `index` at another URL (a restarted engine); it serves nothing until
    /// polled again.
    pub fn set_base(&self, index: usize, base: Url) {
        if let Some(e) = self.lock().get_mut(index) {
            e.base = base;
            e.models.clear();
        }
    }

    /// Sets what engine `index` serves now.
    pub fn set_models(&self, index: usize, models: Vec<String>) {
        if let Some(e) = self.lock().get_mut(index) {
            e.models = models;
        }
    }

    /// The engine serving `model`, the first one listed when several do.
    pub fn find(&self, model: &str) -> Option<Route> {
        self.lock()
            .iter()
            .find(|e| e.models.iter().any(|m| m == model))
            .map(|e| Route {
                base: e.base.clone(),
                in_flight: e.in_flight.clone(),
            })
    }

    /// Every model the engines serve now, each once, as the mesh announces them.
    pub fn offers(&self) -> Vec<ModelOffer> {
        let mut out: Vec<ModelOffer> = Vec::new();
        for e in self.lock().iter() {
            let busy = e.in_flight.load(Ordering::Relaxed);
            for m in &e.models {
                if out.iter().all(|o| &o.name != m) {
                    out.push(ModelOffer {
                        name: m.clone(),
                        free_slots: UPSTREAM_SLOTS.saturating_sub(busy),
                        slots: UPSTREAM_SLOTS,
                        ctx: UPSTREAM_CTX,
                    });
                }
            }
        }
        out
    }

    /// The engines' base URLs, in the order given.
    pub fn bases(&self) -> Vec<Url> {
        self.lock().iter().map(|e| e.base.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_get_v1_once_and_other_schemes_are_refused() {
        let p = |s: &str| parse_base(s).map(|u| u.to_string());
        assert_eq!(
            p("http://127.0.0.1:11434").unwrap(),
            "http://127.0.0.1:11434/v1"
        );
        assert_eq!(
            p("http://127.0.0.1:11434/").unwrap(),
            "http://127.0.0.1:11434/v1"
        );
        assert_eq!(p("http://h:8080/v1/").unwrap(), "http://h:8080/v1");
        assert_eq!(p("https://h/openai").unwrap(), "https://h/openai/v1");
        for bad in [
            "127.0.0.1:11434",
            "ftp://h/",
            "file:///tmp/x",
            "http://h/?a=1",
            "nope",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
        let base = parse_base("http://h:1").unwrap();
        assert_eq!(endpoint(&base, "/models"), "http://h:1/v1/models");
    }

    #[test]
    fn models_route_to_the_first_engine_serving_them_and_free_slots_count_requests() {
        let u = Upstreams::default();
        let a = u.add(parse_base("http://a:1").unwrap());
        let b = u.add(parse_base("http://b:1").unwrap());
        assert!(u.find("m").is_none() && u.offers().is_empty());
        u.set_models(a, vec!["m".into()]);
        u.set_models(b, vec!["m".into(), "n".into()]);
        assert_eq!(u.find("m").unwrap().base.host_str(), Some("a"));
        assert_eq!(u.find("n").unwrap().base.host_str(), Some("b"));
        let names: Vec<String> = u.offers().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["m", "n"]);
        let held = u.find("m").unwrap().start();
        assert_eq!(u.offers()[0].free_slots, UPSTREAM_SLOTS - 1);
        drop(held);
        assert_eq!(u.offers()[0].free_slots, UPSTREAM_SLOTS);
        u.set_models(a, Vec::new());
        assert_eq!(u.find("m").unwrap().base.host_str(), Some("b"));
    }
}
