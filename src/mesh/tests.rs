//! The roster watch and announcing at once when what the node serves changes (two nodes on
//! loopback).

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
