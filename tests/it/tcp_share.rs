//! TCP sharing with real `mesh` processes on loopback (issue 15): an HTTP server and an echo
//! server shared on node A (`mesh share`) and used on node B through `mesh connect`; 10 MB
//! both ways, byte-exact, over two concurrent connections, each half-closed by its client
//! (which still reads the rest); a non-loopback target refused; the share removed → the
//! listener refuses with a clear error and a new `mesh connect` fails with one.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::hub::synthetic;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes each connection sends each way.
const TEN_MB: usize = 10 * 1024 * 1024;

/// `mesh serve --client` on free loopback ports, with `extra` flags.
fn serve(home: &Path, extra: &[&str]) -> Command {
    let mut cmd = mesh_command(home);
    cmd.args(["serve", "--client", "--ephemeral", "--port", "0"])
        .args(["--api-port", "0", "--mesh-bind", "127.0.0.1:0"])
        .args(extra);
    cmd
}

/// Runs `mesh ARGS` to its end (off the runtime).
async fn run(home: &Path, args: &[&str]) -> Output {
    let mut cmd = mesh_command(home);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
        .await
        .expect("run task")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An echo server: each connection gets back what it sent, then EOF after the client's EOF.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// An HTTP server answering `GET /` with a fixed page.
async fn http_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "shared page" }));
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

/// The shares `api`'s peer table shows for `node_id`.
async fn shares_of(api: &str, node_id: &str) -> Vec<String> {
    let v = get_json(&http_client(), &format!("{api}/api/peers")).await;
    v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["node_id"] == node_id)
        .flat_map(|p| p["shares"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// Waits (at most 30 s) until B sees A share exactly `want`.
async fn wait_shares(api: &str, node_id: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = shares_of(api, node_id).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "shares {got:?}, never {want:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `mesh connect NAME --json` against `api`: the process and the address it listens on.
async fn connect(home: &Path, api: &str, name: &str) -> (MeshProcess, SocketAddr) {
    let mut cmd = mesh_command(home);
    cmd.args(["connect", name, "--json", "--api", api]);
    let mut p = MeshProcess::spawn(cmd);
    let lines = p.wait_line("\"listening\"", Duration::from_secs(30)).await;
    let ev: Value = serde_json::from_str(lines.last().unwrap()).expect("a JSON line");
    let bind = ev["bind"].as_str().unwrap().parse().unwrap();
    (p, bind)
}

/// Sends `data` through `addr`, shuts its write side (half-close) and reads until EOF.
async fn echo_through(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(TEN_MB);
    r.read_to_end(&mut got).await.unwrap();
    writer.await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_servers_carry_10_mb_both_ways_half_close_and_refuse_once_removed() {
    let (home_a, home_b) = (temp_home(), temp_home());
    let a = MeshProcess::start_async(serve(home_a.path(), &["--name", "node-a"])).await;
    let b = MeshProcess::start_async(serve(home_b.path(), &["--join", &a.value("ticket")])).await;
    let (a_api, b_api, a_id) = (a.api(), b.api(), a.value("node id"));
    let (echo, web) = (echo_server().await, http_server().await);

    let out = run(
        home_a.path(),
        &["share", "lan", "192.168.1.1:80", "--api", &a_api],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--allow-remote-target"),
        "{}",
        text(&out)
    );
    for (name, target) in [("echo", echo), ("web", web)] {
        let out = run(
            home_a.path(),
            &["share", name, &target.to_string(), "--api", &a_api],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out));
    }
    wait_shares(&b_api, &a_id, &["echo", "web"]).await;
    let out = run(home_a.path(), &["share", "--list", "--api", &a_api]).await;
    assert!(
        text(&out).contains("echo") && text(&out).contains(&web.to_string()),
        "{}",
        text(&out)
    );
    let out = run(home_b.path(), &["peers", "--api", &b_api]).await;
    assert!(text(&out).contains("echo, web"), "{}", text(&out));

    let (_web_conn, web_addr) = connect(home_b.path(), &b_api, "web").await;
    let page = http_client()
        .get(format!("http://{web_addr}/"))
        .send()
        .await
        .expect("GET through the mesh")
        .text()
        .await
        .unwrap();
    assert_eq!(page, "shared page");

    let (mut echo_conn, echo_addr) = connect(home_b.path(), &b_api, "echo").await;
    let (one, two) = (synthetic(TEN_MB, 1), synthetic(TEN_MB, 2));
    let (got_one, got_two) = tokio::join!(
        echo_through(echo_addr, one.clone()),
        echo_through(echo_addr, two.clone())
    );
    assert!(got_one == one, "connection 1: {} bytes back", got_one.len());
    assert!(got_two == two, "connection 2: {} bytes back", got_two.len());

    let listed = get_json(&http_client(), &format!("{a_api}/api/shares")).await;
    let names: Vec<&str> = listed["shares"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["echo", "web"], "{listed:#}");
    let listed = get_json(&http_client(), &format!("{b_api}/api/shares")).await;
    assert_eq!(
        listed["connects"].as_array().unwrap().len(),
        2,
        "{listed:#}"
    );

    // Removed: the running listener refuses new connections with a clear error, and a new
    // `mesh connect` fails with one once B has heard.
    let out = run(home_a.path(), &["unshare", "echo", "--api", &a_api]).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut s = TcpStream::connect(echo_addr).await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    echo_conn
        .wait_line("no longer shares \\\"echo\\\"", Duration::from_secs(20))
        .await;
    wait_shares(&b_api, &a_id, &["web"]).await;
    let out = run(home_b.path(), &["connect", "echo", "--api", &b_api]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no member shares \"echo\""),
        "{}",
        text(&out)
    );

    // Ctrl-C on `mesh connect` closes its port on the node: nothing is left behind.
    echo_conn.interrupt();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = get_json(&http_client(), &format!("{b_api}/api/shares")).await;
        if listed["connects"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "listener still open: {listed:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(TcpStream::connect(echo_addr).await.is_err(), "port closed");
}
