//! Shared helpers for the integration tests: the test model or the scripted fake generator,
//! an in-process node on port 0, a small SSE reader, [`eventually`], the fake hub ([`hub`]),
//! and the one way to run the `mesh` binary ([`process`]).
#![allow(dead_code)]

pub mod hub;
pub mod lab;
pub mod process;

pub use process::{mesh_command, serve_test_model, temp_home, MeshProcess};

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use futures::StreamExt;
use mesh::engine::EngineConfig;
use mesh::http::fake::{Script, Scripted};
use mesh::http::generate::Generate;
use mesh::node::Node;
use serde_json::Value;

/// The test model; `just test` (scripts/fetch-test-model.sh) puts it there.
/// Serves the test model on `hub` under its catalog entry's repo and file, and writes a catalog
/// of that one model to `file` (for `--catalog`); returns the entry.
pub fn serve_test_model_catalog(hub: &hub::FakeHub, file: &Path) -> mesh::catalog::CatalogEntry {
    let entry = mesh::catalog::Catalog::embedded()
        .unwrap()
        .get(MODEL)
        .expect("the test model is in the catalog")
        .clone();
    hub.add_file(
        &entry.repo,
        &entry.files[0],
        std::fs::read(model_path()).unwrap(),
    );
    let one = mesh::catalog::Catalog {
        models: vec![entry.clone()],
    };
    std::fs::write(file, toml::to_string(&one).unwrap()).unwrap();
    entry
}

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

/// The second test model (Gemma 3 270M, Q4_K_M); scripts/fetch-test-model.sh puts it there.
pub fn model2_path() -> PathBuf {
    let path = std::env::var_os("MESH_TEST_MODEL2")
        .map(PathBuf::from)
        .unwrap_or_else(|| model_path().with_file_name(MODEL2_FILE));
    assert!(
        path.is_file(),
        "second test model missing at {}: run scripts/fetch-test-model.sh",
        path.display()
    );
    path
}

pub const MODEL2_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

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

/// A reqwest client (after installing the TLS crypto provider reqwest needs in this build).
pub fn http_client() -> reqwest::Client {
    mesh::util::tls::install_crypto_provider();
    reqwest::Client::new()
}

pub struct TestNode {
    pub node: Node,
    pub base: String,
    pub api: String,
    pub http: reqwest::Client,
}

/// What [`eventually`] accepts from its check: `true`, or `Some(value)`.
pub trait Outcome {
    type Value;
    fn value(self) -> Option<Self::Value>;
}

