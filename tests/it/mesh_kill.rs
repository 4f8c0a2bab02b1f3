//! A real crash: a `mesh serve` process killed with SIGKILL (no goodbye, no QUIC close) is out
//! of the other nodes' routing within 5 s, and its model then answers 503 naming it.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_is_dropped_within_five_seconds() {
    let a = start_mesh(None, mesh_config(vec![])).await.unwrap();
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["serve", "--model"])
        .arg(model_path())
        .args([
            "--model-name",
            "killed-model",
            "--port",
            "0",
            "--api-port",
            "0",
        ])
        .args([
            "--ctx",
            "256",
            "--threads",
            "1",
            "--parallel",
            "1",
            "--ephemeral",
        ])
        .args(["--mesh-bind", "127.0.0.1:0", "--join", &a.ticket().encode()]);
    let mut b = MeshProcess::spawn(cmd);
    let peers = a
        .wait_peers(Duration::from_secs(60), "B to join", |p| {
            p.iter().any(|x| x["models"][0]["name"] == "killed-model")
        })
        .await;
    let b_id = peers[0]["node_id"].as_str().unwrap().to_owned();
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat("killed-model", false))
        .await;
    assert_eq!(status, 200, "{body}");

    b.kill(); // SIGKILL, and reaped
    let killed = Instant::now();
    a.wait_peers(Duration::from_secs(5), "B to be dropped", |p| {
        !p.iter().any(|x| x["node_id"] == b_id.as_str())
    })
    .await;
    eprintln!("dropped {:?} after SIGKILL", killed.elapsed());
    assert!(a.model_ids().await.is_empty());
    let (status, body) = a
        .post_json("/v1/chat/completions", &chat("killed-model", false))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'killed-model'"));
    a.node.shutdown().await;
}
