//! Strangers behind home NATs (issue 11), in a closed internet of network namespaces
//! (common/lab.rs): two `iroh-relay`s with a self-signed certificate and QUIC address discovery,
//! and sites that are public or behind a full-cone, port-restricted or symmetric NAT. Nodes get
//! no network flags: the "default" relay list and the relays' certificate come from the
//! environment (`MESH_DEFAULT_IROH_RELAYS`, `MESH_IROH_RELAY_CA`), through the same code path as
//! iroh's public relays. Skipped, with the reason printed, only where namespaces cannot be made.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::lab::{block_in_ns, Lab, Nat, Site};
use crate::common::{model_path, MeshProcess};

/// The lab with its relays running, or `None` (the reason printed) where it cannot be built.
fn lab() -> Option<(Lab, Vec<String>)> {
    let built = Lab::new().and_then(|mut lab| lab.start_relays().map(|urls| (lab, urls)));
    match built {
        Ok(lab) => Some(lab),
        Err(why) => {
            // A machine like CI's can make namespaces: only a missing capability skips.
            assert!(
                !why.contains("is not installed") || std::env::var_os("CI").is_none(),
                "CI must run the NAT lab: {why}"
            );
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// A node serving the test model at `site` (in a public or private mesh).
async fn serve(lab: &Lab, site: &Site, relays: &[String], extra: &[&str]) -> MeshProcess {
    let mut cmd = lab.mesh(&site.ns, &format!("a-{}", site.ns), relays);
    cmd.args(["serve", "--model"])
        .arg(model_path())
        .args([
            "--ephemeral",
            "--ctx",
            "512",
            "--parallel",
            "2",
            "--threads",
            "1",
        ])
        .args(["--name", site.nat.label()])
        .args(extra);
    MeshProcess::start_async(cmd).await
}

/// A client at `site` joining `ticket`, its APIs on ports of its own (it may share the site).
async fn client(lab: &Lab, site: &Site, relays: &[String], args: &[&str]) -> MeshProcess {
    let mut cmd = lab.mesh(&site.ns, &format!("b-{}", site.ns), relays);
    cmd.args(["serve", "--client", "--ephemeral", "--port", "9338"])
        .args(["--api-port", "3132", "--name", "b"])
        .args(args);
    MeshProcess::start_async(cmd).await
}

/// In `ns`: waits for a model at `base`, then asks it for a few tokens; the answer's text.
pub(crate) fn first_answer(ns: &str, base: String, within: Duration) -> Result<String, String> {
    block_in_ns(ns, move || async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let deadline = Instant::now() + within;
        let model = loop {
            let models: Option<Value> = match http.get(format!("{base}/v1/models")).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            if let Some(id) = models.as_ref().and_then(|m| m["data"][0]["id"].as_str()) {
                break id.to_owned();
            }
            if Instant::now() > deadline {
                return Err(format!("no model at {base} within {within:?}: {models:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let body = json!({"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hi."}]});
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        match v["choices"][0]["message"]["content"].as_str() {
            Some(text) if status.is_success() => Ok(text.to_owned()),
            _ => Err(format!("{status}: {v}")),
        }
    })
}

/// In `ns`: the connection (`direct` / `relay` / `none`) the node at `api` has to `peer`.
fn connection(ns: &str, api: &str, peer: &str) -> Option<String> {
    let (api, peer) = (api.to_owned(), peer.to_owned());
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
        v["peers"]
            .as_array()?
            .iter()
            .find(|p| p["node_id"] == peer.as_str())
            .and_then(|p| p["connection"].as_str().map(str::to_owned))
    })
}

/// The path the issue expects between two sites: direct where hole punching can work.
fn expected(a: Nat, b: Nat) -> &'static str {
    use Nat::*;
    match (a, b) {
        (Public, _) | (_, Public) => "direct",
        (FullCone, FullCone) | (FullCone, PortRestricted) | (PortRestricted, FullCone) => "direct",
        _ => "relay",
    }
}

/// What one pairing gave.
#[derive(Debug)]
struct Pairing {
    a: Nat,
    b: Nat,
    answer_secs: f64,
    path: String,
}

/// B (at `b`) joins A's mesh with A's ticket, gets an answer from A's model, and is watched
/// until its path to A is the expected one or 10 s have passed since it started.
async fn pair(lab: &Lab, relays: &[String], a: &(Site, MeshProcess), b: &Site) -> Pairing {
    let (a_site, a_proc) = a;
    let ticket = a_proc.value("ticket");
    let a_id = a_proc.value("node id");
    let started = Instant::now();
    let mut b_proc = client(lab, b, relays, &["--join", &ticket]).await;
    let base = b_proc.base();
    let answer = first_answer(&b.ns, base, Duration::from_secs(30));
    let answer_secs = started.elapsed().as_secs_f64();
    if let Err(e) = &answer {
        panic!(
            "{} -> {}: no answer: {e}",
            a_site.nat.label(),
            b.nat.label()
        );
    }
    let want = expected(a_site.nat, b.nat);
    let api = b_proc.api();
    let mut path = String::from("none");
    while started.elapsed() < Duration::from_secs(10) {
        path = connection(&b.ns, &api, &a_id).unwrap_or_else(|| "none".into());
        if want == "direct" && path == "direct" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b_proc.kill();
    Pairing {
        a: a_site.nat,
        b: b.nat,
        answer_secs,
        path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nat_pairing_connects_and_goes_direct_where_hole_punching_can_work() {
    let Some((mut lab, relays)) = lab() else {
        return;
    };
    let kinds = [
        Nat::Public,
        Nat::FullCone,
        Nat::PortRestricted,
        Nat::Symmetric,
    ];
    let mut hosts = Vec::new();
    let mut guests = Vec::new();
    for nat in kinds {
        hosts.push(lab.add_site(nat).unwrap());
        guests.push(lab.add_site(nat).unwrap());
    }
    let mut servers = Vec::new();
    for site in hosts {
        let p = serve(&lab, &site, &relays, &[]).await;
        servers.push((site, p));
    }
    let mut results = Vec::new();
    for (i, a) in servers.iter().enumerate() {
        for b in &guests[i..] {
            let r = pair(&lab, &relays, a, b).await;
            eprintln!(
                "pairing {:>15} <- {:<15} answer after {:.2} s, path {}",
                r.a.label(),
                r.b.label(),
                r.answer_secs,
                r.path
            );
            results.push(r);
        }
    }
    let wrong: Vec<&Pairing> = results
        .iter()
        .filter(|r| r.path != expected(r.a, r.b))
        .collect();
    assert!(wrong.is_empty(), "unexpected paths: {wrong:#?}");
}

/// In `ns`: streams a long answer from `base`; `first` hears of the first token. The chunks'
/// texts and whether the stream ended with `[DONE]` and no error.
fn stream(ns: &str, base: String, first: std::sync::mpsc::Sender<()>) -> (usize, bool, String) {
    block_in_ns(ns, move || async move {
        use futures::StreamExt;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let models: Value = http
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let model = models["data"][0]["id"].as_str().unwrap().to_owned();
        let body = json!({"model": model, "max_tokens": 200, "stream": true,
            "messages": [{"role": "user", "content": "Tell a long story about a lighthouse."}]});
        let resp = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let mut bytes = resp.bytes_stream();
        let mut text = String::new();
        let mut told = false;
        while let Some(chunk) = bytes.next().await {
            let Ok(chunk) = chunk else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
            if !told && text.contains("\"content\"") {
                let _ = first.send(());
                told = true;
            }
        }
        let chunks = text.matches("data: {").count();
        let clean = text.contains("data: [DONE]") && !text.contains("\"error\"");
        (chunks, clean, text)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_relay_does_not_interrupt_a_stream_on_a_direct_path() {
    let Some((mut lab, relays)) = lab() else {
        return;
    };
    let (a_site, b_site) = (
        lab.add_site(Nat::Public).unwrap(),
        lab.add_site(Nat::FullCone).unwrap(),
    );
    let a = serve(&lab, &a_site, &relays, &[]).await;
    let mut b = client(&lab, &b_site, &relays, &["--join", &a.value("ticket")]).await;
    let (base, api, a_id) = (b.base(), b.api(), a.value("node id"));
    first_answer(&b_site.ns, base.clone(), Duration::from_secs(30)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while connection(&b_site.ns, &api, &a_id).as_deref() != Some("direct") {
        assert!(Instant::now() < deadline, "no direct path within 15 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = b_site.ns.clone();
    let streaming = std::thread::spawn(move || stream(&ns, base, tx));
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the stream started");
    lab.stop_relays();
    let (chunks, clean, text) = streaming.join().unwrap();
    assert!(clean && chunks > 10, "stream cut: {chunks} chunks: {text}");
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_flags_gets_a_relay_and_a_public_address_and_tells_no_lan_address() {
    let Some((mut lab, relays)) = lab() else {
        return;
    };
    let site = lab.add_site(Nat::FullCone).unwrap();
    // `--public` and nothing about the network: the relay list is the "default" one.
    let a = serve(&lab, &site, &relays, &["--public"]).await;
    let relay = a.value("iroh relay");
    assert!(relays.iter().any(|r| relay.starts_with(r)), "{relay}");
    let api = a.api();
    let public = format!("{}:", site.public_ip);
    let ns = site.ns.clone();
    let status: Value = block_in_ns(&ns, move || async move {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s: Value = http
                .get(format!("{api}/api/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let told = s["addrs"].as_array().cloned().unwrap_or_default();
            if told
                .iter()
                .any(|a| a.as_str().unwrap_or("").starts_with(&public))
                || Instant::now() > deadline
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let addrs: Vec<&str> = status["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        addrs.iter().any(|a| a.starts_with(&site.public_ip)),
        "the router's public address is told: {status}"
    );
    assert!(
        !addrs
            .iter()
            .any(|a| a.starts_with("198.18.") || a.starts_with("127.")),
        "no LAN address in a public mesh: {status}"
    );
    assert!(status["home_relay"].as_str().is_some(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_published_behind_one_nat_is_joined_by_auto_behind_another() {
    let Some((mut lab, relays)) = lab() else {
        return;
    };
    let relay_ns = lab.ns_name("relay");
    let mut nostr = lab.mesh(&relay_ns, "nostr", &relays);
    nostr.args([
        "relay",
        "--host",
        crate::common::lab::RELAY_IPS[0],
        "--port",
        "7447",
    ]);
    let mut nostr = MeshProcess::spawn(nostr);
    nostr.wait_line("relay ", Duration::from_secs(30)).await;
    let nostr_url = format!("ws://{}:7447", crate::common::lab::RELAY_IPS[0]);
    let (a_site, b_site) = (
        lab.add_site(Nat::FullCone).unwrap(),
        lab.add_site(Nat::PortRestricted).unwrap(),
    );
    let _a = serve(
        &lab,
        &a_site,
        &relays,
        &["--public", "--publish", "--relay", &nostr_url],
    )
    .await;
    let mut cmd = lab.mesh(&b_site.ns, "auto-b", &relays);
    cmd.args(["--auto", "--client", "--ephemeral", "--relay", &nostr_url]);
    let b = MeshProcess::start_async(cmd).await;
    let text = first_answer(&b_site.ns, b.base(), Duration::from_secs(60)).unwrap();
    assert!(!text.is_empty());
}

/// `mesh network --json` run at `ns`, and how long it took.
fn network(lab: &Lab, ns: &str, relays: &[String]) -> (Value, f64) {
    let started = Instant::now();
    let out = lab
        .mesh(ns, "net", relays)
        .args(["network", "--json"])
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_network_tells_public_nat_symmetric_and_offline_apart() {
    let Some((mut lab, relays)) = lab() else {
        return;
    };
    let public = lab.add_site(Nat::Public).unwrap();
    let cone = lab.add_site(Nat::FullCone).unwrap();
    let symmetric = lab.add_site(Nat::Symmetric).unwrap();
    let offline = lab.add_isolated().unwrap();

    let (p, _) = network(&lab, &public.ns, &relays);
    assert_eq!(p["verdict"]["kind"], "direct_from_anyone", "{p}");
    let (c, _) = network(&lab, &cone.ns, &relays);
    assert_eq!(c["verdict"]["kind"], "direct_likely", "{c}");
    assert!(
        c["public_v4"]
            .as_str()
            .unwrap_or("")
            .starts_with(&cone.public_ip),
        "{c}"
    );
    assert_eq!(c["relay_latencies"].as_array().unwrap().len(), 2, "{c}");
    let (s, _) = network(&lab, &symmetric.ns, &relays);
    assert_eq!(s["mapping_varies_by_destination"], true, "{s}");
    assert_eq!(s["verdict"]["kind"], "relay_only", "{s}");
    // No route anywhere: the relays never answer, and it says so in bounded time.
    let (o, took) = network(&lab, &offline, &relays);
    assert_eq!(o["verdict"]["kind"], "offline", "{o}");
    assert!(took < 10.0, "took {took:.1} s");
}