impl Outcome for bool {
    type Value = ();
    fn value(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn value(self) -> Option<T> {
        self
    }
}

/// Runs `check` every 50 ms until it returns `true` / `Some(v)` (and returns `v`); panics
/// naming `what` after `limit`.
pub async fn eventually<O: Outcome, F: std::future::Future<Output = O>>(
    limit: Duration,
    what: impl std::fmt::Display,
    mut check: impl FnMut() -> F,
) -> O::Value {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await.value() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fetches a value every 50 ms until `pred` holds for it, and returns it; panics naming `what`
/// and showing the last value fetched after `limit`.
pub async fn eventually_value<T: std::fmt::Debug + Clone, F: std::future::Future<Output = T>>(
    limit: Duration,
    what: impl std::fmt::Display,
    mut fetch: impl FnMut() -> F,
    pred: impl Fn(&T) -> bool,
) -> T {
    let last = std::sync::Mutex::new(None::<T>);
    let (last_ref, pred) = (&last, &pred);
    let fetch = &mut fetch;
    eventually(
        limit,
        format_args!("{what}; last seen {}", Shown(last_ref)),
        || {
            let next = fetch();
            async move {
                let v = next.await;
                let ok = pred(&v);
                if let Ok(mut l) = last_ref.lock() {
                    *l = Some(v.clone());
                }
                ok.then_some(v)
            }
        },
    )
    .await
}

/// The scripted fake generator under the test model's name ("Hello, world!" in three pieces).
pub fn fake() -> Arc<Scripted> {
    Arc::new(Scripted::new(MODEL))
}

/// A fake generator under `name` answering with `script`.
pub fn fake_with(name: &str, script: Script) -> Arc<Scripted> {
    Arc::new(Scripted::with_script(name, script))
}

/// A single node (no mesh) serving `local` instead of a model.
pub async fn start_fake(local: Arc<dyn Generate>) -> TestNode {
    start_node_with(Some(local), Vec::new(), None, None)
        .await
        .expect("node starts")
}

/// A mesh node serving `local` instead of a model.
pub async fn start_mesh_fake(
    local: Arc<dyn Generate>,
    mesh: MeshConfig,
) -> anyhow::Result<TestNode> {
    start_node_with(Some(local), Vec::new(), Some(mesh), None).await
}

/// A mesh node with Nostr discovery, serving `local` instead of a model.
pub async fn start_node_fake(
    local: Arc<dyn Generate>,
    mesh: MeshConfig,
    discovery: Option<mesh::discovery::DiscoveryConfig>,
) -> anyhow::Result<TestNode> {
    start_node_with(Some(local), Vec::new(), Some(mesh), discovery).await
}

async fn start_node_with(
    local: Option<Arc<dyn Generate>>,
    engines: Vec<EngineConfig>,
    mesh: Option<MeshConfig>,
    discovery: Option<mesh::discovery::DiscoveryConfig>,
) -> anyhow::Result<TestNode> {
    let opts = NodeOptions {
        engines,
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        api_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        api_port: 0,
        surface: Default::default(),
        mesh,
        discovery,
        hub: mesh::catalog::ResolveOptions::from_env(),
        upstreams: Vec::new(),
        machine_home: None,
    };
    let node = match local {
        Some(g) => Node::start_with_local(opts, g).await?,
        None => Node::start_with(opts).await?,
    };
    Ok(TestNode {
        base: format!("http://{}", node.openai_addr),
        api: format!("http://{}", node.api_addr),
        node,
        http: http_client(),
    })
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
        eventually_value(limit, what, || self.status(), |s| pred(s)).await
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

    /// The next `data:` payload, or `None` when the stream ends; a broken stream panics.
    pub async fn next(&mut self) -> Option<String> {
        self.try_next().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Self::next`] for watchers that outlive the server: a broken stream is an error.
    pub async fn try_next(&mut self) -> Result<Option<String>, String> {
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
                return Ok(Some(data.join("\n")));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self
                    .buf
                    .push_str(std::str::from_utf8(&bytes).expect("UTF-8 stream")),
                Some(Err(e)) => return Err(format!("stream broke: {e}")),
                None => return Ok(None),
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

/// The chunks of a stream that must end with `data: [DONE]` (asserted), parsed as JSON.
pub fn done_chunks(data: &[String]) -> Vec<Value> {
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
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

/// `GET url` and its JSON body.
/// The model ids the OpenAI API at `base` lists.
pub async fn model_ids(http: &reqwest::Client, base: &str) -> Vec<String> {
    let v = get_json(http, &format!("{base}/v1/models")).await;
    v["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON body")
}

pub async fn post_value(http: &reqwest::Client, url: &str, body: &Value) -> Value {
    let resp = http.post(url).json(body).send().await;
    resp.expect("request sent").json().await.expect("JSON body")
}

// ---- mesh helpers ----

use mesh::mesh::proto::ticket::Ticket;
use mesh::mesh::MeshConfig;
use mesh::node::NodeOptions;

/// Mesh settings for tests: a throwaway key, loopback only, no relays.
pub fn mesh_config(join: Vec<Ticket>) -> MeshConfig {
    let mut cfg = MeshConfig::new(iroh::SecretKey::generate());
    cfg.net = mesh::mesh::NetConfig::offline();
    cfg.join = join;
    cfg.bind = Some((Ipv4Addr::LOCALHOST, 0).into());
    cfg.name = "test".into();
    cfg
}

/// A node in a mesh: `engine` none for a client.
pub async fn start_mesh(
    engine: Option<EngineConfig>,
    mesh: MeshConfig,
) -> anyhow::Result<TestNode> {
    start_node(engine, mesh, None).await
}

/// A node in a mesh, with Nostr discovery.
pub async fn start_node(
    engine: Option<EngineConfig>,
    mesh: MeshConfig,
    discovery: Option<mesh::discovery::DiscoveryConfig>,
) -> anyhow::Result<TestNode> {
    start_node_with(None, engine.into_iter().collect(), Some(mesh), discovery).await
}

/// A mesh node serving several models (one engine each).
pub async fn start_mesh_models(
    engines: Vec<EngineConfig>,
    mesh: MeshConfig,
) -> anyhow::Result<TestNode> {
    start_node_with(None, engines, Some(mesh), None).await
}

/// The engine config of the test model under another model name.
pub fn config_named(name: &str) -> EngineConfig {
    EngineConfig {
        model_name: Some(name.into()),
        ..config()
    }
}

impl TestNode {
    pub fn ticket(&self) -> Ticket {
        self.node.mesh.as_ref().expect("mesh node").ticket()
    }

    pub fn node_id(&self) -> String {
        self.node
            .mesh
            .as_ref()
            .expect("mesh node")
            .node_id()
            .to_string()
    }

    pub async fn get_json(&self, url: &str) -> Value {
        get_json(&self.http, url).await
    }

    /// Model ids of `/v1/models`.
    pub async fn model_ids(&self) -> Vec<String> {
        let v = self.get_json(&format!("{}/v1/models", self.base)).await;
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn peers(&self) -> Vec<Value> {
        let v = self.get_json(&format!("{}/api/peers", self.api)).await;
        v["peers"].as_array().unwrap().clone()
    }

    /// Polls `/api/peers` until `pred` holds; panics after `limit`.
    pub async fn wait_peers(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        eventually_value(limit, what, || self.peers(), |p| pred(p)).await
    }
}

/// True when `peers` holds `node_id` serving `model`.
pub fn serves(peers: &[Value], node_id: &str, model: &str) -> bool {
    peers.iter().any(|p| {
        p["node_id"] == node_id
            && p["models"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == model))
    })
}

pub fn chat(model: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "messages": user("Say hello"),
        "max_tokens": 8,
        "temperature": 0,
        "stream": stream,
    })
}

/// The value of a banner line `  LABEL   value`.
pub fn banner_value(lines: &[String], label: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_owned()))
}

// ---- nostr helpers ----

use mesh::discovery::publish::PublishSettings;
use mesh::discovery::DiscoveryConfig;
use nostr_relay_builder::prelude::{
    LocalRelay, MemoryDatabase, MemoryDatabaseOptions, RelayBuilder,
};

/// A Nostr relay on 127.0.0.1 (nostr-relay-builder, in this process).
pub struct TestRelay {
    pub relay: LocalRelay,
    pub url: nostr::RelayUrl,
}

/// A relay whose store can be filled directly (bypassing the relay's own checks) with `db`.
pub async fn start_relay_with(db: MemoryDatabase) -> TestRelay {
    // No port: the builder picks a free one (port 0 would stay 0 in `url()`).
    let builder = RelayBuilder::default()
        .addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .database(db);
    let relay = LocalRelay::new(builder);
    relay.run().await.expect("relay starts");
    let url = relay.url().await;
    TestRelay { relay, url }
}

pub fn relay_store() -> MemoryDatabase {
    MemoryDatabase::with_opts(MemoryDatabaseOptions {
        events: true,
        max_events: Some(10_000),
    })
}

pub async fn start_relay() -> TestRelay {
    start_relay_with(relay_store()).await
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.relay.shutdown();
    }
}

/// Discovery for a test node: a throwaway Nostr key, these relays.
pub fn discovery(
    relays: Vec<nostr::RelayUrl>,
    publish: bool,
    region: Option<&str>,
) -> DiscoveryConfig {
    DiscoveryConfig {
        keys: nostr::Keys::generate(),
        settings: PublishSettings {
            relays,
            name: "test mesh".into(),
            region: region.map(Into::into),
            wanted: Vec::new(),
            max_clients: 64,
            interval: Duration::from_secs(60),
            ttl: Duration::from_secs(180),
        },
        net: mesh::mesh::NetConfig::offline(),
        publish,
        local: Default::default(),
    }
}

/// Shows the latest value a check saw, when its wait times out.
struct Shown<'a, T>(&'a std::sync::Mutex<T>);

impl<T: std::fmt::Debug> std::fmt::Display for Shown<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.lock() {
            Ok(v) => write!(f, "{:?}", *v),
            Err(_) => f.write_str("?"),
        }
    }
}

/// A loopback TCP port that refuses connections and that no one else can take while this is
/// held: a socket bound to it that never listens. (Binding port 0, reading the number and
/// closing the socket would let another process take the port in between.)
pub struct ClosedPort {
    fd: i32,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> Self {
        // SAFETY: plain socket(2)/bind(2)/getsockname(2) on a socket this function owns; the
        // address structs are fully initialised and their sizes passed exactly.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket");
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            addr.sin_port = 0;
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len);
            assert_eq!(rc, 0, "bind");
            let mut got: libc::sockaddr_in = std::mem::zeroed();
            let mut got_len = len;
            let rc = libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len);
            assert_eq!(rc, 0, "getsockname");
            Self {
                fd,
                port: u16::from_be(got.sin_port),
            }
        }
    }

    /// Frees the port (for a server about to bind it at once).
    pub fn release(self) -> u16 {
        self.port
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ClosedPort {
    fn drop(&mut self) {
        // SAFETY: closing the socket this value owns, once.
        unsafe { libc::close(self.fd) };
    }
}
