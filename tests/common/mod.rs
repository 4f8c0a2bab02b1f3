//! Shared helpers for the integration tests: the test model, an in-process node on port 0,
//! and a small SSE reader. Every test talks real HTTP to a real model.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh::engine::EngineConfig;
use mesh::serve::Node;
use serde_json::Value;

/// The test model; `just test` (scripts/fetch-test-model.sh) puts it there.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("MESH_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("MESH_TEST_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/mesh-test")
                });
            cache.join("SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    assert!(
        path.is_file(),
        "test model missing at {}: run scripts/fetch-test-model.sh",
        path.display()
    );
    path
}

pub const MODEL: &str = "SmolLM2-135M-Instruct-Q4_1";

/// Engine settings small enough for a 2-core test machine. One thread each: nextest runs two
/// test processes at once, and llama.cpp's spinning threads crawl when cores are oversubscribed.
pub fn config() -> EngineConfig {
    EngineConfig {
        parallel: 4,
        ctx: Some(512),
        queue: 8,
        threads: Some(1),
        ..EngineConfig::new(model_path())
    }
}

/// An HTTP client. reqwest is built without a default TLS provider (the catalog picks ring), so
/// install it first even though these tests only speak plain HTTP.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub struct TestNode {
    pub node: Node,
    pub base: String,
    pub api: String,
    pub http: reqwest::Client,
}

pub async fn start(cfg: EngineConfig) -> TestNode {
    let node = Node::start(cfg, IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0)
        .await
        .expect("node starts");
    TestNode {
        base: format!("http://{}", node.openai_addr),
        api: format!("http://{}", node.api_addr),
        node,
        http: http_client(),
    }
}

impl TestNode {
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.post(path, body).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    pub async fn status(&self) -> Value {
        self.http
            .get(format!("{}/api/status", self.api))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `/api/status` until `pred` holds; panics after `limit`.
    pub async fn wait_status(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}; last status {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads SSE `data:` payloads from a streaming response, one at a time.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200, "stream request failed");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Self {
            body: resp.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next `data:` payload, or `None` when the stream ends.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(data.join("\n"));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self
                    .buf
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8 stream")),
                Some(Err(e)) => panic!("stream broke: {e}"),
                None => return None,
            }
        }
    }

    /// Every remaining payload.
    pub async fn all(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.push(d);
        }
        out
    }
}

/// Text of a chat chunk or completion chunk.
pub fn chunk_text(chunk: &Value) -> String {
    let c = &chunk["choices"][0];
    c["delta"]["content"]
        .as_str()
        .or(c["text"].as_str())
        .unwrap_or("")
        .to_owned()
}

pub fn user(text: &str) -> Value {
    serde_json::json!([{"role": "user", "content": text}])
}
