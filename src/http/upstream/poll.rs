//! Polls one upstream engine's `GET /v1/models` every [`POLL_INTERVAL`] (each poll bounded by
//! [`POLL_TIMEOUT`] and [`MAX_LIST_BYTES`]), feeds the outcome to its [`Health`] and applies the
//! actions: the [`Upstreams`] table changes and the mesh announces at once.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::health::{Action, Event, Health};
use super::{endpoint, Upstreams};
use crate::mesh::proto::announce::{MAX_MODELS, MAX_MODEL_CHARS};
use crate::mesh::Mesh;
use crate::util::http::{client, ClientOptions};

/// Time between two polls of an upstream.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Longest one poll may take (connect, answer and body).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest model list read from an upstream.
pub const MAX_LIST_BYTES: usize = 256 * 1024;

/// Polls engine `index` of `upstreams` until `cancel`; `mesh` (if any) announces each change.
pub async fn run(
    upstreams: Upstreams,
    index: usize,
    base: Url,
    mesh: Option<Mesh>,
    cancel: CancellationToken,
) {
    let http = match client(ClientOptions::api(POLL_TIMEOUT)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the HTTP client for upstream {base}: {e}");
            return;
        }
    };
    let url = endpoint(&base, "/models");
    let mut health = Health::default();
    loop {
        let event = match fetch(&http, &url).await {
            Ok(models) => Event::Answered(models),
            Err(reason) => Event::Failed(reason),
        };
        for action in health.on(event) {
            match action {
                Action::Serve(models) => {
                    tracing::info!("upstream {base} serves {models:?}");
                    upstreams.set_models(index, models);
                }
                Action::Withdraw(reason) => {
                    tracing::warn!(
                        "upstream {base} stopped answering ({reason}); its models leave routing"
                    );
                    upstreams.set_models(index, Vec::new());
                }
            }
            if let Some(mesh) = &mesh {
                mesh.serving_changed();
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// One poll: the model ids the engine lists.
async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<String>, String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        body.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if body.len() > MAX_LIST_BYTES {
            return Err(format!("its model list is over {MAX_LIST_BYTES} bytes"));
        }
    }
    model_ids(&body)
}

/// The ids of an OpenAI model list (`{"data": [{"id": …}, …]}`): at most [`MAX_MODELS`], each
/// a name the mesh can announce (1 to [`MAX_MODEL_CHARS`] characters, no control characters);
/// others are skipped. Pure.
pub fn model_ids(body: &[u8]) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "its model list is not JSON")?;
    let data = v["data"]
        .as_array()
        .ok_or("its model list has no 'data' array")?;
    let mut ids: Vec<String> = Vec::new();
    for id in data.iter().filter_map(|m| m["id"].as_str()) {
        let fits = !id.is_empty()
            && id.chars().count() <= MAX_MODEL_CHARS
            && !id.chars().any(char::is_control);
        if fits && !ids.iter().any(|i| i == id) && ids.len() < MAX_MODELS {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_list_gives_its_ids_and_hostile_entries_are_skipped() {
        let long = "x".repeat(MAX_MODEL_CHARS + 1);
        let body = serde_json::json!({"object": "list", "data": [
            {"id": "llama3.2:3b", "object": "model"}, {"id": "llama3.2:3b"}, {"id": ""},
            {"id": long}, {"id": "bad\nname"}, {"id": 5}, {"no": "id"}, {"id": "qwen"}
        ]});
        assert_eq!(
            model_ids(body.to_string().as_bytes()).unwrap(),
            ["llama3.2:3b", "qwen"]
        );
        let many: Vec<_> = (0..100)
            .map(|i| serde_json::json!({"id": format!("m{i}")}))
            .collect();
        let body = serde_json::json!({ "data": many });
        assert_eq!(
            model_ids(body.to_string().as_bytes()).unwrap().len(),
            MAX_MODELS
        );
        assert!(model_ids(b"<html>").is_err());
        assert!(model_ids(b"{\"models\":[]}").is_err());
    }
}
