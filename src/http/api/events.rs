//! `GET /api/events`: Server-Sent Events. First a `status` event with the whole status document,
//! then one event per mesh change (`peer_joined`, `peer_left`, `model_added`, `model_removed`),
//! `download` events of the console's downloads (`catalog.rs`), and a keep-alive comment every
//! 15 s. A client too slow to keep up gets a `lagged` event and should re-read `/api/status`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::{self, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::{status_doc, ApiState};

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(state): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the snapshot, so no change falls between the two.
    let rx = state.mesh.as_ref().map(|m| m.subscribe());
    let download_rx = state.downloads.subscribe();
    let snapshot = Event::default()
        .event("status")
        .json_data(status_doc(&state))
        .unwrap_or_default();
    let changes = stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(ev) => {
                let sse = Event::default().event(ev.name()).json_data(&ev);
                Some((sse.unwrap_or_default(), Some(rx)))
            }
            Err(RecvError::Lagged(n)) => Some((lagged(n), Some(rx))),
            Err(RecvError::Closed) => None,
        }
    });
    let downloads = stream::unfold(download_rx, |mut rx| async move {
        match rx.recv().await {
            Ok(ev) => {
                let sse = Event::default().event("download").json_data(&ev);
                Some((sse.unwrap_or_default(), rx))
            }
            Err(RecvError::Lagged(n)) => Some((lagged(n), rx)),
            Err(RecvError::Closed) => None,
        }
    });
    let live = stream::select(changes, downloads);
    let all = stream::once(async { snapshot }).chain(live).map(Ok);
    Sse::new(all).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn lagged(missed: u64) -> Event {
    Event::default()
        .event("lagged")
        .data(format!("{{\"missed\":{missed}}}"))
}
