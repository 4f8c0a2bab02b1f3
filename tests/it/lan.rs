//! Finding meshes with no Nostr relay and no internet (issue 11, item 5): `--lan` (mDNS) between
//! two hosts of one LAN made of network namespaces (common/lab.rs; skipped with the reason
//! printed where namespaces cannot be made — mDNS is multicast and must never leave the lab),
//! and `--peers FILE` on loopback. Every Nostr relay named here is a closed port.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::lab::{block_in_ns, Lab};
use crate::common::*;
use crate::netns::first_answer;

/// `mesh discover ARGS --json` run by `cmd`; its JSON, or the failure's output.
fn discover_json(mut cmd: Command, args: &[&str]) -> Value {
    let out = cmd
        .args(["discover", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The offer of `node_id` in a `discover --json` answer.
fn offer_of<'a>(found: &'a Value, node_id: &str) -> Option<&'a Value> {
    found["offers"]
        .as_array()?
        .iter()
        .find(|o| o["node_id"] == node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_and_auto_find_a_mesh_on_the_lan_with_no_nostr_relay_and_no_internet() {
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    // The HTTP clients that talk to the nodes inside the namespaces need a TLS provider.
    mesh::util::tls::install_crypto_provider();
    let (a, b) = (lab.add_lan_site().unwrap(), lab.add_lan_site().unwrap());
    // The "default" iroh relay is on the lab's internet, which these hosts cannot reach, and
    // the Nostr relay is a closed port: only the LAN is left.
    let relays = ["https://198.51.100.10".to_string()];
    let nostr = "ws://127.0.0.1:9";
    let host = crate::netns::serve(
        &lab,
        &a,
        &relays,
        &["--public", "--publish", "--lan", "--relay", nostr],
    )
    .await;
    let host_id = host.value("node id");

    // The host's first offer is signed a moment after its banner: ask again for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let started = Instant::now();
        let found = discover_json(
            lab.mesh(&b.ns, "lan-b", &relays),
            &["--lan", "--relay", nostr],
        );
        eprintln!(
            "lan: `mesh discover --lan` took {:.2} s",
            started.elapsed().as_secs_f64()
        );
        if offer_of(&found, &host_id).is_some() || Instant::now() > deadline {
            break found;
        }
    };
    let offer = offer_of(&found, &host_id).unwrap_or_else(|| panic!("no LAN offer: {found}"));
    let ticket = mesh::mesh::Ticket::decode(&host.value("ticket")).unwrap();
    assert_eq!(offer["mesh_id"], ticket.mesh_id.to_string());
    assert_eq!(offer["offer"]["public"], true, "{offer}");
    assert_eq!(found["local"]["lan"], true, "{found}");
    assert!(found["local"]["lan_nodes"].as_u64() >= Some(1), "{found}");
    assert!(
        found["relays"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == false),
        "no Nostr relay answered: {found}"
    );
    // The RTT probe reached it on the LAN.
    let rtt = offer["terms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "rtt")
        .unwrap();
    assert!(
        rtt["detail"].as_str().unwrap().ends_with("ms measured"),
        "{rtt}"
    );

    let started = Instant::now();
    let mut cmd = lab.mesh(&b.ns, "lan-auto", &relays);
    cmd.args([
        "--auto",
        "--client",
        "--ephemeral",
        "--lan",
        "--relay",
        nostr,
    ]);
    let client = MeshProcess::start_async(cmd).await;
    assert!(
        client.lines.iter().any(|l| l.starts_with("auto: joining")),
        "{:?}",
        client.lines
    );
    let text = first_answer(&b.ns, client.base(), Duration::from_secs(60)).unwrap();
    assert!(!text.is_empty());
    eprintln!(
        "lan: `mesh --auto --client --lan` start to first answer {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

/// A node publishing a public mesh (to a Nostr relay that is down), serving the fake model.
async fn publishing_node() -> (TestNode, ClosedPort) {
    let closed = ClosedPort::new();
    let url: nostr::RelayUrl = format!("ws://127.0.0.1:{}", closed.port).parse().unwrap();
    let mut cfg = mesh_config(vec![]);
    cfg.public = true;
    let node = start_node_fake(fake(), cfg, Some(discovery(vec![url], true, None)))
        .await
        .unwrap();
    (node, closed)
}

/// `mesh ARGS` in `home` on free loopback ports, no Nostr relay reachable.
fn mesh_in(home: &Path, closed: &ClosedPort) -> Command {
    let mut cmd = mesh_command(home);
    cmd.env("MESH_RELAYS", format!("ws://127.0.0.1:{}", closed.port));
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_file_ticket_joins_and_a_node_address_lists_the_nodes_offer() {
    let (a, closed) = publishing_node().await;
    let mesh = a.node.mesh.as_ref().unwrap();
    let home = temp_home();
    let ticket = mesh.ticket();
    let port = ticket.peers[0].ip_addrs().next().unwrap().port();

    // A node address: discover asks the node for its offer, no relay involved.
    let file = home.path().join("nodes.txt");
    std::fs::write(
        &file,
        format!("# the cluster\n{}@127.0.0.1:{port}\n", mesh.node_id()),
    )
    .unwrap();
    let found = discover_json(
        mesh_in(home.path(), &closed),
        &["--peers", file.to_str().unwrap()],
    );
    let offer = offer_of(&found, &mesh.node_id().to_string())
        .unwrap_or_else(|| panic!("no offer from the listed node: {found}"));
    assert_eq!(offer["mesh_id"], mesh.mesh_id().to_string());
    assert_eq!(offer["offer"]["models"][0]["name"], MODEL);
    assert_eq!(found["local"]["asked"], 1, "{found}");
    assert_eq!(found["local"]["offers"], 1, "{found}");

    // A ticket: `mesh serve` joins it, and the mesh's model answers.
    let file = home.path().join("tickets.txt");
    std::fs::write(&file, format!("{}\n", ticket.encode())).unwrap();
    let mut cmd = mesh_in(home.path(), &closed);
    cmd.args([
        "serve",
        "--client",
        "--ephemeral",
        "--port",
        "0",
        "--api-port",
        "0",
    ])
    .args([
        "--mesh-bind",
        "127.0.0.1:0",
        "--peers",
        file.to_str().unwrap(),
    ]);
    let b = MeshProcess::start_async(cmd).await;
    let joined = mesh::mesh::Ticket::decode(&b.value("ticket")).unwrap();
    assert_eq!(joined.mesh_id, mesh.mesh_id());
    let http = http_client();
    let url = format!("{}/v1/chat/completions", b.base());
    let answer = eventually_value(
        Duration::from_secs(20),
        "an answer from the mesh's model",
        || async {
            match http.post(&url).json(&chat(MODEL, false)).send().await {
                Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                _ => None,
            }
        },
        Option::is_some,
    )
    .await
    .unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello, world!");
}

#[test]
fn a_bad_peers_file_is_refused_naming_its_line() {
    let home = temp_home();
    let closed = ClosedPort::new();
    let file = home.path().join("peers.txt");
    let id = iroh::SecretKey::generate().public();
    std::fs::write(&file, format!("# ok\n{id}@127.0.0.1:7000\nnot a peer\n")).unwrap();
    let out = mesh_in(home.path(), &closed)
        .args(["discover", "--peers", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("peers.txt") && err.contains("line 3") && err.contains("NODE_ID@IP:PORT"),
        "{err}"
    );
    // `mesh serve` joins tickets; a node address there is an error that says what to do.
    std::fs::write(&file, format!("{id}@127.0.0.1:7000\n")).unwrap();
    let out = mesh_in(home.path(), &closed)
        .args([
            "serve",
            "--client",
            "--ephemeral",
            "--port",
            "0",
            "--api-port",
            "0",
        ])
        .args(["--peers", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("entry 1") && err.contains("joins tickets"),
        "{err}"
    );
}

/// `mesh ARGS` run to its end in `ns` (off the runtime), as `lab.mesh` sets it up.
async fn run_in(lab: &Lab, ns: &str, home: &str, relays: &[String], args: &[&str]) -> Output {
    let mut cmd = lab.mesh(ns, home, relays);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
        .await
        .expect("run task")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// In `ns`: the node ids in the peer list of the node whose management API is `api`.
fn peer_ids_in(ns: &str, api: &str) -> Vec<String> {
    let api = api.to_owned();
    block_in_ns(ns, move || async move {
        let http = reqwest::Client::builder().no_proxy().build().ok()?;
        let v: Value = http
            .get(format!("{api}/api/peers"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(
            v["peers"]
                .as_array()?
                .iter()
                .filter_map(|p| p["node_id"].as_str().map(str::to_owned))
                .collect(),
        )
    })
    .unwrap_or_default()
}

/// `mesh invite --lan --json EXTRA` in `ns` for the node at `api`: the code, checked to answer
/// on the LAN only (no Nostr relay answers in the lab).
async fn lan_invite(lab: &Lab, ns: &str, api: &str, relays: &[String], extra: &[&str]) -> String {
    let args = [&["invite", "--lan", "--json", "--api", api][..], extra].concat();
    let out = run_in(lab, ns, "lan-code-a", relays, &args).await;
    assert!(out.status.success(), "invite: {}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["lan"], true, "{doc}");
    assert_eq!(doc["nostr"], false, "no Nostr relay answered: {doc}");
    doc["code"].as_str().unwrap().to_string()
}

fn channel_of(code: &str) -> u16 {
    code.split('-').next().unwrap().parse().unwrap()
}

/// The same code with its last word changed: a wrong guess on the right channel.
fn wrong_guess(code: &str) -> String {
    let (head, last) = code.rsplit_once('-').unwrap();
    let other = if last == "zoo" { "zone" } else { "zoo" };
    format!("{head}-{other}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_code_works_on_the_lan_with_no_nostr_relay_and_wrong_and_expired_codes_fail() {
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    mesh::util::tls::install_crypto_provider();
    let (a, b) = (lab.add_lan_site().unwrap(), lab.add_lan_site().unwrap());
    // No iroh relay reachable, and the only Nostr relay is a closed port: only the LAN is left.
    let relays = ["https://198.51.100.10".to_string()];
    let nostr = "ws://127.0.0.1:9";

    let mut cmd = lab.mesh(&a.ns, "lan-code-a", &relays);
    cmd.args([
        "serve",
        "--client",
        "--ephemeral",
        "--lan",
        "--relay",
        nostr,
    ]);
    let host = MeshProcess::start_async(cmd).await;
    let api = host.api();
    let invite = |extra: &'static [&'static str]| lan_invite(&lab, &a.ns, &api, &relays, extra);
    let mut channels = vec![];

    // The code joins B to A's private mesh, traded on the LAN alone.
    let code = invite(&[]).await;
    channels.push(channel_of(&code));
    let started = Instant::now();
    let mut cmd = lab.mesh(&b.ns, "lan-code-b", &relays);
    cmd.args([
        "serve",
        "--client",
        "--ephemeral",
        "--lan",
        "--relay",
        nostr,
    ])
    .args(["--join", &code]);
    let joined = MeshProcess::start_async(cmd).await;
    eprintln!(
        "lan: `mesh serve --join CODE --lan` start to banner {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(host.value("mesh"), joined.value("mesh"), "same mesh");
    let id = joined.value("node id");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !peer_ids_in(&a.ns, &host.api()).contains(&id) {
        assert!(Instant::now() < deadline, "A never saw B as a peer");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Used once: used up.
    let out = run_in(&lab, &b.ns, "lan-j", &relays, &["join", &code, "--lan"]).await;
    assert!(stderr(&out).contains("used up"), "{}", stderr(&out));

    // A wrong guess on the LAN is refused as wrong and burns the code.
    let code = invite(&[]).await;
    channels.push(channel_of(&code));
    let out = run_in(
        &lab,
        &b.ns,
        "lan-j",
        &relays,
        &["join", &wrong_guess(&code), "--lan"],
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong join code"), "{}", stderr(&out));
    let out = run_in(&lab, &b.ns, "lan-j", &relays, &["join", &code, "--lan"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("burned"), "{}", stderr(&out));

    // An expired code is refused with its own reason.
    let code = invite(&["--ttl", "1s"]).await;
    channels.push(channel_of(&code));
    // A code nobody opened (a channel none of A's codes has): nobody answered on the LAN. It
    // waits 20 s, so it runs while the expired code is tried.
    let free = (1..=999).find(|c| !channels.contains(c)).unwrap();
    let nobody = {
        let mut cmd = lab.mesh(&b.ns, "lan-nobody", &relays);
        cmd.args(["join", &format!("{free}-zoo-zoo-zoo"), "--lan"]);
        tokio::task::spawn_blocking(move || cmd.output().expect("mesh runs"))
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = run_in(&lab, &b.ns, "lan-j", &relays, &["join", &code, "--lan"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    let out = nobody.await.unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("nobody on the LAN answered join code {free} ")),
        "{}",
        stderr(&out)
    );
}
