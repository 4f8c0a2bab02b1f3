//! Two nodes on loopback: the roster watch, announcing at once when what the node serves
//! changes, and closing idle tunnels.

use super::*;

fn config() -> MeshConfig {
    let mut cfg = MeshConfig::new(SecretKey::generate());
    cfg.net = NetConfig::offline();
    cfg.bind = Some((std::net::Ipv4Addr::LOCALHOST, 0).into());
    cfg.name = "test".into();
    cfg
}

/// What a node serves, changeable by the test: the list, and the `ServingFn` reading it.
fn changeable_serving() -> (Arc<Mutex<Vec<ModelOffer>>>, ServingFn) {
    let models: Arc<Mutex<Vec<ModelOffer>>> = Arc::default();
    let read = models.clone();
    let serving: ServingFn = Arc::new(move || Serving {
        models: read.lock().unwrap().clone(),
        ..Serving::default()
    });
    (models, serving)
}

fn model(name: &str) -> ModelOffer {
    ModelOffer {
        name: name.into(),
        free_slots: 1,
        slots: 1,
        ctx: 512,
    }
}

/// Waits (at most 10 s) until `rx` has seen a change past `since`.
async fn bumped(rx: &mut watch::Receiver<u64>, since: u64) {
    let wait = rx.wait_for(|n| *n != since);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_ok_and(|r| r.is_ok()),
        "roster watch did not fire"
    );
}

#[tokio::test]
async fn roster_watch_fires_on_joins_and_on_own_and_peer_models_changing() {
    let (models, serving) = changeable_serving();
    let nothing: ServingFn = Arc::new(Serving::default);
    let a = Mesh::start(config(), serving, axum::Router::new())
        .await
        .unwrap();
    let mut own = a.watch_roster();
    let mut cfg = config();
    cfg.join = vec![a.ticket()];
    let b = Mesh::start(cfg, nothing, axum::Router::new())
        .await
        .unwrap();
    let mut peer = b.watch_roster();
    // B sees A join.
    bumped(&mut peer, 0).await;
    assert_eq!(b.peers().len(), 1);
    let (own_before, peer_before) = (*own.borrow_and_update(), *peer.borrow_and_update());
    // A loads a model after joining: A notices it at its sweep, B from A's announcement.
    models.lock().unwrap().push(model("m"));
    bumped(&mut own, own_before).await;
    bumped(&mut peer, peer_before).await;
    assert_eq!(b.remote_models(), ["m"]);
    // Load alone (free slots) is not a change of the roster.
    let (own_before, peer_before) = (*own.borrow_and_update(), *peer.borrow_and_update());
    models.lock().unwrap()[0].free_slots = 0;
    tokio::time::sleep(a.shared.timers.load_gap * 3).await;
    assert_eq!((*own.borrow(), *peer.borrow()), (own_before, peer_before));
    b.abort().await;
    a.abort().await;
}

#[tokio::test]
async fn serving_changed_announces_at_once_not_at_the_next_heartbeat() {
    let (models, serving) = changeable_serving();
    let mut cfg = config();
    // A sweep far longer than the wait below: only serving_changed can make it in time.
    cfg.timers.sweep = Duration::from_secs(600);
    let a = Mesh::start(cfg, serving, axum::Router::new())
        .await
        .unwrap();
    let mut own = a.watch_roster();
    // The first sweep ticks at start; let it pass, then load a model.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = *own.borrow_and_update();
    models.lock().unwrap().push(model("m"));
    a.serving_changed();
    bumped(&mut own, before).await;
    a.abort().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_but_not_while_a_stream_is_open_and_the_next_request_dials_again()
{
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(move || {
                let (entered_tx, held) = (entered_tx.clone(), held.clone());
                async move {
                    let _ = entered_tx.send(()).await;
                    held.notified().await;
                    "done"
                }
            }),
        )
        .route("/fast", axum::routing::get(|| async { "ok" }));
    let nothing: ServingFn = Arc::new(Serving::default);
    let b = Mesh::start(config(), nothing.clone(), app).await.unwrap();
    let mut cfg = config();
    cfg.join = vec![b.ticket()];
    let a = Mesh::start(cfg, nothing, axum::Router::new())
        .await
        .unwrap();
    let (tunnel, b_id) = (a.shared.tunnel.clone(), b.node_id());
    let get = |path: &str| {
        hyper::Request::get(path)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let body = |resp: hyper::Response<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let (hour, minute) = (Duration::from_secs(3600), Duration::from_secs(60));

    // A request in flight: its stream keeps the tunnel, however long it has been idle.
    let pending = tokio::spawn({
        let (tunnel, req) = (tunnel.clone(), get("/slow"));
        async move { tunnel.request(b_id, req).await }
    });
    tokio::time::timeout(Duration::from_secs(20), entered.recv())
        .await
        .expect("the request reached B");
    assert_eq!(tunnel.close_idle(Instant::now() + hour, minute), 0);
    assert!(tunnel.cached(&b_id).is_some());
    release.notify_one();
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(body(resp).await.as_ref(), b"done");

    // Just used: it stays. Once its stream has ended and it has been idle for long enough, it
    // is closed, and that says nothing of B's health.
    assert_eq!(tunnel.close_idle(Instant::now(), minute), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tunnel.close_idle(Instant::now() + hour, minute) == 0 {
        assert!(Instant::now() < deadline, "the stream never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tunnel.cached(&b_id).is_none());
    assert!(!tunnel
        .take_lost(Instant::now())
        .iter()
        .any(|(id, _)| *id == b_id));

    // The next request dials again.
    let resp = tunnel.request(b_id, get("/fast")).await.unwrap();
    assert_eq!(body(resp).await.as_ref(), b"ok");
    assert!(tunnel.cached(&b_id).is_some());
    a.abort().await;
    b.abort().await;
}
