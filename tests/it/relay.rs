//! `mesh relay` as a user runs it, on loopback: offers published with `nostr_io::publish` come
//! back from `nostr_io::fetch_offers`; oversized events and foreign kinds are refused with a clear
//! `OK` message; an author's NIP-09 deletion removes its offer; the per-connection rate limit
//! refuses once exceeded; connections over the limit get 503; `--db` keeps events across
//! restarts; Ctrl-C exits 0. Against hostile clients: a message over the limit closes the
//! session (1009) unread, a filter's `limit` is clamped, a request head or a session that
//! stalls is cut off.

use crate::common::{mesh_command, temp_home, MeshProcess};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tempfile::TempDir;

use futures::{SinkExt, StreamExt};
use mesh::discovery::nostr_io::{self, Query};
use mesh::discovery::offer::{self, OfferContent, OFFER_KIND};
use mesh::mesh::proto::ticket::MeshId;
use nostr::nips::nip01::Coordinate;
use nostr::nips::nip09::EventDeletionRequest;
use nostr::{ClientMessage, Event, EventBuilder, JsonUtil, Keys, Kind, RelayMessage, RelayUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A `mesh relay` process (SIGKILLed when dropped) and the URL from its banner.
struct Relay {
    proc: MeshProcess,
    url: RelayUrl,
    _home: TempDir,
}

/// Starts `mesh relay --port 0 ARGS…` and reads its URL from the banner.
fn relay(args: &[&str]) -> Relay {
    let home = temp_home();
    let mut cmd = mesh_command(home.path());
    cmd.args(["relay", "--port", "0"]).args(args);
    let proc = MeshProcess::start(cmd).unwrap_or_else(|lines| panic!("no banner: {lines:?}"));
    let url = proc
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("relay "))
        .map(|u| RelayUrl::parse(u.trim()).expect("relay URL in the banner"))
        .unwrap_or_else(|| panic!("banner names the relay URL: {:?}", proc.lines));
    Relay {
        proc,
        url,
        _home: home,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn content(name: &str) -> OfferContent {
    OfferContent {
        name: name.into(),
        region: Some("eu-west".into()),
        max_clients: 16,
        ..offer::sample_content("SmolLM2-135M-Instruct-Q4_1")
    }
}

fn offer_event(keys: &Keys, mesh_id: MeshId, name: &str) -> Event {
    let node_key = iroh::SecretKey::generate();
    offer::build_event(keys, &node_key, mesh_id, content(name), now(), 300).expect("signs")
}

async fn publish(url: &RelayUrl, event: &Event) -> Result<(), String> {
    let mut reports = nostr_io::publish(std::slice::from_ref(url), event).await;
    let r = reports.pop().expect("one report");
    match r.error {
        None if r.ok => Ok(()),
        e => Err(e.unwrap_or_default()),
    }
}

async fn fetch(url: &RelayUrl) -> nostr_io::FetchReport {
    let report = nostr_io::fetch_offers(std::slice::from_ref(url), &Query::default(), now()).await;
    assert!(report.relays[0].ok, "fetch failed: {:?}", report.relays);
    report
}

#[tokio::test]
async fn published_offer_is_fetched_back_with_equal_fields() {
    let r = relay(&[]);
    let keys = Keys::generate();
    let mesh_id = MeshId::random();
    let event = offer_event(&keys, mesh_id, "lab mesh");
    publish(&r.url, &event).await.expect("offer accepted");

    let report = fetch(&r.url).await;
    assert_eq!(report.rejected_total(), 0, "{:?}", report.rejected);
    let [got] = report.offers.as_slice() else {
        panic!("expected one offer, got {:?}", report.offers);
    };
    let sent: OfferContent = serde_json::from_str(&event.content).unwrap();
    assert_eq!(got.event_id, event.id.to_hex());
    assert_eq!(got.publisher, keys.public_key());
    assert_eq!(got.mesh_id, mesh_id);
    assert_eq!(got.created_at, event.created_at.as_secs());
    assert_eq!(got.content, sent);
}

#[tokio::test]
async fn oversized_event_is_refused_with_its_size() {
    let r = relay(&["--max-event-bytes", "4096"]);
    let event = offer_event(&Keys::generate(), MeshId::random(), &"x".repeat(5000));
    let err = publish(&r.url, &event).await.unwrap_err();
    assert!(
        err.contains("blocked:") && err.contains("larger than this relay's limit of 4096 bytes"),
        "{err}"
    );
    assert!(fetch(&r.url).await.offers.is_empty());
}

#[tokio::test]
async fn events_of_other_kinds_are_refused() {
    let r = relay(&[]);
    let note = EventBuilder::text_note("hello")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let err = publish(&r.url, &note).await.unwrap_err();
    assert!(err.contains("kind 1 not accepted"), "{err}");
}

#[tokio::test]
async fn deletion_by_the_author_removes_the_offer_and_no_one_else_can() {
    let r = relay(&[]);
    let keys = Keys::generate();
    let mesh_id = MeshId::random();
    let event = offer_event(&keys, mesh_id, "short-lived");
    publish(&r.url, &event).await.expect("offer accepted");
    let deletion = |signer: &Keys| {
        let request = EventDeletionRequest::new().id(event.id).coordinate(
            Coordinate::new(Kind::Custom(OFFER_KIND), keys.public_key())
                .identifier(mesh_id.to_string()),
        );
        EventBuilder::delete(request)
            .sign_with_keys(signer)
            .unwrap()
    };

    let err = publish(&r.url, &deletion(&Keys::generate()))
        .await
        .unwrap_err();
    assert!(
        err.contains("may only name its author's own events"),
        "{err}"
    );
    assert_eq!(fetch(&r.url).await.offers.len(), 1);

    publish(&r.url, &deletion(&keys))
        .await
        .expect("deletion accepted");
    assert!(fetch(&r.url).await.offers.is_empty());
}

#[tokio::test]
async fn rate_limit_refuses_events_once_exceeded_on_one_connection() {
    let r = relay(&["--rate", "2"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(r.url.as_str())
        .await
        .expect("connects");
    let keys = Keys::generate();
    let mut answers = Vec::new();
    for i in 0..3 {
        let event = offer_event(&keys, MeshId::random(), &format!("mesh {i}"));
        let msg = ClientMessage::event(event).as_json();
        ws.send(Message::text(msg)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an OK in time")
            .expect("connection open")
            .unwrap();
        match RelayMessage::from_json(reply.to_text().unwrap()).unwrap() {
            RelayMessage::Ok {
                status, message, ..
            } => answers.push((status, message.into_owned())),
            other => panic!("expected OK, got {other:?}"),
        }
    }
    assert!(answers[0].0 && answers[1].0, "{answers:?}");
    assert!(!answers[2].0, "{answers:?}");
    assert!(answers[2].1.starts_with("rate-limited:"), "{answers:?}");
}

#[tokio::test]
async fn rate_limit_per_ip_holds_across_connections() {
    let r = relay(&["--rate-per-ip", "2"]);
    let keys = Keys::generate();
    for i in 0..2 {
        let event = offer_event(&keys, MeshId::random(), &format!("mesh {i}"));
        publish(&r.url, &event).await.expect("within the quota");
    }
    // `publish` opens a new connection per event: the per-connection limit would not see this.
    let event = offer_event(&keys, MeshId::random(), "mesh 3");
    let err = publish(&r.url, &event).await.unwrap_err();
    assert!(err.contains("too many events from 127.0.0.1"), "{err}");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_answered_503() {
    let r = relay(&["--max-connections", "1"]);
    let (_first, _) = tokio_tungstenite::connect_async(r.url.as_str())
        .await
        .expect("first connection");
    let err = tokio_tungstenite::connect_async(r.url.as_str())
        .await
        .expect_err("second connection refused");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn db_keeps_events_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events");
    let db = db.to_str().unwrap();
    let event = offer_event(&Keys::generate(), MeshId::random(), "persistent");
    {
        let mut r = relay(&["--db", db]);
        publish(&r.url, &event).await.expect("offer accepted");
        interrupt(&mut r);
    }
    let r = relay(&["--db", db]);
    let offers = fetch(&r.url).await.offers;
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(offers[0].event_id, event.id.to_hex());
}

/// Sends SIGINT and asserts a clean exit within 10 s.
fn interrupt(r: &mut Relay) {
    r.proc.signal(libc::SIGINT);
    let status = r
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("relay exits within 10 s of SIGINT");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn ctrl_c_stops_the_relay_with_exit_0() {
    let mut r = relay(&[]);
    interrupt(&mut r);
}

#[tokio::test]
async fn in_process_relay_on_port_0_serves_offers() {
    let running = mesh::relay::start(mesh::relay::RelayOptions {
        port: 0,
        ..Default::default()
    })
    .await
    .expect("relay starts");
    let url = running.url();
    assert_ne!(url.as_str(), "ws://127.0.0.1:0");
    let event = offer_event(&Keys::generate(), MeshId::random(), "in process");
    publish(&url, &event).await.expect("offer accepted");
    assert_eq!(fetch(&url).await.offers.len(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_limit_closes_the_session_with_1009() {
    let r = relay(&["--max-event-bytes", "4096"]);
    let limit = mesh::relay::max_message_bytes(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async(r.url.as_str())
        .await
        .expect("connects");
    let req = format!(r#"["REQ","s",{{"search":"{}"}}]"#, "x".repeat(limit));
    ws.send(Message::text(req)).await.expect("sent");
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer in time");
    match answer {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
        }
        other => panic!("expected a close frame 1009, got {other:?}"),
    }
}

#[tokio::test]
async fn a_filter_limit_above_the_maximum_is_clamped() {
    let r = relay(&["--any-kind", "--rate", "1000", "--rate-per-ip", "1000"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(r.url.as_str())
        .await
        .expect("connects");
    let keys = Keys::generate();
    let stored = mesh::relay::MAX_FILTER_LIMIT + 10;
    for i in 0..stored {
        let note = EventBuilder::text_note(format!("note {i}"))
            .sign_with_keys(&keys)
            .unwrap();
        ws.send(Message::text(ClientMessage::event(note).as_json()))
            .await
            .unwrap();
    }
    let mut accepted = 0;
    while accepted < stored {
        let reply = next_text(&mut ws).await;
        match RelayMessage::from_json(&reply).unwrap() {
            RelayMessage::Ok { status: true, .. } => accepted += 1,
            other => panic!("expected OK true, got {other:?}"),
        }
    }
    let req = r#"["REQ","all",{"kinds":[1],"limit":1000000000}]"#;
    ws.send(Message::text(req)).await.unwrap();
    let mut events = 0;
    loop {
        let reply = next_text(&mut ws).await;
        match RelayMessage::from_json(&reply).unwrap() {
            RelayMessage::Event { .. } => events += 1,
            RelayMessage::EndOfStoredEvents(_) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events, mesh::relay::MAX_FILTER_LIMIT);
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> String {
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message in time")
        .expect("connection open")
        .expect("a message");
    msg.into_text().expect("text").to_string()
}

async fn in_process_relay(opts: mesh::relay::RelayOptions) -> mesh::relay::RunningRelay {
    mesh::relay::start(mesh::relay::RelayOptions { port: 0, ..opts })
        .await
        .expect("relay starts")
}

#[tokio::test]
async fn a_request_head_that_stalls_is_cut_off() {
    let running = in_process_relay(mesh::relay::RelayOptions {
        header_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(running.local_addr())
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    // Read until the relay closes (0 bytes) or resets the connection.
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "connection still open 10 s after a 1 s header timeout"
    );
}

#[tokio::test]
async fn an_idle_session_is_closed() {
    let running = in_process_relay(mesh::relay::RelayOptions {
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(running.url().as_str())
        .await
        .expect("connects");
    let answer = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("closed within 10 s of a 1 s idle timeout");
    match answer {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame 1001, got {other:?}"),
    }
}
