//! The model catalog in the management API, for the web console:
//! - `GET /api/catalog`: every catalog model with `installed` (in the Hugging Face cache),
//!   `fits` (this machine's memory) and, while one runs, its download's progress.
//! - `POST /api/catalog/download {"model": NAME}`: downloads a *catalog* model into the cache
//!   in the background (202); progress goes out as `download` events on `GET /api/events`.
//!
//! Only catalog names are accepted (no URLs or hub paths): a page cannot make the node fetch
//! from an address of its choosing. At most [`MAX_DOWNLOADS`] run at once, one per model.
//! The byte counting ([`Tally`]) is pure; the transfer is `catalog::resolve_with`'s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::ApiState;
use crate::catalog::listing::{rows, ModelRow};
use crate::catalog::progress::{ProgressEvent, ProgressSink};
use crate::catalog::spec::ModelSpec;
use crate::catalog::{available_memory, names, resolve_with, ResolveOptions};
use crate::http::error::ApiError;

/// Downloads running at once (each holds a connection and a hashing thread).
pub const MAX_DOWNLOADS: usize = 2;
/// Download events buffered for slow `/api/events` readers (they get `lagged` past it).
const EVENTS_BUFFER: usize = 256;

/// Where a download stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Started,
    Progress,
    Done,
    Failed,
}

/// A `download` event of `/api/events` (and the `downloading` field of `/api/catalog`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadEvent {
    pub model: String,
    pub stage: Stage,
    /// Bytes on disk, all files together.
    pub bytes: u64,
    /// Bytes in all, 0 while unknown.
    pub total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Bytes of a download's files, from its progress events. Pure.
#[derive(Debug, Default)]
pub struct Tally {
    total: u64,
    parts: BTreeMap<usize, u64>,
}

impl Tally {
    /// Counts `ev`; `(bytes, total)` when the figures changed.
    pub fn apply(&mut self, ev: &ProgressEvent) -> Option<(u64, u64)> {
        match ev {
            ProgressEvent::Start { total_bytes, .. } => self.total = *total_bytes,
            ProgressEvent::FileStart {
                part, resumed_from, ..
            } => {
                self.parts.insert(*part, *resumed_from);
            }
            ProgressEvent::Progress { part, bytes, .. } => {
                self.parts.insert(*part, *bytes);
            }
            ProgressEvent::Cached { part, size, .. } => {
                self.parts.insert(*part, *size);
            }
            _ => return None,
        }
        Some((self.bytes(), self.total))
    }

    pub fn bytes(&self) -> u64 {
        self.parts.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// The node's console downloads: who runs, and the channel their progress goes out on.
#[derive(Clone)]
pub struct Downloads {
    hub: ResolveOptions,
    tx: broadcast::Sender<DownloadEvent>,
    /// Running downloads by catalog name, with their latest event.
    active: Arc<Mutex<BTreeMap<String, DownloadEvent>>>,
}

impl Downloads {
    /// Downloads from and into where `hub` says (endpoint, cache, catalog).
    pub fn new(hub: ResolveOptions) -> Self {
        Self {
            hub,
            tx: broadcast::channel(EVENTS_BUFFER).0,
            active: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DownloadEvent> {
        self.tx.subscribe()
    }

    fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DownloadEvent>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records and sends `ev`; a finished download leaves the running set.
    fn publish(&self, ev: DownloadEvent) {
        {
            let mut active = self.active();
            if matches!(ev.stage, Stage::Done | Stage::Failed) {
                active.remove(&ev.model);
            } else {
                active.insert(ev.model.clone(), ev.clone());
            }
        }
        // No subscribers is fine.
        let _ = self.tx.send(ev);
    }

    /// Takes a place for `model`, or says why not.
    fn reserve(&self, model: &str) -> Result<(), ApiError> {
        let mut active = self.active();
        if active.contains_key(model) {
            return Err(ApiError::conflict(
                "already_downloading",
                format!("{model} is downloading already"),
            ));
        }
        if active.len() >= MAX_DOWNLOADS {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_downloads",
                format!("{MAX_DOWNLOADS} downloads run already; wait for one to finish"),
            ));
        }
        let started = started(model);
        active.insert(model.to_owned(), started);
        Ok(())
    }
}

fn started(model: &str) -> DownloadEvent {
    DownloadEvent {
        model: model.to_owned(),
        stage: Stage::Started,
        bytes: 0,
        total: 0,
        error: None,
    }
}

/// Turns the downloader's progress events into `download` events.
struct Sink {
    model: String,
    tally: Mutex<Tally>,
    downloads: Downloads,
}

impl ProgressSink for Sink {
    fn event(&self, ev: &ProgressEvent) {
        let changed = self
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(ev);
        if let Some((bytes, total)) = changed {
            self.downloads.publish(DownloadEvent {
                model: self.model.clone(),
                stage: Stage::Progress,
                bytes,
                total,
                error: None,
            });
        }
    }
}

/// A catalog row, with its download's progress while one runs.
#[derive(Debug, Serialize)]
pub struct CatalogRow {
    #[serde(flatten)]
    pub row: ModelRow,
    pub downloading: Option<DownloadEvent>,
}

/// `GET /api/catalog`.
#[derive(Debug, Serialize)]
pub struct CatalogDoc {
    /// Room for models on this machine, in bytes.
    pub available_bytes: u64,
    pub models: Vec<CatalogRow>,
}

pub async fn catalog(State(state): State<ApiState>) -> Result<Json<CatalogDoc>, ApiError> {
    let downloads = state.downloads.clone();
    // Loading the catalog and looking into the cache is file work: off the async workers.
    let listed = tokio::task::spawn_blocking(move || {
        let catalog = downloads.hub.load_catalog()?;
        let available = available_memory();
        let running = downloads.active().clone();
        let models = rows(&catalog.models, &downloads.hub, available)
            .into_iter()
            .map(|row| CatalogRow {
                downloading: running.get(&row.entry.name).cloned(),
                row,
            })
            .collect();
        anyhow::Ok(CatalogDoc {
            available_bytes: available,
            models,
        })
    })
    .await;
    match listed {
        Ok(Ok(doc)) => Ok(Json(doc)),
        Ok(Err(e)) => Err(catalog_error(&e)),
        Err(e) => Err(catalog_error(&e)),
    }
}

fn catalog_error(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "catalog_unavailable",
        format!("cannot read the catalog: {e}"),
    )
}

/// `POST /api/catalog/download`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DownloadRequest {
    pub model: String,
}

