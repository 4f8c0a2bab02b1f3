//! The local HTTP surface against web pages and other machines (issue 13): a rebinding `Host`
//! is refused on both servers, `text/plain` and cross-site requests cannot change the node,
//! the ticket is only on a loopback-only route, an API key guards the OpenAI API, exposing an
//! API without one is refused at start, and CORS answers only the origins given. Real `mesh
//! serve --client` processes on loopback.

use crate::common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{http_client, mesh_command, temp_home, MeshProcess};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use serde_json::{json, Value};
use tempfile::TempDir;

/// A client node (no model) on free loopback ports, with `extra` flags and `env` variables.
struct Surface {
    proc: MeshProcess,
    base: String,
    api: String,
    home: TempDir,
    http: reqwest::Client,
}

fn cmd(home: &TempDir, extra: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = mesh_command(home.path());
    cmd.env_remove("MESH_API_KEY")
        .args([
            "serve",
            "--client",
            "--ephemeral",
            "--mesh-bind",
            "127.0.0.1:0",
        ])
        .args(["--port", "0", "--api-port", "0"])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn node(extra: &[&str], env: &[(&str, &str)]) -> Surface {
    let home = temp_home();
    let proc = MeshProcess::start_async(cmd(&home, extra, env)).await;
    Surface {
        base: proc.base(),
        api: proc.api(),
        proc,
        home,
        http: http_client(),
    }
}

/// Status and JSON body (null when not JSON) of a request.
async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebinding_host_is_refused_on_both_servers() {
    let n = node(&[], &[]).await;
    for url in [
        format!("{}/api/status", n.api),
        format!("{}/api/peers", n.api),
        format!("{}/no/such/route", n.api),
        format!("{}/v1/models", n.base),
        format!("{}/no/such/route", n.base),
    ] {
        let (status, v) = answer(n.http.get(&url).header(HOST, "evil.example")).await;
        assert_eq!(status, 403, "{url}: {v}");
        assert_eq!(code(&v), "host_not_allowed", "{url}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("--allow-host evil.example"), "{msg}");
        let (status, _) = answer(n.http.get(&url).header(HOST, "evil.example:3131")).await;
        assert_eq!(status, 403, "{url} with a port");
    }
    // Loopback names and IP literals are answered.
    let port = n.api.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("console.localhost:{port}"),
    ] {
        let (status, v) = answer(
            n.http
                .get(format!("{}/api/status", n.api))
                .header(HOST, &host),
        )
        .await;
        assert_eq!(status, 200, "{host}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_host_name_is_answered() {
    let n = node(&["--allow-host", "mesh.test"], &[]).await;
    let (status, _) = answer(
        n.http
            .get(format!("{}/v1/models", n.base))
            .header(HOST, "mesh.test:9337"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = answer(
        n.http
            .get(format!("{}/api/status", n.api))
            .header(HOST, "other.test"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_plain_posts_and_cross_site_origins_cannot_change_the_node() {
    let n = node(&[], &[]).await;
    let ticket_body = json!({"ticket": "garbage"}).to_string();
    // What a page can send without a CORS preflight: text/plain, forms, no type at all.
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        for (method, url) in [
            (reqwest::Method::POST, format!("{}/api/join", n.api)),
            (reqwest::Method::POST, format!("{}/api/publish", n.api)),
            (reqwest::Method::DELETE, format!("{}/api/publish", n.api)),
            (
                reqwest::Method::POST,
                format!("{}/v1/chat/completions", n.base),
            ),
            (reqwest::Method::POST, format!("{}/v1/completions", n.base)),
        ] {
            let mut req = n
                .http
                .request(method.clone(), &url)
                .body(ticket_body.clone());
            if let Some(ct) = ct {
                req = req.header(CONTENT_TYPE, ct);
            }
            let (status, v) = answer(req).await;
            assert_eq!(status, 415, "{method} {url} as {ct:?}: {v}");
            assert_eq!(code(&v), "unsupported_media_type");
        }
    }
    // A cross-site page sending JSON (after a preflight the browser would fail anyway).
    let join = |origin: Option<String>, host: Option<String>| {
        let mut req = n
            .http
            .post(format!("{}/api/join", n.api))
            .header(CONTENT_TYPE, "application/json")
            .body(ticket_body.clone());
        if let Some(o) = origin {
            req = req.header(ORIGIN, o);
        }
        if let Some(h) = host {
            req = req.header(HOST, h);
        }
        answer(req)
    };
    let api_port = n.api.rsplit(':').next().unwrap().to_owned();
    for origin in [
        "https://evil.example".to_owned(),
        "null".to_owned(),
        format!("http://localhost:{}", api_port.parse::<u16>().unwrap() + 1),
    ] {
        let (status, v) = join(Some(origin.clone()), None).await;
        assert_eq!(status, 403, "{origin}: {v}");
        assert_eq!(code(&v), "cross_site_request");
    }
    // Same-origin pages (the console under either loopback name) and clients without an
    // Origin reach the handler, which judges the ticket (400: "garbage" is none).
    for (origin, host) in [
        (Some(format!("http://127.0.0.1:{api_port}")), None),
        (
            Some(format!("http://localhost:{api_port}")),
            Some(format!("localhost:{api_port}")),
        ),
        (None, None),
    ] {
        let (status, v) = join(origin.clone(), host).await;
        assert_eq!(status, 400, "{origin:?}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad ticket"));
    }
    // JSON still works on the OpenAI API (the official client sends it; cli.rs runs it).
    let (status, v) = answer(
        n.http
            .post(format!("{}/v1/chat/completions", n.base))
            .json(&json!({"model": "none", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(status, 404, "past the guards to routing: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_is_only_on_a_loopback_route_and_status_ticket() {
    let n = node(&[], &[]).await;
    let ticket = n.proc.value("ticket");
    assert!(ticket.starts_with("mesh1"));
    let status = n
        .http
        .get(format!("{}/api/status", n.api))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!status.contains(&ticket), "{status}");
    assert!(!status.contains("\"ticket\""), "{status}");
    let s: Value = serde_json::from_str(&status).unwrap();
    assert!(s["mesh_id"].as_str().is_some_and(|m| m.len() == 32), "{s}");
    assert_eq!(s["mesh_public"], false);

    let (code_, t) = answer(n.http.get(format!("{}/api/ticket", n.api))).await;
    assert_eq!(code_, 200, "{t}");
    assert_eq!(t["ticket"], ticket.as_str());
    assert_eq!(t["mesh_id"], s["mesh_id"]);
    // A rebinding page cannot read it either.
    let (code_, _) = answer(
        n.http
            .get(format!("{}/api/ticket", n.api))
            .header(HOST, "evil.example"),
    )
    .await;
    assert_eq!(code_, 403);

    let cli = |args: &[&str]| {
        let out = mesh_command(n.home.path())
            .arg("status")
            .args(args)
            .args(["--api", &n.api])
            .output()
            .unwrap();
        assert!(out.status.success(), "{:?}", out);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["--ticket"]).trim(), ticket);
    let json: Value = serde_json::from_str(&cli(&["--ticket", "--json"])).unwrap();
    assert_eq!(json["ticket"], ticket.as_str());
    let table = cli(&[]);
    assert!(!table.contains(&ticket), "{table}");
    assert!(table.contains("mesh status --ticket"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_the_openai_api() {
    // The key from the environment, as OpenAI clients are usually configured.
    let n = node(&[], &[("MESH_API_KEY", "k-123")]).await;
    let models = format!("{}/v1/models", n.base);
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("k-123"),
        Some("Basic k-123"),
    ] {
        let mut req = n.http.get(&models);
        if let Some(a) = auth {
            req = req.header(AUTHORIZATION, a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(code(&v), "invalid_api_key");
    }
    let (status, v) = answer(n.http.get(&models).bearer_auth("k-123")).await;
    assert_eq!(status, 200, "{v}");
    // A POST without the key is refused before its body is read.
    let (status, _) = answer(
        n.http
            .post(format!("{}/v1/chat/completions", n.base))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 401);
    // The management API asks no key of loopback clients (the console, the CLI).
    let (status, _) = answer(n.http.get(format!("{}/api/status", n.api))).await;
    assert_eq!(status, 200);
}

/// Runs `cmd`, which should exit at once: its success and stderr. A node that starts serving
/// instead is killed after 30 s and fails the test.
fn exits(mut cmd: Command) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} started serving instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[test]
fn exposing_an_api_without_a_key_is_refused_at_start() {
    let home = temp_home();
    for flags in [
        ["--host", "0.0.0.0"],
        ["--api-host", "0.0.0.0"],
        ["--host", "::"],
    ] {
        let (ok, err) = exits(cmd(&home, &flags, &[]));
        assert!(!ok, "{flags:?}");
        assert!(
            err.contains("--api-key")
                && err.contains("--insecure-no-auth")
                && err.contains(flags[0]),
            "{flags:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, err) = exits(cmd(&home, &["--cors", "localhost:5173"], &[]));
    assert!(!ok);
    assert!(err.contains("--cors localhost:5173"), "{err}");
}

/// The preflight a browser sends before a JSON POST with a key from `origin`.
fn preflight(n: &Surface, origin: &str) -> reqwest::RequestBuilder {
    n.http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", n.base),
        )
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_origins_given() {
    let app = "http://app.example:5173";
    let n = node(&["--cors", app, "--api-key", "k"], &[]).await;
    let resp = preflight(&n, app).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], app);
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    // The real request from that page: answered with the header the browser checks.
    let resp = n
        .http
        .get(format!("{}/v1/models", n.base))
        .header(ORIGIN, app)
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], app);
    // Another origin gets no allow-origin; the management API never sends CORS headers.
    let resp = preflight(&n, "https://evil.example").send().await.unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    let resp = n
        .http
        .get(format!("{}/api/status", n.api))
        .header(ORIGIN, app)
        .send()
        .await
        .unwrap();
    assert_eq!(cors_headers(resp.headers()), Vec::<String>::new());

    // Without --cors: no CORS headers at all, preflight or not.
    let plain = node(&[], &[]).await;
    let resp = preflight(&plain, app).send().await.unwrap();
    assert_eq!(cors_headers(resp.headers()), Vec::<String>::new());
    let resp = plain
        .http
        .get(format!("{}/v1/models", plain.base))
        .header(ORIGIN, app)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(cors_headers(resp.headers()), Vec::<String>::new());
}