pub async fn download(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<DownloadEvent>), ApiError> {
    let req: DownloadRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"model\": \"NAME\"}}: {e}")))?;
    let downloads = state.downloads.clone();
    let catalog = {
        let hub = downloads.hub.clone();
        tokio::task::spawn_blocking(move || hub.load_catalog())
            .await
            .map_err(|e| catalog_error(&e))?
            .map_err(|e| catalog_error(&e))?
    };
    let Some(entry) = catalog.get(&req.model) else {
        let close = names::close_matches(
            &req.model,
            catalog.models.iter().map(|m| m.name.as_str()),
            3,
        );
        let hint = if close.is_empty() {
            String::new()
        } else {
            format!("; did you mean {}?", close.join(", "))
        };
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("no model {:?} in the catalog{hint}", req.model),
        ));
    };
    let name = entry.name.clone();
    downloads.reserve(&name)?;
    let first = started(&name);
    let _ = downloads.tx.send(first.clone());
    tokio::spawn(run(downloads, name));
    Ok((StatusCode::ACCEPTED, Json(first)))
}

/// Runs one download to its end and says how it ended.
async fn run(downloads: Downloads, model: String) {
    let sink = Sink {
        model: model.clone(),
        tally: Mutex::default(),
        downloads: downloads.clone(),
    };
    let result = resolve_with(ModelSpec::Catalog(model.clone()), &downloads.hub, &sink).await;
    let bytes = sink.tally.lock().map(|t| t.bytes()).unwrap_or(0);
    let total = sink.tally.lock().map(|t| t.total).unwrap_or(0);
    let end = match result {
        Ok(_) => DownloadEvent {
            model,
            stage: Stage::Done,
            bytes: total.max(bytes),
            total,
            error: None,
        },
        Err(e) => {
            tracing::warn!(%model, "console download failed: {e:#}");
            DownloadEvent {
                model,
                stage: Stage::Failed,
                bytes,
                total,
                error: Some(format!("{e:#}")),
            }
        }
    };
    downloads.publish(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(part: usize, bytes: u64) -> ProgressEvent {
        ProgressEvent::Progress {
            part,
            file: "f".into(),
            bytes,
            size: 100,
        }
    }

    #[test]
    fn tally_sums_the_parts_and_counts_resumed_and_cached_bytes() {
        let mut t = Tally::default();
        let start = ProgressEvent::Start {
            model: "m".into(),
            files: vec![],
            total_bytes: 300,
        };
        assert_eq!(t.apply(&start), Some((0, 300)));
        let cached = ProgressEvent::Cached {
            part: 0,
            file: "a".into(),
            size: 100,
        };
        assert_eq!(t.apply(&cached), Some((100, 300)));
        let resumed = ProgressEvent::FileStart {
            part: 1,
            file: "b".into(),
            size: 100,
            resumed_from: 40,
        };
        assert_eq!(t.apply(&resumed), Some((140, 300)));
        assert_eq!(t.apply(&progress(1, 70)), Some((170, 300)));
        let done = ProgressEvent::Done {
            model: "m".into(),
            path: "/p".into(),
        };
        assert_eq!(t.apply(&done), None);
    }

    #[test]
    fn one_download_per_model_and_at_most_the_cap_at_once() {
        let d = Downloads::new(ResolveOptions::from_env());
        d.reserve("a").unwrap();
        let again = d.reserve("a").unwrap_err();
        assert_eq!(again.status, StatusCode::CONFLICT);
        for i in 1..MAX_DOWNLOADS {
            d.reserve(&format!("m{i}")).unwrap();
        }
        let full = d.reserve("another").unwrap_err();
        assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS);
        // A finished download frees its place.
        d.publish(DownloadEvent {
            stage: Stage::Done,
            ..started("a")
        });
        d.reserve("another").unwrap();
    }

    #[test]
    fn progress_is_sent_and_remembered_until_the_end() {
        let d = Downloads::new(ResolveOptions::from_env());
        let mut rx = d.subscribe();
        d.reserve("m").unwrap();
        let sink = Sink {
            model: "m".into(),
            tally: Mutex::default(),
            downloads: d.clone(),
        };
        sink.event(&progress(0, 42));
        let ev = rx.try_recv().unwrap();
        assert_eq!((ev.stage, ev.bytes), (Stage::Progress, 42));
        assert_eq!(d.active()["m"].bytes, 42);
        d.publish(DownloadEvent {
            stage: Stage::Failed,
            error: Some("x".into()),
            ..started("m")
        });
        assert_eq!(rx.try_recv().unwrap().stage, Stage::Failed);
        assert!(d.active().is_empty());
    }
}
